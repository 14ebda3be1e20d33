//! What delivery tells: how each push ended ([`Outcome`], the last one per member in a
//! [`LastResult`]), what a fan-out achieved ([`DeliveryReport`]), and the totals since the
//! server started ([`DeliveryTotals`], which `/metrics` shows).

use std::time::{Duration, SystemTime};

use prometheus_client::metrics::{counter::Counter, family::Family, histogram::Histogram};
use serde::{Deserialize, Serialize};

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
