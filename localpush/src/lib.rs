//! The local push service: a small Web Push service that runs on loopback, so pushchat's
//! real delivery path (encryption, VAPID, HTTP) is exercised without the internet.
//!
//! It speaks RFC 8030 to the pushchat server and checks every push the way a strict push
//! service does (see `service`), and Mozilla's WebSocket push protocol to Firefox
//! (`mozilla`), so a real browser subscribes through it and receives real encrypted pushes.
//! It also offers virtual subscribers: the service holds their key pairs and auth secrets,
//! decrypts what they receive (`crypto`, pinned by the RFC 8291 known-answer vector) and
//! keeps it for tests to read through [`LocalPushClient`].
//!
//! Run it as a library with [`LocalPush::start`] or as the `localpush` binary.

pub mod crypto;
mod mozilla;
mod service;
pub mod vapid;

use std::{net::SocketAddr, sync::Arc};

use serde::{Deserialize, Serialize};
use tokio::{net::TcpListener, sync::oneshot};

use app::wire;

pub use service::MAX_BODY_BYTES;

/// Body of `POST /subscribers`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NewSubscriber {
    /// The VAPID public key pushes for this subscriber must be signed with.
    #[serde(rename = "applicationServerKey", default)]
    pub application_server_key: Option<String>,
    /// How this subscriber's push service misbehaves; `None` for a healthy one.
    #[serde(default)]
    pub fault: Option<Fault>,
}

/// A push service misbehaving for one subscriber, for reliability tests. Counts are of
/// pushes to that subscriber; after them it behaves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// 404 to every push.
    NotFound,
    /// 413 to every push.
    TooLarge,
    /// 429 with `Retry-After: retry_after_secs` to the first `times` pushes.
    RateLimited { retry_after_secs: u32, times: u32 },
    /// 500 to the first `times` pushes.
    ServerError { times: u32 },
    /// 500 to every other push, starting with the first: each message, retried, gets
    /// one 500 and then a 201.
    Flaky,
    /// Closes the connection without an answer to the first `times` pushes.
    DropConnection { times: u32 },
    /// Answers every push after `millis`.
    Slow { millis: u64 },
    /// Holds every push until the service has accepted `accepted` pushes in all: a
    /// sender that waits for this push before sending others never gets an answer.
    HangUntilAccepted { accepted: u64 },
    /// 307 to every push, pointing at `location`: a sender must not follow it.
    Redirect { location: String },
    /// Never answers, as a push service that went dark; set it, and clear it, with
    /// [`LocalPushClient::set_fault`].
    Hang,
}

/// A virtual subscriber: its id at the service and the subscription a browser would give.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VirtualSubscription {
    pub id: String,
    pub subscription: wire::PushSubscription,
}

/// One push a subscription received, with its headers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceivedPush {
    pub ttl: u32,
    pub urgency: Option<String>,
    pub topic: Option<String>,
    /// The `sub` claim of the push's VAPID JWT.
    pub vapid_subject: String,
    /// The decrypted plaintext, for a virtual subscriber (a browser decrypts its own).
    pub payload: Option<String>,
    /// The message id the push was forwarded to a browser under.
    pub version: String,
    /// The browser's ack code: 100 decrypted and handled, 101 could not decrypt.
    pub ack: Option<u16>,
}

impl ReceivedPush {
    /// The payload as pushchat's push message, if it is one.
    pub fn message(&self) -> Option<wire::PushMessage> {
        serde_json::from_str(self.payload.as_deref()?).ok()
    }
}

/// Pushes accepted and refused since the service started.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub accepted: u64,
    pub refused: u64,
}

/// A running local push service; stops when dropped.
pub struct LocalPush {
    url: String,
    service: Arc<service::PushService>,
    stop: Option<oneshot::Sender<()>>,
}

impl LocalPush {
    /// Starts the service on `addr` (port 0 picks a free port).
    pub async fn start(addr: SocketAddr) -> std::io::Result<Self> {
        Self::start_sampling(addr, 1).await
    }

    /// Starts a service that decrypts only one in `decrypt_every` pushes to virtual
    /// subscribers (it still checks every push's headers and VAPID), for benchmarks.
    pub async fn start_sampling(addr: SocketAddr, decrypt_every: u64) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let url = format!("http://{}", listener.local_addr()?);
        let service = Arc::new(service::PushService::new(url.clone(), decrypt_every));
        let app = service::router(Arc::clone(&service));
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let serving = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = stopped.await;
            });
            if let Err(error) = serving.await {
                tracing::error!(%error, "local push service stopped");
            }
        });
        Ok(LocalPush {
            url,
            service,
            stop: Some(stop),
        })
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A new virtual subscriber, made in-process (many at once, for benchmarks); the
    /// same as `POST /subscribers`. Fails only on an applicationServerKey that is not
    /// base64url.
    pub fn add_subscriber(&self, request: NewSubscriber) -> Result<VirtualSubscription, String> {
        self.service
            .add_subscriber(request)
            .map_err(|refusal| refusal.reason)
    }

    /// Everything subscriber `id` received so far, oldest first; in-process.
    pub fn received_by(&self, id: &str) -> Vec<ReceivedPush> {
        self.service.received_by(id)
    }

    pub fn client(&self) -> LocalPushClient {
        LocalPushClient::new(&self.url)
    }
}

impl Drop for LocalPush {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A client of a local push service's test API.
#[derive(Clone)]
pub struct LocalPushClient {
    base: String,
    http: reqwest::Client,
}

impl LocalPushClient {
    pub fn new(base: &str) -> Self {
        LocalPushClient {
            base: base.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
        }
    }

    /// A new virtual subscriber.
    pub async fn subscribe(&self, request: &NewSubscriber) -> reqwest::Result<VirtualSubscription> {
        let response = self
            .http
            .post(self.url("subscribers"))
            .json(request)
            .send()
            .await?;
        response.error_for_status()?.json().await
    }

    /// When each push to subscriber `id` arrived (ms since the Unix epoch), refused too.
    pub async fn attempts(&self, id: &str) -> reqwest::Result<Vec<u64>> {
        self.get(&format!("subscribers/{id}/attempts")).await
    }

    /// Everything subscriber `id` received so far, oldest first.
    pub async fn received(&self, id: &str) -> reqwest::Result<Vec<ReceivedPush>> {
        self.get(&format!("subscribers/{id}/messages")).await
    }

    /// Makes subscriber `id`'s push service misbehave from now on, or behave with `None`.
    pub async fn set_fault(&self, id: &str, fault: Option<Fault>) -> reqwest::Result<()> {
        let url = self.url(&format!("subscribers/{id}/fault"));
        Self::command(self.http.put(url).json(&fault)).await
    }

    /// Forgets every connected browser: Firefox drops its subscriptions and fires
    /// `pushsubscriptionchange`; their old endpoints answer 410.
    pub async fn reset_browsers(&self) -> reqwest::Result<()> {
        Self::command(self.http.post(self.url("browsers/reset"))).await
    }

    /// Expires subscriber `id`: later pushes to it get 410.
    pub async fn expire(&self, id: &str) -> reqwest::Result<()> {
        Self::command(self.http.delete(self.url(&format!("subscribers/{id}")))).await
    }

    pub async fn stats(&self) -> reqwest::Result<Stats> {
        self.get("stats").await
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> reqwest::Result<T> {
        let response = self.http.get(self.url(path)).send().await?;
        response.error_for_status()?.json().await
    }

    /// Sends a request whose answer says nothing but its status.
    async fn command(request: reqwest::RequestBuilder) -> reqwest::Result<()> {
        request.send().await?.error_for_status().map(drop)
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.base)
    }
}
