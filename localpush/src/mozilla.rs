//! Mozilla's WebSocket push protocol, the one Firefox speaks to its push service: enough
//! of it that a real Firefox pointed here (`dom.push.serverURL`) subscribes, receives the
//! pushes sent to its endpoints, decrypts them itself and wakes the site's service worker.
//!
//! Messages (C = Firefox, S = this service), all JSON text frames:
//! - C `hello` (with the uaid it knows, if any) → S `hello` with that same uaid (a new
//!   uaid would make Firefox drop every subscription), then any pushes that waited;
//! - C `register` {channelID, key} → S `register` with the channel's `pushEndpoint`;
//! - C `unregister` {channelID} → S `unregister`; later pushes to it get 410;
//! - S `notification` {channelID, version, data, headers} → C `ack` {updates: [{channelID,
//!   version, code}]}, code 100 = delivered, 101 = could not decrypt;
//! - C `{}` (ping) → S `{}`.
//!
//! [`Browsers::reset`] makes the service forget its browsers, as a push service that lost
//! its data: it closes their sockets and answers their next `hello` with a new uaid, on
//! which Firefox drops its subscriptions and fires `pushsubscriptionchange`.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, MutexGuard},
};

use axum::{
    extract::{
        ws::{Message, WebSocket, WebSocketUpgrade},
        State,
    },
    response::Response,
};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use rand::RngCore;
use serde_json::{json, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};

use crate::service::PushService;

/// The browsers connected (or known and away), by uaid.
#[derive(Default)]
pub(crate) struct Browsers {
    inner: Mutex<Connections>,
}

/// What the service sends down a browser's socket.
enum Outgoing {
    Text(String),
    Close,
}

#[derive(Default)]
struct Connections {
    connected: HashMap<String, UnboundedSender<Outgoing>>,
    /// uaids whose next `hello` gets a new uaid.
    forgotten: HashSet<String>,
    /// Notifications for browsers that are away, sent when they say hello again.
    waiting: HashMap<String, Vec<String>>,
}

impl Browsers {
    fn lock(&self) -> MutexGuard<'_, Connections> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Forwards an encrypted push to the browser `uaid`, now or when it reconnects.
    pub(crate) fn notify(&self, uaid: &str, channel_id: &str, version: &str, body: &[u8]) {
        let notification = json!({
            "messageType": "notification",
            "channelID": channel_id,
            "version": version,
            "data": URL_SAFE_NO_PAD.encode(body),
            "headers": { "encoding": "aes128gcm" },
        })
        .to_string();
        let mut connections = self.lock();
        let sent = connections
            .connected
            .get(uaid)
            .is_some_and(|socket| socket.send(Outgoing::Text(notification.clone())).is_ok());
        if !sent {
            connections
                .waiting
                .entry(uaid.to_owned())
                .or_default()
                .push(notification);
        }
    }

    /// Registers the socket of a browser that said hello with `known` (its uaid, if it
    /// has one); returns its uaid (a new one unless known and not forgotten) and the
    /// notifications that waited for it.
    fn connect(
        &self,
        known: Option<&str>,
        socket: UnboundedSender<Outgoing>,
    ) -> (String, Vec<String>) {
        let mut connections = self.lock();
        let uaid = match known {
            Some(uaid) if !connections.forgotten.remove(uaid) => uaid.to_owned(),
            _ => new_uaid(),
        };
        connections.connected.insert(uaid.clone(), socket);
        let waiting = connections.waiting.remove(&uaid).unwrap_or_default();
        (uaid, waiting)
    }

    /// Forgets every connected browser: closes its socket, and its next hello gets a new
    /// uaid. Returns the uaids forgotten.
    pub(crate) fn reset(&self) -> Vec<String> {
        let mut connections = self.lock();
        let uaids: Vec<String> = connections.connected.keys().cloned().collect();
        for socket in connections.connected.values() {
            let _ = socket.send(Outgoing::Close);
        }
        connections.connected.clear();
        connections.forgotten.extend(uaids.iter().cloned());
        uaids
    }

    fn disconnect(&self, uaid: &str, socket: &UnboundedSender<Outgoing>) {
        let mut connections = self.lock();
        if connections
            .connected
            .get(uaid)
            .is_some_and(|current| current.same_channel(socket))
        {
            connections.connected.remove(uaid);
        }
    }
}

/// `GET /`: Firefox's push connection.
pub(crate) async fn connect(
    State(service): State<Arc<PushService>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    upgrade
        .protocols(["push-notification"])
        .on_upgrade(move |socket| session(service, socket))
}

async fn session(service: Arc<PushService>, mut socket: WebSocket) {
    let (outgoing, mut pending) = unbounded_channel::<Outgoing>();
    let mut uaid = None;
    loop {
        let replies = tokio::select! {
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Text(text))) => answer(&service, &mut uaid, &outgoing, text.as_str()),
                Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                Some(Ok(_)) => Vec::new(),
            },
            Some(outgoing) = pending.recv() => match outgoing {
                Outgoing::Text(notification) => vec![notification],
                Outgoing::Close => break,
            },
        };
        for reply in replies {
            if socket.send(Message::Text(reply.into())).await.is_err() {
                break;
            }
        }
    }
    if let Some(uaid) = uaid {
        service.browsers.disconnect(&uaid, &outgoing);
    }
}

/// The replies to one message from Firefox.
fn answer(
    service: &PushService,
    uaid: &mut Option<String>,
    outgoing: &UnboundedSender<Outgoing>,
    text: &str,
) -> Vec<String> {
    let Ok(message) = serde_json::from_str::<Value>(text) else {
        return Vec::new();
    };
    let channel_id = message["channelID"].as_str().unwrap_or_default().to_owned();
    match message["messageType"].as_str() {
        None if message.as_object().is_some_and(|fields| fields.is_empty()) => vec!["{}".into()],
        Some("hello") => {
            let known = message["uaid"].as_str().filter(|known| !known.is_empty());
            let (id, waiting) = service.browsers.connect(known, outgoing.clone());
            *uaid = Some(id.clone());
            let hello = json!({
                "messageType": "hello", "uaid": id, "status": 200,
                "use_webpush": true, "broadcasts": {},
            });
            std::iter::once(hello.to_string()).chain(waiting).collect()
        }
        Some("register") => {
            let Some(uaid) = uaid.as_deref() else {
                return Vec::new();
            };
            let endpoint = service.add_channel(&channel_id, uaid, message["key"].as_str());
            let status = if endpoint.is_some() { 200 } else { 400 };
            vec![json!({
                "messageType": "register", "channelID": channel_id,
                "status": status, "pushEndpoint": endpoint.unwrap_or_default(),
            })
            .to_string()]
        }
        Some("unregister") => {
            service.expire(&channel_id);
            vec![
                json!({"messageType": "unregister", "channelID": channel_id, "status": 200})
                    .to_string(),
            ]
        }
        Some("ack") => {
            for update in message["updates"].as_array().into_iter().flatten() {
                let (Some(channel), Some(version), Some(code)) = (
                    update["channelID"].as_str(),
                    update["version"].as_str(),
                    update["code"].as_u64(),
                ) else {
                    continue;
                };
                service.record_ack(channel, version, code as u16);
            }
            Vec::new()
        }
        _ => Vec::new(),
    }
}

fn new_uaid() -> String {
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
