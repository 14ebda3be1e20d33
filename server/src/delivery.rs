//! Web Push delivery: every fan-out goes through here. Each recipient's copy is encrypted
//! with that recipient's own keys (aes128gcm, RFC 8291, a fresh key and salt per message),
//! signed with VAPID, and POSTed concurrently over one shared, pooled HTTP client with
//! timeouts and no redirects.
//!
//! Status policy, per push service answer:
//! - any 2xx: delivered;
//! - 404 or 410: the subscription is gone; the member is deleted (unless it subscribed
//!   again meanwhile with another secret);
//! - 413: a bug (payloads are checked against the budget before sending), logged as an error;
//! - 400, 401, 403: our request or our VAPID key is wrong; logged as an error, member kept;
//! - anything else, timeouts and connection errors: logged, member kept.
//!
//! A fan-out never waits on one slow push service before trying the others, and always
//! ends in a [`DeliveryReport`].

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use futures::{stream, StreamExt};
use reqwest::StatusCode;
use tokio_util::task::TaskTracker;
use url::Url;
use web_push::{ContentEncoding, SubscriptionInfo, Urgency, WebPushMessageBuilder};

use app::wire::PushMessage;

use crate::{store::ChatStore, subscription::Subscription, vapid::VapidKeys};

/// Pushes in flight at once per fan-out.
const CONCURRENCY: usize = 64;
/// The longest a push service may take to answer one push.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One status update and the members it goes to.
#[derive(Clone, Debug)]
pub struct Broadcast {
    pub message: PushMessage,
    pub recipients: Vec<Subscription>,
}

/// What one fan-out achieved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeliveryReport {
    pub delivered: usize,
    /// Subscriptions the push service no longer knows; their members were deleted.
    pub gone: usize,
    pub failed: usize,
    pub elapsed: Duration,
}

/// The headers a push carries besides its body.
struct PushOptions {
    ttl_secs: u32,
    urgency: Urgency,
    /// A newer push with the same topic replaces an undelivered older one.
    topic: Option<&'static str>,
}

impl PushOptions {
    fn for_message(message: &PushMessage) -> Self {
        match message {
            // People wait for chat lines; a day-old line is still worth showing.
            PushMessage::ChatMsg(_) => PushOptions {
                ttl_secs: 24 * 3600,
                urgency: Urgency::High,
                topic: None,
            },
            // Only the newest member-list change matters to a browser that was away.
            PushMessage::Subscribe { .. } | PushMessage::Unsubscribe { .. } => PushOptions {
                ttl_secs: 3600,
                urgency: Urgency::Normal,
                topic: Some("members"),
            },
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum BuildError {
    #[error("the stored endpoint is not a URL")]
    Endpoint(#[from] url::ParseError),
    #[error("web-push could not build the message")]
    Message(#[from] web_push::WebPushError),
}

enum Outcome {
    Delivered,
    Gone,
    Failed,
}

/// Sends pushes and cleans up after gone subscriptions. Shared behind an `Arc`.
pub struct Delivery {
    http: reqwest::Client,
    vapid: Arc<VapidKeys>,
    store: Arc<ChatStore>,
    in_flight: TaskTracker,
}

impl Delivery {
    pub fn new(vapid: Arc<VapidKeys>, store: Arc<ChatStore>) -> reqwest::Result<Self> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("pushchat/", env!("CARGO_PKG_VERSION")))
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            // A push service has no reason to redirect; following one could reach anywhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Delivery {
            http,
            vapid,
            store,
            in_flight: TaskTracker::new(),
        })
    }

    /// Starts the fan-out in the background and returns at once.
    pub fn dispatch(self: &Arc<Self>, broadcast: Broadcast) {
        let delivery = Arc::clone(self);
        self.in_flight
            .spawn(async move { delivery.deliver(broadcast).await });
    }

    /// Waits up to `deadline` for every dispatched fan-out to finish.
    pub async fn drain(&self, deadline: Duration) -> bool {
        self.in_flight.close();
        tokio::time::timeout(deadline, self.in_flight.wait())
            .await
            .is_ok()
    }

    /// Pushes `broadcast` to every recipient, deletes members whose subscription is gone,
    /// and reports.
    pub async fn deliver(&self, broadcast: Broadcast) -> DeliveryReport {
        let started = Instant::now();
        let payload = broadcast.message.to_payload();
        let options = PushOptions::for_message(&broadcast.message);
        let outcomes: Vec<(Outcome, Subscription)> = stream::iter(broadcast.recipients)
            .map(|recipient| async {
                let outcome = self.push(&payload, &options, &recipient).await;
                (outcome, recipient)
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;

        let mut report = DeliveryReport::default();
        for (outcome, recipient) in outcomes {
            match outcome {
                Outcome::Delivered => report.delivered += 1,
                Outcome::Failed => report.failed += 1,
                Outcome::Gone => {
                    report.gone += 1;
                    self.forget(&recipient);
                }
            }
        }
        report.elapsed = started.elapsed();
        tracing::info!(
            delivered = report.delivered,
            gone = report.gone,
            failed = report.failed,
            elapsed_ms = report.elapsed.as_millis() as u64,
            "fan-out done"
        );
        report
    }

    async fn push(&self, payload: &[u8], options: &PushOptions, to: &Subscription) -> Outcome {
        let host = || host_of(&to.endpoint);
        let request = match self.build_request(payload, options, to) {
            Ok(request) => request,
            Err(error) => {
                tracing::error!(host = %host(), error = %error, "could not build a push");
                return Outcome::Failed;
            }
        };
        let status = match request.send().await {
            Ok(response) => response.status(),
            Err(error) => {
                tracing::warn!(host = %host(), error = %error, "push not sent");
                return Outcome::Failed;
            }
        };
        match status {
            status if status.is_success() => Outcome::Delivered,
            StatusCode::NOT_FOUND | StatusCode::GONE => Outcome::Gone,
            StatusCode::PAYLOAD_TOO_LARGE => {
                tracing::error!(host = %host(), bytes = payload.len(), "push service refused the payload size: a bug, payloads are checked before sending");
                Outcome::Failed
            }
            StatusCode::BAD_REQUEST | StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                tracing::error!(host = %host(), %status, "push service refused our request: check the VAPID key and subject");
                Outcome::Failed
            }
            status => {
                tracing::warn!(host = %host(), %status, "push service did not accept the push");
                Outcome::Failed
            }
        }
    }

    /// Encrypts `payload` for `to` and builds the RFC 8030 request.
    fn build_request(
        &self,
        payload: &[u8],
        options: &PushOptions,
        to: &Subscription,
    ) -> Result<reqwest::RequestBuilder, BuildError> {
        let endpoint = Url::parse(&to.endpoint)?;
        let info = SubscriptionInfo::new(to.endpoint.as_str(), &to.p256dh, &to.auth);
        let mut message = WebPushMessageBuilder::new(&info);
        message.set_payload(ContentEncoding::Aes128Gcm, payload);
        message.set_ttl(options.ttl_secs);
        message.set_urgency(options.urgency);
        if let Some(topic) = options.topic {
            message.set_topic(topic.to_owned());
        }
        message.set_vapid_signature(self.vapid.signature_for(&endpoint));
        let encrypted = web_push::request_builder::build_request::<Vec<u8>>(message.build()?);

        let mut request = self.http.post(endpoint);
        for (name, value) in encrypted.headers() {
            request = request.header(name.as_str(), value.as_bytes());
        }
        Ok(request.body(encrypted.into_body()))
    }

    fn forget(&self, gone: &Subscription) {
        match self.store.remove_member(&gone.endpoint, &gone.auth) {
            Ok(Some(member)) => tracing::info!(
                name = %member.name,
                host = %host_of(&gone.endpoint),
                "deleted a member whose push subscription is gone"
            ),
            Ok(None) => {}
            Err(error) => tracing::error!(error = %error, "could not delete a gone member"),
        }
    }
}

/// The push service's host, for logs: the endpoint's path identifies the member.
fn host_of(endpoint: &str) -> String {
    Url::parse(endpoint)
        .ok()
        .and_then(|url| url.host_str().map(str::to_owned))
        .unwrap_or_default()
}
