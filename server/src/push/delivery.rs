//! Web Push delivery: every fan-out goes through here. Each recipient's copy is encrypted
//! with that recipient's own keys (aes128gcm, RFC 8291, a fresh key and salt per message),
//! signed with VAPID (one JWT per push-service origin, see `vapid`), and POSTed over one
//! shared HTTP client that reuses connections per push service (HTTP/2 where the service
//! offers it), with timeouts and no redirects.
//!
//! Status policy, per push service answer:
//! - any 2xx: delivered;
//! - 404 or 410: the subscription is gone; each fan-out batch's gone subscriptions are
//!   sent, as one event, to whoever holds the [`GoneSubscriptions`] receiver (the chat's
//!   rules, which end those memberships: delivery deletes nothing itself);
//! - 429, 5xx, timeouts and connection errors: retried, at most `max_retries` times, after
//!   the service's `Retry-After` when it gives one (capped at `max_backoff`), else after a
//!   jittered exponential backoff; then failed;
//! - 413: a bug (payloads are checked against the budget before sending): logged as an
//!   error, not retried;
//! - 400, 401, 403: our request or our VAPID key is wrong: logged as an error, member kept;
//! - anything else: failed and logged, member kept.
//!
//! Fan-outs wait in the store (see `store`): [`Delivery::start`] takes them, at most
//! `max_fan_outs` at once, and gives each back as done once every recipient's push service
//! answered. One that is not done when its server stops is taken again (on PostgreSQL at
//! once, by another instance): members who got it already get it twice, and pages drop
//! the copy by its id. Waiting fan-outs are on disk, not in memory, however many queue up.
//!
//! Bounds: at most `max_in_flight` pushes are being encrypted or sent at once, across all
//! fan-outs; a push waiting to retry holds no slot, and each push has its own task, so a
//! slow or failing push service holds up only its own pushes. Every fan-out ends in a
//! [`DeliveryReport`], logged.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use prometheus_client::metrics::{counter::Counter, family::Family, histogram::Histogram};
use rand::Rng;
use reqwest::{header::HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use tokio::{
    sync::{broadcast, mpsc, Semaphore},
    task::JoinSet,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use url::Url;
use web_push::{ContentEncoding, SubscriptionInfo, Urgency, WebPushMessageBuilder};

use app::wire::PushMessage;

use crate::{
    model::fan_out::FanOut,
    model::{clock::now_millis, subscription::Subscription},
    push::{public_dns::PublicOnly, vapid::VapidKeys},
    store::{FanOutQueue, TakenFanOut, FAN_OUT_POLL},
};

/// The engine's limits and retry policy.
#[derive(Clone, Debug)]
pub struct DeliverySettings {
    /// Pushes being encrypted or sent at once, across all fan-outs.
    pub max_in_flight: usize,
    /// Queued fan-outs this process delivers at once (on PostgreSQL, each holds a
    /// database connection while it does).
    pub max_fan_outs: usize,
    /// Retries of one push after a 429, a 5xx, a timeout or a connection error.
    pub max_retries: u32,
    /// The wait before the first retry; it doubles for each next one (with jitter).
    pub first_backoff: Duration,
    /// The longest wait before a retry, `Retry-After` included.
    pub max_backoff: Duration,
    /// The longest a push service may take to answer one push.
    pub request_timeout: Duration,
    /// Let push service names resolve to loopback addresses (local testing only).
    pub allow_loopback_endpoints: bool,
    /// Once stopped, send every fan-out still queued before returning: nobody else would
    /// (one process per store, as on sled). Where other instances take from the same
    /// queue (PostgreSQL), a stopping one leaves what is queued to them.
    pub finish_queue_on_stop: bool,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        DeliverySettings {
            // Mostly pushes waiting on their push service's answer: cheap, and enough that
            // hundreds of slow endpoints leave room for everyone else.
            max_in_flight: 2048,
            // Cheap on sled, and enough that batches waiting on slow push services leave
            // room for the others (each batch may hold a few of them).
            max_fan_outs: 256,
            max_retries: 3,
            first_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
            allow_loopback_endpoints: false,
            finish_queue_on_stop: true,
        }
    }
}

impl DeliverySettings {
    /// The wait before retry number `retry` (1 for the first): the push service's
    /// `Retry-After` if it gave one, else `first_backoff` doubled per retry, ±50% at random
    /// so that many pushes refused together do not all come back together.
    fn backoff(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        let wait = retry_after.unwrap_or_else(|| {
            let exponential = self
                .first_backoff
                .saturating_mul(1 << retry.saturating_sub(1).min(16));
            exponential.mul_f64(rand::thread_rng().gen_range(0.5..1.5))
        });
        wait.min(self.max_backoff)
    }
}

/// Where delivery sends the subscriptions push services said are gone, a batch at a time.
pub type GoneSubscriptions = mpsc::Sender<Vec<Subscription>>;

/// How many batches of gone subscriptions may wait for the chat's rules before delivery
/// waits too.
pub const GONE_BATCHES_WAITING: usize = 64;

/// What one fan-out (or one queued batch of one) achieved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeliveryReport {
    pub delivered: usize,
    /// Subscriptions the push service no longer knows (reported as gone).
    pub gone: usize,
    pub failed: usize,
    /// Retries made, over all recipients.
    pub retried: usize,
    /// From the fan-out's start (when it was queued) to its last push's final answer.
    pub elapsed: Duration,
    /// From the fan-out's start to each push's final answer, shortest first.
    pub latencies: Vec<Duration>,
}

impl DeliveryReport {
    /// The `p`th percentile of the latencies (0 without pushes).
    pub fn percentile(&self, p: usize) -> Duration {
        let at = (self.latencies.len() * p / 100).min(self.latencies.len().saturating_sub(1));
        self.latencies.get(at).copied().unwrap_or_default()
    }

    /// Adds `other`, a report on another batch of the same fan-out.
    pub fn absorb(&mut self, other: DeliveryReport) {
        self.delivered += other.delivered;
        self.gone += other.gone;
        self.failed += other.failed;
        self.retried += other.retried;
        self.elapsed = self.elapsed.max(other.elapsed);
        self.latencies.extend(other.latencies);
        self.latencies.sort();
    }
}

/// How many reports [`Delivery::reports`] keeps for a listener that falls behind.
pub const REPORTS_KEPT: usize = 4096;

/// Upper bounds, in seconds, of the push latency histogram's buckets.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Counts over every fan-out since the engine started, as `/metrics` shows them:
/// `prometheus-client` handles, so the registry's clones share the counts.
#[derive(Debug)]
pub struct DeliveryTotals {
    pub fan_outs: Counter,
    /// By final result; each result is there from the start, at 0.
    pub pushes: Family<Outcome, Counter>,
    pub retried: Counter,
    /// Seconds from a fan-out's start to each push's final answer, in [`LATENCY_BUCKETS`].
    pub latency: Histogram,
}

impl Default for DeliveryTotals {
    fn default() -> Self {
        let pushes = Family::default();
        for outcome in [Outcome::Delivered, Outcome::Gone, Outcome::Failed] {
            drop(pushes.get_or_create(&outcome)); // A series at 0.
        }
        DeliveryTotals {
            fan_outs: Counter::default(),
            pushes,
            retried: Counter::default(),
            latency: Histogram::new(LATENCY_BUCKETS),
        }
    }
}

impl DeliveryTotals {
    /// Adds a finished fan-out; its pushes last, so a scrape that shows them shows the
    /// fan-out and its latencies too.
    pub(crate) fn add(&self, report: &DeliveryReport) {
        self.fan_outs.inc();
        self.retried.inc_by(report.retried as u64);
        for latency in &report.latencies {
            self.latency.observe(latency.as_secs_f64());
        }
        for (outcome, pushes) in [
            (Outcome::Delivered, report.delivered),
            (Outcome::Gone, report.gone),
            (Outcome::Failed, report.failed),
        ] {
            self.pushes.get_or_create(&outcome).inc_by(pushes as u64);
        }
    }
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
            // An operator's notice is timely, but not urgent enough to wake a phone.
            // A removed member's browsers should hear of it even after a day away.
            PushMessage::Notice { .. } | PushMessage::Removed { .. } => PushOptions {
                ttl_secs: 24 * 3600,
                urgency: Urgency::Normal,
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

/// How one push ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Delivered,
    /// The push service no longer knows the subscription.
    Gone,
    Failed,
}

/// The last push to one member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastResult {
    pub outcome: Outcome,
    pub at: SystemTime,
}

/// The result of one try at one push.
enum Attempt {
    Done(Outcome),
    /// Worth another try, after the push service's `Retry-After` if it gave one.
    Retry {
        retry_after: Option<Duration>,
    },
}

/// Sends pushes and reports gone subscriptions. Shared behind an `Arc`.
pub struct Delivery {
    http: reqwest::Client,
    vapid: Arc<VapidKeys>,
    queue: Arc<dyn FanOutQueue>,
    gone: GoneSubscriptions,
    settings: DeliverySettings,
    in_flight: Arc<Semaphore>,
    /// The taker of queued fan-outs and the fan-outs it took.
    running: TaskTracker,
    totals: DeliveryTotals,
    /// Every fan-out's report, for whoever listens (`pushchat bench`).
    reports: broadcast::Sender<DeliveryReport>,
    /// By endpoint; what `pushchat members` shows.
    last_results: Mutex<HashMap<String, LastResult>>,
}

impl Delivery {
    /// An engine that takes fan-outs from `queue` and reports gone subscriptions to `gone`.
    pub fn new(
        vapid: Arc<VapidKeys>,
        queue: Arc<dyn FanOutQueue>,
        settings: DeliverySettings,
        gone: GoneSubscriptions,
    ) -> reqwest::Result<Self> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("pushchat/", env!("CARGO_PKG_VERSION")))
            .timeout(settings.request_timeout)
            .connect_timeout(settings.request_timeout.min(Duration::from_secs(10)))
            .pool_max_idle_per_host(settings.max_in_flight)
            // A push service has no reason to redirect; following one could reach anywhere.
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(PublicOnly {
                allow_loopback: settings.allow_loopback_endpoints,
            }))
            .build()?;
        Ok(Delivery {
            http,
            vapid,
            queue,
            gone,
            in_flight: Arc::new(Semaphore::new(settings.max_in_flight)),
            settings,
            running: TaskTracker::new(),
            totals: DeliveryTotals::default(),
            reports: broadcast::Sender::new(REPORTS_KEPT),
            last_results: Mutex::default(),
        })
    }

    /// Starts taking queued fan-outs from the store and delivering them, until `stop` is
    /// cancelled; [`Delivery::drain`] then waits for the ones taken.
    pub fn start(self: &Arc<Self>, stop: CancellationToken) {
        let delivery = Arc::clone(self);
        self.running.spawn(delivery.take_fan_outs(stop));
    }

    /// Once `stop` is cancelled, the queue is emptied first when `finish_queue_on_stop`
    /// (nobody else would send what the last requests queued); else the other instances
    /// take what is left, and this one takes no more.
    async fn take_fan_outs(self: Arc<Self>, stop: CancellationToken) {
        let slots = Arc::new(Semaphore::new(self.settings.max_fan_outs));
        let stopped = || stop.is_cancelled();
        loop {
            let draining = stopped() && self.settings.finish_queue_on_stop;
            if stopped() && !draining {
                return;
            }
            let slot = tokio::select! {
                _ = stop.cancelled(), if !draining => continue,
                slot = Arc::clone(&slots).acquire_owned() => slot,
            };
            let Ok(slot) = slot else {
                return; // The semaphore is never closed.
            };
            let taken = tokio::select! {
                _ = stop.cancelled(), if !draining => continue,
                taken = self.queue.take_fan_out() => taken,
            };
            let idle: Pin<Box<dyn Future<Output = ()> + Send + '_>> = match taken {
                Ok(Some(fan_out)) => {
                    let delivery = Arc::clone(&self);
                    self.running.spawn(async move {
                        delivery.send_taken(fan_out).await;
                        drop(slot);
                    });
                    continue;
                }
                Ok(None) if draining => return,
                Ok(None) => self.queue.fan_out_queued(),
                Err(error) if draining => {
                    tracing::error!(error = %error, "cannot take a queued fan-out; it waits for the next start");
                    return;
                }
                Err(error) => {
                    tracing::error!(error = %error, "cannot take a queued fan-out; trying again");
                    Box::pin(tokio::time::sleep(FAN_OUT_POLL))
                }
            };
            // Stopping wakes it up to drain, or to return.
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = idle => {}
            }
        }
    }

    async fn send_taken(self: &Arc<Self>, taken: TakenFanOut) {
        let waited = now_millis().saturating_sub(taken.queued_at);
        let queued = Instant::now()
            .checked_sub(Duration::from_millis(waited))
            .unwrap_or_else(Instant::now);
        let report = self.push_to_all(taken.fan_out.clone(), queued).await;
        if let Err(error) = taken.done().await {
            tracing::error!(error = %error, "could not mark a fan-out as sent; it will go again");
        }
        // Counted once it left the queue: a fan-out `/metrics` counts is not sent again.
        self.record(&report);
    }

    /// How the last push to `endpoint` ended, since this server started.
    pub fn last_result(&self, endpoint: &str) -> Option<LastResult> {
        self.last_results
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(endpoint)
            .cloned()
    }

    /// The running totals, updated after every fan-out.
    pub fn totals(&self) -> &DeliveryTotals {
        &self.totals
    }

    /// The reports of the fan-outs that finish from now on (the last [`REPORTS_KEPT`]
    /// for a listener that falls behind).
    pub fn reports(&self) -> broadcast::Receiver<DeliveryReport> {
        self.reports.subscribe()
    }

    /// Waits up to `deadline` for the fan-outs taken so far to finish (cancel the `stop`
    /// given to [`Delivery::start`] first).
    pub async fn drain(&self, deadline: Duration) -> bool {
        self.running.close();
        tokio::time::timeout(deadline, self.running.wait())
            .await
            .is_ok()
    }

    /// Sends `fan_out` now, without the queue (`pushchat send` on a stopped server), and
    /// says how it went (gone subscriptions are reported as an event, see
    /// [`GoneSubscriptions`]).
    pub async fn send(self: &Arc<Self>, fan_out: FanOut) -> DeliveryReport {
        let report = self.push_to_all(fan_out, Instant::now()).await;
        self.record(&report);
        report
    }

    /// Pushes `fan_out`, which started (was queued) at `started`, to every recipient and
    /// says how it went; its gone subscriptions go out as one event.
    async fn push_to_all(self: &Arc<Self>, fan_out: FanOut, started: Instant) -> DeliveryReport {
        let payload: Arc<[u8]> = fan_out.message.to_payload().into();
        let options = Arc::new(PushOptions::for_message(&fan_out.message));
        let mut pushes = JoinSet::new();
        for recipient in fan_out.recipients {
            let (delivery, payload, options) =
                (Arc::clone(self), Arc::clone(&payload), Arc::clone(&options));
            pushes.spawn(async move {
                let (outcome, retries) = delivery.push(&payload, &options, &recipient).await;
                (outcome, retries, recipient)
            });
        }

        let mut report = DeliveryReport::default();
        let mut gone = Vec::new();
        report.latencies.reserve(pushes.len());
        while let Some(finished) = pushes.join_next().await {
            report.latencies.push(started.elapsed());
            let Ok((outcome, retries, recipient)) = finished else {
                report.failed += 1; // A push task panicked; the others carry on.
                continue;
            };
            report.retried += retries as usize;
            let mut last_results = self
                .last_results
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            match outcome {
                Outcome::Delivered => report.delivered += 1,
                Outcome::Failed => report.failed += 1,
                Outcome::Gone => {
                    report.gone += 1;
                    last_results.remove(&recipient.endpoint);
                    gone.push(recipient);
                    continue;
                }
            }
            let at = SystemTime::now();
            last_results.insert(recipient.endpoint, LastResult { outcome, at });
        }
        // join_next yields in completion order, so the latencies are already sorted.
        report.elapsed = started.elapsed();
        if !gone.is_empty() && self.gone.send(gone).await.is_err() {
            tracing::warn!(
                "nobody hears of gone subscriptions; their members stay until the next push"
            );
        }
        report
    }

    /// Adds a finished fan-out to the totals, tells who listens, and logs it.
    fn record(&self, report: &DeliveryReport) {
        self.totals.add(report);
        // Nobody listening is the usual case.
        let _ = self.reports.send(report.clone());
        tracing::info!(
            delivered = report.delivered,
            gone = report.gone,
            failed = report.failed,
            retried = report.retried,
            elapsed_ms = report.elapsed.as_millis() as u64,
            p99_ms = report.percentile(99).as_millis() as u64,
            "fan-out done"
        );
    }

    /// One push, with its retries; returns how it ended and how many retries it took.
    async fn push(
        &self,
        payload: &[u8],
        options: &PushOptions,
        to: &Subscription,
    ) -> (Outcome, u32) {
        let mut retries = 0;
        loop {
            let attempt = {
                let Ok(_slot) = self.in_flight.acquire().await else {
                    return (Outcome::Failed, retries); // The semaphore is never closed.
                };
                self.attempt(payload, options, to).await
            };
            match attempt {
                Attempt::Done(outcome) => return (outcome, retries),
                Attempt::Retry { .. } if retries == self.settings.max_retries => {
                    tracing::warn!(host = %host_of(&to.endpoint), retries, "push failed after retries");
                    return (Outcome::Failed, retries);
                }
                Attempt::Retry { retry_after } => {
                    retries += 1;
                    tokio::time::sleep(self.settings.backoff(retries, retry_after)).await;
                }
            }
        }
    }

    async fn attempt(&self, payload: &[u8], options: &PushOptions, to: &Subscription) -> Attempt {
        let host = || host_of(&to.endpoint);
        let request = match self.build_request(payload, options, to) {
            Ok(request) => request,
            Err(error) => {
                tracing::error!(host = %host(), error = %error, "could not build a push");
                return Attempt::Done(Outcome::Failed);
            }
        };
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => {
                tracing::debug!(host = %host(), error = %error, "push not answered; will retry");
                return Attempt::Retry { retry_after: None };
            }
        };
        match response.status() {
            status if status.is_success() => Attempt::Done(Outcome::Delivered),
            StatusCode::NOT_FOUND | StatusCode::GONE => Attempt::Done(Outcome::Gone),
            status if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() => {
                tracing::debug!(host = %host(), %status, "push service busy; will retry");
                Attempt::Retry {
                    retry_after: retry_after(response.headers()),
                }
            }
            StatusCode::PAYLOAD_TOO_LARGE => {
                tracing::error!(host = %host(), bytes = payload.len(), "push service refused the payload size: a bug, payloads are checked before sending");
                Attempt::Done(Outcome::Failed)
            }
            status @ (StatusCode::BAD_REQUEST
            | StatusCode::UNAUTHORIZED
            | StatusCode::FORBIDDEN) => {
                tracing::error!(host = %host(), %status, "push service refused our request: check the VAPID key and subject");
                Attempt::Done(Outcome::Failed)
            }
            status => {
                tracing::warn!(host = %host(), %status, "push service did not accept the push");
                Attempt::Done(Outcome::Failed)
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
}

/// `Retry-After` as a wait: delay-seconds or an HTTP date (RFC 9110 §10.2.3).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    match value.parse::<u64>() {
        Ok(seconds) => Some(Duration::from_secs(seconds)),
        Err(_) => {
            let at = httpdate::parse_http_date(value).ok()?;
            Some(at.duration_since(SystemTime::now()).unwrap_or_default())
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

#[cfg(test)]
mod tests {
    use reqwest::header::{HeaderValue, RETRY_AFTER};

    use super::*;

    fn headers(retry_after: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_str(retry_after).unwrap());
        headers
    }

    #[test]
    fn test_backoff_doubles_with_jitter_and_honours_retry_after_up_to_the_cap() {
        let settings = DeliverySettings::default();
        for retry in 1..=3 {
            let nominal = settings.first_backoff * (1 << (retry - 1));
            let wait = settings.backoff(retry, None);
            assert!(
                wait >= nominal / 2 && wait <= nominal * 3 / 2,
                "retry {retry}: {wait:?}"
            );
        }
        assert_eq!(
            settings.backoff(1, Some(Duration::from_secs(5))),
            Duration::from_secs(5)
        );
        assert_eq!(
            settings.backoff(1, Some(Duration::from_secs(3600))),
            settings.max_backoff
        );
        assert_eq!(settings.backoff(40, None), settings.max_backoff);
    }

    #[test]
    fn test_batch_reports_add_up_to_the_fan_outs_report() {
        let ms = Duration::from_millis;
        let batch = |delivered, latencies: &[u64]| DeliveryReport {
            delivered,
            failed: 1,
            elapsed: ms(*latencies.last().unwrap()),
            latencies: latencies.iter().map(|&l| ms(l)).collect(),
            ..DeliveryReport::default()
        };
        let mut fan_out = DeliveryReport::default();
        assert_eq!(fan_out.percentile(50), Duration::ZERO);
        fan_out.absorb(batch(2, &[30, 40, 90]));
        fan_out.absorb(batch(1, &[10, 20]));
        assert_eq!((fan_out.delivered, fan_out.failed), (3, 2));
        assert_eq!(fan_out.elapsed, ms(90));
        assert_eq!(fan_out.latencies, [10, 20, 30, 40, 90].map(ms));
        assert_eq!(fan_out.percentile(50), ms(30));
        assert_eq!(fan_out.percentile(99), ms(90));
        assert_eq!(fan_out.percentile(100), ms(90));
    }

    #[test]
    fn test_retry_after_takes_seconds_and_dates() {
        assert_eq!(retry_after(&headers("7")), Some(Duration::from_secs(7)));
        let soon = SystemTime::now() + Duration::from_secs(120);
        let wait = retry_after(&headers(&httpdate::fmt_http_date(soon))).unwrap();
        assert!(
            wait > Duration::from_secs(110) && wait <= Duration::from_secs(120),
            "{wait:?}"
        );
        assert_eq!(
            retry_after(&headers("Wed, 21 Oct 2015 07:28:00 GMT")),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after(&headers("soon")), None);
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }
}
