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
//! It answers HTTP/1.1 in the clear ([`Transport::Http1Plain`], what Firefox's WebSocket
//! tests use) or, as FCM, Mozilla and Apple do, over TLS with HTTP/2 and HTTP/1.1 offered
//! by ALPN ([`Transport::Http2Tls`], `tls`), with a certificate made at start that a client
//! trusts through [`LocalPush::certificate`]. The routes are the same for both.
//!
//! Run it as a library with [`LocalPush::start`] or [`LocalPush::start_with`], or as the
//! `localpush` binary.

pub mod crypto;
mod mozilla;
mod service;
mod tls;
pub mod vapid;

use std::{net::SocketAddr, sync::Arc};

use serde::{Deserialize, Serialize};
use tokio::{net::TcpListener, sync::oneshot};

use tls::{SelfSigned, TlsListener};

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
    /// The size of the encrypted body, as the push service saw it.
    pub body_len: usize,
    /// The message id the push was forwarded to a browser under.
    pub version: String,
    /// The browser's ack code: 100 decrypted and handled, 101 could not decrypt.
    pub ack: Option<u16>,
    /// The HTTP version the push came in on: `HTTP/1.1` or `HTTP/2.0`.
    pub http_version: String,
}

impl ReceivedPush {
    /// The payload as pushchat's push message, if it is one.
    pub fn message(&self) -> Option<wire::PushMessage> {
        wire::PushMessage::from_payload(self.payload.as_deref()?)
    }
}

/// Pushes accepted and refused since the service started.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub accepted: u64,
    pub refused: u64,
    /// Of the accepted pushes, those that came in over HTTP/2.
    pub accepted_http2: u64,
}

/// How the service answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// HTTP/1.1 without TLS, on `http://127.0.0.1:PORT`.
    Http1Plain,
    /// TLS with a certificate made at start, HTTP/2 (or HTTP/1.1, for a client that asks
    /// for it over ALPN) on `https://127.0.0.1:PORT`, as real push services answer.
    Http2Tls,
}

/// A running local push service; stops when dropped.
pub struct LocalPush {
    url: String,
    service: Arc<service::PushService>,
    /// The certificate made at start, DER; `None` in the clear.
    certificate: Option<Vec<u8>>,
    /// A client of the test API that trusts the certificate.
    http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
}

impl LocalPush {
    /// Starts the service in the clear on `addr` (port 0 picks a free port).
    pub async fn start(addr: SocketAddr) -> std::io::Result<Self> {
        Self::start_with(addr, Transport::Http1Plain, 1).await
    }

    /// Starts a service in the clear that decrypts only one in `decrypt_every` pushes to
    /// virtual subscribers (it still checks every push's headers and VAPID), for benchmarks.
    pub async fn start_sampling(addr: SocketAddr, decrypt_every: u64) -> std::io::Result<Self> {
        Self::start_with(addr, Transport::Http1Plain, decrypt_every).await
    }

    /// Starts the service on `addr` over `transport`, decrypting one in `decrypt_every`
    /// pushes to virtual subscribers (1: all).
    pub async fn start_with(
        addr: SocketAddr,
        transport: Transport,
        decrypt_every: u64,
    ) -> std::io::Result<Self> {
        let tcp = TcpListener::bind(addr).await?;
        let local = tcp.local_addr()?;
        match transport {
            Transport::Http1Plain => {
                Self::serve(tcp, format!("http://{local}"), None, decrypt_every)
            }
            Transport::Http2Tls => {
                let made = SelfSigned::generate()?;
                let listener = TlsListener::new(tcp, made.config);
                let url = format!("https://{local}");
                Self::serve(listener, url, Some(made.der), decrypt_every)
            }
        }
    }

    /// Serves the routes on `listener`, whose streams are reached at `url`.
    fn serve<L>(
        listener: L,
        url: String,
        certificate: Option<Vec<u8>>,
        decrypt_every: u64,
    ) -> std::io::Result<Self>
    where
        L: axum::serve::Listener<Addr = SocketAddr>,
    {
        let mut http = reqwest::Client::builder();
        if let Some(der) = &certificate {
            let root = reqwest::Certificate::from_der(der).map_err(std::io::Error::other)?;
            http = http.add_root_certificate(root);
        }
        let http = http.build().map_err(std::io::Error::other)?;
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
            certificate,
            http,
            stop: Some(stop),
        })
    }

    /// The certificate the service presents over TLS, DER (`None` in the clear): a
    /// client trusts it as a root, e.g. with `reqwest::Certificate::from_der`.
    pub fn certificate(&self) -> Option<&[u8]> {
        self.certificate.as_deref()
    }

    /// `http://127.0.0.1:PORT`, or `https://127.0.0.1:PORT` over TLS.
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

    /// A client of this service's test API (trusting its certificate, over TLS).
    pub fn client(&self) -> LocalPushClient {
        LocalPushClient {
            base: self.url.clone(),
            http: self.http.clone(),
        }
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

#[cfg(test)]
mod tests {
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
    use reqwest::{StatusCode, Version};

    use super::*;
    use crate::{
        crypto::{rfc8291_example, tests::rfc8291_receiver},
        vapid::tests::{claims, header_for, key},
    };

    async fn over_tls() -> LocalPush {
        LocalPush::start_with("127.0.0.1:0".parse().unwrap(), Transport::Http2Tls, 1)
            .await
            .unwrap()
    }

    /// A client of `push` that trusts its certificate; `http1` asks for HTTP/1.1 only.
    fn trusting(push: &LocalPush, http1: bool) -> reqwest::Client {
        let root = reqwest::Certificate::from_der(push.certificate().unwrap()).unwrap();
        let builder = reqwest::Client::builder().add_root_certificate(root);
        let builder = if http1 { builder.http1_only() } else { builder };
        builder.build().unwrap()
    }

    /// RFC 8291's example push, to a subscriber holding the example's receiver keys,
    /// signed for `push`'s origin: the subscriber's id, the answer's status and the HTTP
    /// version it came over.
    async fn send_example(
        push: &LocalPush,
        client: &reqwest::Client,
    ) -> (String, StatusCode, Version) {
        let body = URL_SAFE_NO_PAD.decode(rfc8291_example::BODY).unwrap();
        send_body(push, client, body).await
    }

    /// `body` as a push to a subscriber holding RFC 8291's example receiver keys.
    async fn send_body(
        push: &LocalPush,
        client: &reqwest::Client,
        body: Vec<u8>,
    ) -> (String, StatusCode, Version) {
        let subscriber = push.service.add_virtual(rfc8291_receiver(), None, None);
        let exp = unix_now() + 3600;
        let vapid = header_for(
            claims(push.url(), exp, "mailto:ops@example.org"),
            &key(1),
            &key(1),
        );
        let answer = client
            .post(&subscriber.subscription.endpoint)
            .header("ttl", "60")
            .header("content-encoding", "aes128gcm")
            .header("authorization", vapid)
            .body(body)
            .send()
            .await
            .unwrap();
        (subscriber.id, answer.status(), answer.version())
    }

    fn unix_now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[tokio::test]
    async fn test_a_push_over_tls_and_http2_to_a_virtual_subscriber_decrypts() {
        let push = over_tls().await;
        assert!(push.url().starts_with("https://127.0.0.1:"));
        let (id, status, version) = send_example(&push, &trusting(&push, false)).await;
        assert_eq!((status, version), (StatusCode::CREATED, Version::HTTP_2));
        let received = push.received_by(&id);
        assert_eq!(received.len(), 1);
        assert_eq!(
            received[0].payload.as_deref(),
            Some(rfc8291_example::PLAINTEXT)
        );
        assert_eq!(received[0].http_version, "HTTP/2.0");
        let stats = push.client().stats().await.unwrap();
        assert_eq!((stats.accepted, stats.accepted_http2), (1, 1));
    }

    #[tokio::test]
    async fn test_an_http1_client_over_tls_is_answered_too() {
        let push = over_tls().await;
        let (id, status, version) = send_example(&push, &trusting(&push, true)).await;
        assert_eq!((status, version), (StatusCode::CREATED, Version::HTTP_11));
        let received = push.received_by(&id);
        assert_eq!(
            received[0].payload.as_deref(),
            Some(rfc8291_example::PLAINTEXT)
        );
        assert_eq!(received[0].http_version, "HTTP/1.1");
        assert_eq!(push.client().stats().await.unwrap().accepted_http2, 0);
    }

    #[tokio::test]
    async fn test_a_client_that_does_not_trust_the_certificate_cannot_connect() {
        let push = over_tls().await;
        let stranger = reqwest::Client::new();
        let refused = stranger.get(format!("{}/stats", push.url())).send().await;
        assert!(refused.is_err_and(|error| error.is_connect()));
    }

    #[tokio::test]
    async fn test_a_body_over_3070_bytes_is_refused_as_too_large_as_autopush_does() {
        let push = LocalPush::start("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let client = reqwest::Client::new();
        let (_, status, _) = send_body(&push, &client, vec![7; MAX_BODY_BYTES + 1]).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        // One byte less passes the size check (and fails only to decrypt, being noise).
        let (_, status, _) = send_body(&push, &client, vec![7; MAX_BODY_BYTES]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(MAX_BODY_BYTES, 3070);
    }

    #[tokio::test]
    async fn test_the_plain_transport_answers_http1_in_the_clear() {
        let push = LocalPush::start("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        assert!(push.url().starts_with("http://127.0.0.1:"));
        assert!(push.certificate().is_none());
        let (id, status, _) = send_example(&push, &reqwest::Client::new()).await;
        assert_eq!(status, StatusCode::CREATED);
        let received = push.received_by(&id);
        assert_eq!(received[0].http_version, "HTTP/1.1");
        let body_len = URL_SAFE_NO_PAD.decode(rfc8291_example::BODY).unwrap().len();
        assert_eq!(received[0].body_len, body_len);
    }
}
