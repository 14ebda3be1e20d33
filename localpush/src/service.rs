//! The push service itself: an axum app that keeps subscriptions and receives RFC 8030
//! pushes for them. A subscription's receiver is either virtual (the service holds its
//! keys and decrypts what arrives) or a browser's channel (the push is forwarded over the
//! browser's WebSocket, see `mozilla`, and the browser's ack is recorded).
//!
//! Routes:
//! - `GET /` with a WebSocket upgrade: Firefox's push connection (`dom.push.serverURL`).
//! - `POST /subscribers` (optional JSON `{"applicationServerKey": "...", "fault": {...}}`,
//!   see [`Fault`]): a new virtual subscriber; answers `{"id", "subscription": {"endpoint", "keys": {"p256dh", "auth"}}}`.
//! - `POST /push/{id}`: a push. Checked like a strict push service: TTL present,
//!   `Content-Encoding: aes128gcm`, at most 3070 bytes, valid VAPID for this origin (and
//!   the subscription's key, when it was given one). 201 with a Location; 404 unknown
//!   subscription; 410 expired or unregistered.
//! - `GET /subscribers/{id}/attempts`: when each push arrived (ms since the epoch).
//! - `GET /subscribers/{id}/messages`: what the subscription received (decrypted for
//!   virtual subscribers, with the browser's ack code for channels).
//! - `DELETE /subscribers/{id}`: expires the subscription (later pushes get 410).
//! - `PUT /subscribers/{id}/fault` (a [`Fault`] or `null`): changes how it misbehaves.
//! - `GET /stats`: pushes accepted and refused so far, and how many came over HTTP/2.
//! - `POST /browsers/reset`: forgets the connected browsers, as a push service that lost
//!   its data (see `mozilla`); their channels are expired.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    body::Bytes,
    extract::{Path, State},
    http::{header, HeaderMap, StatusCode, Version},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use p256::SecretKey;
use rand::RngCore;
use tokio::sync::watch;

use app::wire;

use crate::{
    crypto::SubscriberKeys,
    mozilla,
    vapid::{self, VapidIdentity},
    Fault, NewSubscriber, ReceivedPush, Stats, VirtualSubscription,
};

/// The largest encrypted body this service accepts: Mozilla's autopush (Firefox for
/// Android's push service) refuses more with a 413, the smallest limit of the services
/// browsers use (RFC 8030 §7.2 only asks for 4096), so a push that would not reach every
/// browser fails here too.
pub const MAX_BODY_BYTES: usize = app::budget::PUSH_BODY_LIMIT;

/// Who gets a subscription's pushes.
enum Receiver {
    /// Keys held here: pushes are decrypted and recorded.
    Virtual(SubscriberKeys),
    /// A browser's channel: pushes are forwarded to the browser with this uaid.
    Browser { uaid: String },
}

struct Subscriber {
    receiver: Receiver,
    /// The applicationServerKey the subscription was made with, if any.
    server_key: Option<Vec<u8>>,
    fault: Option<Fault>,
    expired: bool,
    /// When each push arrived, in milliseconds since the Unix epoch, refused ones included.
    attempts: Vec<u64>,
    received: Vec<ReceivedPush>,
}

impl Subscriber {
    fn new(receiver: Receiver, server_key: Option<Vec<u8>>, fault: Option<Fault>) -> Self {
        Subscriber {
            receiver,
            server_key,
            fault,
            expired: false,
            attempts: Vec::new(),
            received: Vec::new(),
        }
    }
}

/// What a faulty subscriber's push service does with one push before (or instead of)
/// taking it.
enum Misbehaviour {
    Answer {
        status: StatusCode,
        retry_after_secs: Option<u32>,
    },
    DropConnection,
    Redirect(String),
    Hang,
    Wait(Duration),
    WaitForAccepted(u64),
}

pub(crate) struct PushService {
    /// `http://127.0.0.1:PORT` (`https` over TLS): the origin of every endpoint, and so
    /// the VAPID `aud`.
    origin: String,
    subscribers: Mutex<HashMap<String, Subscriber>>,
    /// Pushes accepted so far; watched by pushes held until a count is reached.
    accepted: watch::Sender<u64>,
    refused: AtomicU64,
    /// Accepted pushes that came over HTTP/2.
    accepted_http2: AtomicU64,
    /// Virtual subscribers' pushes are decrypted one in this many (1: all), so a
    /// benchmark's receiver does not eat the CPU being measured.
    decrypt_every: u64,
    /// VAPID headers already verified: senders reuse one JWT for many pushes.
    verified: Mutex<HashMap<String, VapidIdentity>>,
    pub(crate) browsers: mozilla::Browsers,
}

/// A push the service will not take, and why.
pub(crate) struct Refusal {
    status: StatusCode,
    pub(crate) reason: String,
}

impl Refusal {
    fn new(status: StatusCode, reason: impl ToString) -> Self {
        Refusal {
            status,
            reason: reason.to_string(),
        }
    }
}

impl PushService {
    pub(crate) fn new(origin: String, decrypt_every: u64) -> Self {
        PushService {
            origin,
            subscribers: Mutex::new(HashMap::new()),
            accepted: watch::Sender::new(0),
            refused: AtomicU64::new(0),
            accepted_http2: AtomicU64::new(0),
            decrypt_every: decrypt_every.max(1),
            verified: Mutex::new(HashMap::new()),
            browsers: mozilla::Browsers::default(),
        }
    }

    fn subscribers(&self) -> MutexGuard<'_, HashMap<String, Subscriber>> {
        self.subscribers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn stats(&self) -> Stats {
        Stats {
            accepted: *self.accepted.borrow(),
            refused: self.refused.load(Ordering::Relaxed),
            accepted_http2: self.accepted_http2.load(Ordering::Relaxed),
        }
    }

    /// Verifies a VAPID header, once per distinct header while its JWT is valid.
    fn verify_vapid(&self, authorization: &str) -> Result<VapidIdentity, vapid::VapidError> {
        let now = unix_now();
        let mut verified = self
            .verified
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(identity) = verified
            .get(authorization)
            .filter(|known| known.expires > now)
        {
            return Ok(identity.clone());
        }
        let identity = vapid::verify(authorization, &self.origin, now)?;
        verified.insert(authorization.to_owned(), identity.clone());
        Ok(identity)
    }

    pub(crate) fn add_subscriber(
        &self,
        request: NewSubscriber,
    ) -> Result<VirtualSubscription, Refusal> {
        let server_key = request
            .application_server_key
            .map(|key| URL_SAFE_NO_PAD.decode(key.trim_end_matches('=')))
            .transpose()
            .map_err(|_| {
                Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "applicationServerKey is not base64url",
                )
            })?;
        let mut rng = rand::thread_rng();
        let mut auth = [0u8; 16];
        rng.fill_bytes(&mut auth);
        let keys = SubscriberKeys {
            secret: SecretKey::random(&mut rng),
            auth,
        };
        Ok(self.add_virtual(keys, server_key, request.fault))
    }

    /// A virtual subscriber with `keys`: its pushes are decrypted with them.
    pub(crate) fn add_virtual(
        &self,
        keys: SubscriberKeys,
        server_key: Option<Vec<u8>>,
        fault: Option<Fault>,
    ) -> VirtualSubscription {
        let mut id = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut id);
        let id: String = id.iter().map(|byte| format!("{byte:02x}")).collect();
        let subscription = wire::PushSubscription {
            endpoint: format!("{}/push/{id}", self.origin),
            keys: wire::SubscriptionKeys {
                p256dh: URL_SAFE_NO_PAD.encode(keys.public_key()),
                auth: URL_SAFE_NO_PAD.encode(keys.auth),
            },
        };
        let subscriber = Subscriber::new(Receiver::Virtual(keys), server_key, fault);
        self.subscribers().insert(id.clone(), subscriber);
        VirtualSubscription { id, subscription }
    }

    pub(crate) fn received_by(&self, id: &str) -> Vec<ReceivedPush> {
        self.subscribers()
            .get(id)
            .map(|subscriber| subscriber.received.clone())
            .unwrap_or_default()
    }

    /// A browser's channel (Firefox's `register`); returns its push endpoint, or `None`
    /// when the key is not base64url.
    pub(crate) fn add_channel(
        &self,
        channel_id: &str,
        uaid: &str,
        key: Option<&str>,
    ) -> Option<String> {
        let server_key = match key {
            Some(key) => Some(URL_SAFE_NO_PAD.decode(key.trim_end_matches('=')).ok()?),
            None => None,
        };
        let receiver = Receiver::Browser {
            uaid: uaid.to_owned(),
        };
        let subscriber = Subscriber::new(receiver, server_key, None);
        self.subscribers().insert(channel_id.to_owned(), subscriber);
        Some(format!("{}/push/{channel_id}", self.origin))
    }

    /// Changes how a subscriber's push service behaves. False if there is no such subscriber.
    fn set_fault(&self, id: &str, fault: Option<Fault>) -> bool {
        self.change(id, |subscriber| subscriber.fault = fault)
    }

    /// Forgets every connected browser (see `mozilla`) and expires their channels.
    fn reset_browsers(&self) {
        let forgotten = self.browsers.reset();
        for subscriber in self.subscribers().values_mut() {
            if matches!(&subscriber.receiver, Receiver::Browser { uaid } if forgotten.contains(uaid))
            {
                subscriber.expired = true;
            }
        }
    }

    /// Expires a subscription: later pushes to it get 410. False if there is none.
    pub(crate) fn expire(&self, id: &str) -> bool {
        self.change(id, |subscriber| subscriber.expired = true)
    }

    /// Applies `change` to subscriber `id`. False if there is none.
    fn change(&self, id: &str, change: impl FnOnce(&mut Subscriber)) -> bool {
        self.subscribers().get_mut(id).map(change).is_some()
    }

    /// A browser's ack for the push `version` on `channel_id`.
    pub(crate) fn record_ack(&self, channel_id: &str, version: &str, code: u16) {
        if let Some(subscriber) = self.subscribers().get_mut(channel_id) {
            if let Some(push) = subscriber
                .received
                .iter_mut()
                .find(|push| push.version == version)
            {
                push.ack = Some(code);
            }
        }
    }

    /// Notes a push's arrival and says how a faulty subscriber's service treats it.
    fn misbehave(&self, id: &str) -> Option<Misbehaviour> {
        let mut subscribers = self.subscribers();
        let subscriber = subscribers.get_mut(id)?;
        subscriber.attempts.push(unix_millis());
        let earlier = subscriber.attempts.len() as u32 - 1;
        let answer = |status, retry_after_secs| Misbehaviour::Answer {
            status,
            retry_after_secs,
        };
        match subscriber.fault.clone()? {
            Fault::NotFound => Some(answer(StatusCode::NOT_FOUND, None)),
            Fault::TooLarge => Some(answer(StatusCode::PAYLOAD_TOO_LARGE, None)),
            Fault::RateLimited {
                retry_after_secs,
                times,
            } => (earlier < times)
                .then(|| answer(StatusCode::TOO_MANY_REQUESTS, Some(retry_after_secs))),
            Fault::ServerError { times } => {
                (earlier < times).then(|| answer(StatusCode::INTERNAL_SERVER_ERROR, None))
            }
            Fault::Flaky => {
                (earlier % 2 == 0).then(|| answer(StatusCode::INTERNAL_SERVER_ERROR, None))
            }
            Fault::DropConnection { times } => {
                (earlier < times).then_some(Misbehaviour::DropConnection)
            }
            Fault::Slow { millis } => Some(Misbehaviour::Wait(Duration::from_millis(millis))),
            Fault::HangUntilAccepted { accepted } => Some(Misbehaviour::WaitForAccepted(accepted)),
            Fault::Redirect { location } => Some(Misbehaviour::Redirect(location)),
            Fault::Hang => Some(Misbehaviour::Hang),
        }
    }

    /// Checks and records one push, which came over `version`; returns its message number.
    fn accept(
        &self,
        id: &str,
        version: Version,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<u64, Refusal> {
        let mut subscribers = self.subscribers();
        let subscriber = subscribers
            .get_mut(id)
            .ok_or_else(|| Refusal::new(StatusCode::NOT_FOUND, "no such subscription"))?;
        if subscriber.expired {
            return Err(Refusal::new(StatusCode::GONE, "subscription expired"));
        }
        let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
        let ttl = headers
            .get("ttl")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u32>().ok())
            .ok_or_else(|| {
                Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "TTL header missing or not a number",
                )
            })?;
        if !text(header::CONTENT_ENCODING).is_some_and(|v| v.eq_ignore_ascii_case("aes128gcm")) {
            return Err(Refusal::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Content-Encoding must be aes128gcm",
            ));
        }
        if body.len() > MAX_BODY_BYTES {
            return Err(Refusal::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "body of {} bytes, over the {MAX_BODY_BYTES} a push may carry",
                    body.len()
                ),
            ));
        }
        let authorization = text(header::AUTHORIZATION).unwrap_or_default();
        let identity = self
            .verify_vapid(authorization)
            .map_err(|error| Refusal::new(StatusCode::UNAUTHORIZED, error))?;

        if subscriber
            .server_key
            .as_ref()
            .is_some_and(|key| *key != identity.key)
        {
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                "VAPID key differs from the subscription's",
            ));
        }
        let sampled = (*self.accepted.borrow() + 1) % self.decrypt_every == 0;
        let payload = match &subscriber.receiver {
            Receiver::Virtual(_) if !sampled => None,
            Receiver::Virtual(keys) => {
                let plaintext = keys.decrypt(body).map_err(|error| {
                    Refusal::new(
                        StatusCode::BAD_REQUEST,
                        format!("payload does not decrypt: {error}"),
                    )
                })?;
                Some(String::from_utf8_lossy(&plaintext).into_owned())
            }
            Receiver::Browser { .. } => None,
        };
        let mut number = 0;
        self.accepted.send_modify(|accepted| {
            *accepted += 1;
            number = *accepted;
        });
        if version == Version::HTTP_2 {
            self.accepted_http2.fetch_add(1, Ordering::Relaxed);
        }
        let message = format!("m{number}");
        if let Receiver::Browser { uaid } = &subscriber.receiver {
            self.browsers.notify(uaid, id, &message, body);
        }
        subscriber.received.push(ReceivedPush {
            ttl,
            urgency: text(header::HeaderName::from_static("urgency")).map(str::to_owned),
            topic: text(header::HeaderName::from_static("topic")).map(str::to_owned),
            vapid_subject: identity.subject,
            payload,
            body_len: body.len(),
            version: message,
            ack: None,
            http_version: format!("{version:?}"),
        });
        Ok(number)
    }
}

pub(crate) fn router(service: Arc<PushService>) -> Router {
    Router::new()
        .route("/", get(mozilla::connect))
        .route("/subscribers", post(add_subscriber))
        .route("/subscribers/{id}", axum::routing::delete(expire))
        .route("/subscribers/{id}/messages", get(messages))
        .route("/subscribers/{id}/attempts", get(attempts))
        .route("/subscribers/{id}/fault", axum::routing::put(set_fault))
        .route("/push/{id}", post(receive))
        .route("/stats", get(stats))
        .route(
            "/browsers/reset",
            post(|State(service): State<Arc<PushService>>| async move {
                service.reset_browsers();
                StatusCode::NO_CONTENT
            }),
        )
        .with_state(service)
}

async fn add_subscriber(State(service): State<Arc<PushService>>, body: Bytes) -> Response {
    let request = if body.is_empty() {
        Ok(NewSubscriber::default())
    } else {
        serde_json::from_slice(&body).map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, e))
    };
    match request.and_then(|request| service.add_subscriber(request)) {
        Ok(created) => (StatusCode::CREATED, Json(created)).into_response(),
        Err(refusal) => (refusal.status, refusal.reason).into_response(),
    }
}

async fn receive(
    State(service): State<Arc<PushService>>,
    Path(id): Path<String>,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match service.misbehave(&id) {
        None => {}
        Some(Misbehaviour::Answer {
            status,
            retry_after_secs,
        }) => {
            service.refused.fetch_add(1, Ordering::Relaxed);
            let retry_after =
                retry_after_secs.map(|secs| [(header::RETRY_AFTER, secs.to_string())]);
            return (status, retry_after, "fault injected by the test").into_response();
        }
        Some(Misbehaviour::Redirect(location)) => {
            service.refused.fetch_add(1, Ordering::Relaxed);
            let location = [(header::LOCATION, location)];
            return (StatusCode::TEMPORARY_REDIRECT, location).into_response();
        }
        Some(Misbehaviour::DropConnection) => {
            service.refused.fetch_add(1, Ordering::Relaxed);
            // Unwinding the connection's task closes the socket without an answer;
            // resume_unwind skips the panic hook, so nothing is printed.
            std::panic::resume_unwind(Box::new("fault: drop the connection"));
        }
        Some(Misbehaviour::Wait(delay)) => tokio::time::sleep(delay).await,
        Some(Misbehaviour::Hang) => std::future::pending::<()>().await,
        Some(Misbehaviour::WaitForAccepted(count)) => {
            let mut accepted = service.accepted.subscribe();
            let _ = accepted.wait_for(|accepted| *accepted >= count).await;
        }
    }
    match service.accept(&id, version, &headers, &body) {
        Ok(number) => (
            StatusCode::CREATED,
            [(header::LOCATION, format!("/messages/{number}"))],
        )
            .into_response(),
        Err(refusal) => {
            service.refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(status = %refusal.status, reason = %refusal.reason, "refused a push");
            (refusal.status, refusal.reason).into_response()
        }
    }
}

async fn messages(State(service): State<Arc<PushService>>, Path(id): Path<String>) -> Response {
    if service.subscribers().contains_key(&id) {
        Json(service.received_by(&id)).into_response()
    } else {
        (StatusCode::NOT_FOUND, "no such subscription").into_response()
    }
}

async fn expire(State(service): State<Arc<PushService>>, Path(id): Path<String>) -> StatusCode {
    changed(service.expire(&id))
}

/// The answer to a change of one subscriber.
fn changed(found: bool) -> StatusCode {
    if found {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    }
}

async fn set_fault(
    State(service): State<Arc<PushService>>,
    Path(id): Path<String>,
    Json(fault): Json<Option<Fault>>,
) -> StatusCode {
    changed(service.set_fault(&id, fault))
}

async fn attempts(State(service): State<Arc<PushService>>, Path(id): Path<String>) -> Response {
    match service.subscribers().get(&id) {
        Some(subscriber) => Json(subscriber.attempts.clone()).into_response(),
        None => (StatusCode::NOT_FOUND, "no such subscription").into_response(),
    }
}

async fn stats(State(service): State<Arc<PushService>>) -> Json<Stats> {
    Json(service.stats())
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}
