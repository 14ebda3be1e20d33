//! Web Push delivery: every fan-out goes through [`Delivery`]. It sends one push per
//! recipient (see `engine`), a batch's pushes driven together by the batch's task, over
//! one HTTP/2 connection per `https` push service (`http2`) or, for `http` endpoints and
//! services without HTTP/2, one shared HTTP client that reuses connections, with timeouts
//! and no redirects; the worker (`worker`) takes the queued fan-outs. Each fan-out batch's
//! gone subscriptions are sent, as one event, to whoever holds the
//! [`GoneSubscriptions`] receiver (the chat's rules, which end those memberships:
//! delivery deletes nothing itself).
//!
//! Bounds: at most `max_in_flight` pushes are being encrypted or sent at once, across all
//! fan-outs, and at most `max_in_flight_per_origin` to one push-service origin (see
//! `origins`), so a slow, failing or hung push service holds up only its own pushes.
//! Every fan-out ends in a [`DeliveryReport`], logged and counted in [`DeliveryTotals`].

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use futures::{stream::FuturesUnordered, FutureExt, StreamExt};
use tokio::sync::{broadcast, mpsc, Semaphore};
use tokio_util::task::TaskTracker;

use app::wire::PushMessage;

use super::{
    engine::{DeliverySettings, PushOptions},
    http2::{ClientError, Http2Client},
    origins::{OriginLimits, OriginPush},
    public_dns::PublicOnly,
    report::{DeliveryReport, DeliveryTotals, LastResult, Outcome},
    vapid::VapidKeys,
};
use crate::{
    model::{fan_out::ResolvedFanOut, subscription::Subscription},
    store::FanOutQueue,
};

/// How many reports [`Delivery::reports`] keeps for a listener that falls behind.
pub const REPORTS_KEPT: usize = 4096;

/// Where delivery sends the subscriptions push services said are gone, a batch at a time.
pub type GoneSubscriptions = mpsc::Sender<Vec<Subscription>>;

/// How many batches of gone subscriptions may wait for the chat's rules before delivery
/// waits too.
pub const GONE_BATCHES_WAITING: usize = 64;

/// Why the engine could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("cannot make the HTTP client")]
    Client(#[from] reqwest::Error),
    #[error("cannot make the HTTP/2 client")]
    Http2(#[from] ClientError),
}

/// Sends pushes and reports gone subscriptions. Shared behind an `Arc`.
pub struct Delivery {
    /// For `http` endpoints and push services that do not speak HTTP/2.
    pub(super) http: reqwest::Client,
    pub(super) http2: Http2Client,
    pub(super) vapid: Arc<VapidKeys>,
    pub(super) queue: Arc<dyn FanOutQueue>,
    pub(super) gone: GoneSubscriptions,
    pub(super) settings: DeliverySettings,
    pub(super) in_flight: Arc<Semaphore>,
    /// Each push-service origin's share of `in_flight`.
    pub(super) origins: OriginLimits,
    /// The taker of queued fan-outs and the fan-outs it took.
    pub(super) running: TaskTracker,
    pub(super) totals: DeliveryTotals,
    /// Every fan-out's report, for whoever listens (`pushchat bench`).
    pub(super) reports: broadcast::Sender<DeliveryReport>,
    /// By endpoint; what `pushchat members` shows.
    pub(super) last_results: Mutex<HashMap<String, LastResult>>,
}

impl Delivery {
    /// An engine that takes fan-outs from `queue` and reports gone subscriptions to `gone`.
    pub fn new(
        vapid: Arc<VapidKeys>,
        queue: Arc<dyn FanOutQueue>,
        settings: DeliverySettings,
        gone: GoneSubscriptions,
    ) -> Result<Self, DeliveryError> {
        let connect_timeout = settings.request_timeout.min(Duration::from_secs(10));
        let mut http = reqwest::Client::builder()
            .user_agent(concat!("pushchat/", env!("CARGO_PKG_VERSION")))
            .timeout(settings.request_timeout)
            .connect_timeout(connect_timeout)
            .pool_max_idle_per_host(settings.max_in_flight)
            // A push service has no reason to redirect; following one could reach anywhere.
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(PublicOnly {
                allow_loopback: settings.allow_loopback_endpoints,
            }));
        for root in &settings.extra_trusted_roots {
            http = http.add_root_certificate(reqwest::Certificate::from_der(root)?);
        }
        let http = http.build()?;
        let public_only = PublicOnly {
            allow_loopback: settings.allow_loopback_endpoints,
        };
        let http2 = Http2Client::new(public_only, &settings.extra_trusted_roots, connect_timeout)?;
        Ok(Delivery {
            http,
            http2,
            vapid,
            queue,
            gone,
            in_flight: Arc::new(Semaphore::new(settings.max_in_flight)),
            origins: OriginLimits::new(settings.max_in_flight_per_origin),
            settings,
            running: TaskTracker::new(),
            totals: DeliveryTotals::default(),
            reports: broadcast::Sender::new(REPORTS_KEPT),
            last_results: Mutex::default(),
        })
    }

    /// Sends `fan_out` now, without the queue (`pushchat send` on a stopped server), and
    /// says how it went (gone subscriptions are reported as an event, see
    /// [`GoneSubscriptions`]).
    pub async fn send(self: &Arc<Self>, fan_out: ResolvedFanOut) -> DeliveryReport {
        let admitted = self.origins.admit(fan_out.recipients);
        let report = self
            .push_to_all(&fan_out.message, admitted, Instant::now())
            .await;
        self.record(&report);
        report
    }

    /// Pushes `message`, which started (was queued) at `started`, to every recipient
    /// admitted to its origin's share, and says how it went; its gone subscriptions go
    /// out as one event.
    pub(super) async fn push_to_all(
        self: &Arc<Self>,
        message: &PushMessage,
        admitted: Vec<(Subscription, OriginPush)>,
        started: Instant,
    ) -> DeliveryReport {
        let payload = message.to_payload(&self.settings.chat_url);
        let options = PushOptions::for_message(message, payload.len());
        let (payload, options) = (payload.as_slice(), &options);
        // Polled by this task, not one task each: a push mostly waits for its answer.
        let mut pushes: FuturesUnordered<_> = admitted
            .into_iter()
            .map(|(recipient, origin)| {
                let push = async move {
                    let (outcome, retries) = self.push(payload, options, &recipient, &origin).await;
                    // Finished for its origin before it is counted: the worker may take
                    // another batch for it at once.
                    drop(origin);
                    (outcome, retries, recipient)
                };
                std::panic::AssertUnwindSafe(push).catch_unwind()
            })
            .collect();

        let mut report = DeliveryReport::default();
        let mut gone = Vec::new();
        report.latencies.reserve(pushes.len());
        while let Some(finished) = pushes.next().await {
            report.latencies.push(started.elapsed());
            let Ok((outcome, retries, recipient)) = finished else {
                report.failed += 1; // A push panicked; the others carry on.
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
        // `pushes` yields in completion order, so the latencies are already sorted.
        report.elapsed = started.elapsed();
        if !gone.is_empty() && self.gone.send(gone).await.is_err() {
            tracing::warn!(
                "nobody hears of gone subscriptions; their members stay until the next push"
            );
        }
        report
    }

    /// Adds a finished fan-out to the totals, tells who listens, and logs it.
    pub(super) fn record(&self, report: &DeliveryReport) {
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
}
