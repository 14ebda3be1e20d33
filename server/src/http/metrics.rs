//! What an operator watches (`GET /metrics`), kept in one `prometheus-client` registry:
//! members, pushes by final result, retries, fan-outs, the push latency histogram, and
//! HTTP requests by route and status. Every series and label name is spelled here.
//! Delivery bumps its own counters ([`DeliveryTotals`]), registered here as shared
//! handles; this module counts HTTP requests and renders everything.
//!
//! The text is the Prometheus format, version 0.0.4, served as [`CONTENT_TYPE`]; not
//! OpenMetrics, so a sample reads as it always has (`le="1"`, not `le="1.0"`; no `# EOF`).

use std::{
    fmt,
    sync::{atomic::AtomicU64, Arc},
};

use axum::{
    extract::{MatchedPath, Request, State},
    middleware::Next,
    response::Response,
};
use prometheus_client::{
    encoding::{prometheus_text, EncodeLabelSet, LabelSetEncoder},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::{Registry, Unit},
};

use crate::push::{DeliveryTotals, Outcome};

/// The content type of what [`Metrics::render`] writes.
pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Every series `/metrics` shows, registered once; cheap to share behind an `Arc`.
pub struct Metrics {
    registry: Registry,
    /// Set from the store at every scrape.
    members: Gauge<u64, AtomicU64>,
    http_requests: Family<HttpRequest, Counter>,
}

/// What one HTTP request is counted by.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpRequest {
    /// The matched route's pattern, never the raw path, so the number of series stays
    /// bounded; `other` where no route matched.
    route: String,
    status: u16,
}

/// `/metrics` labels a push by its final result: `result="delivered"`, `"gone"` or
/// `"failed"`.
impl EncodeLabelSet for Outcome {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> fmt::Result {
        let result = match self {
            Outcome::Delivered => "delivered",
            Outcome::Gone => "gone",
            Outcome::Failed => "failed",
        };
        [("result", result)].encode(encoder)
    }
}

impl Metrics {
    /// The registry of every series, `delivery`'s among them.
    pub fn new(delivery: &DeliveryTotals) -> Self {
        let members = Gauge::default();
        let http_requests = Family::default();
        // No full stop after a help text (the registry adds one), and no `_total` after a
        // counter's name (the encoder adds it).
        let mut registry = Registry::default();
        registry.register("pushchat_members", "Members of the chat", members.clone());
        registry.register(
            "pushchat_pushes",
            "Pushes by final result",
            delivery.pushes.clone(),
        );
        registry.register(
            "pushchat_push_retries",
            "Retries after 429, 5xx or no answer",
            delivery.retried.clone(),
        );
        registry.register(
            "pushchat_fan_outs",
            "Queued fan-outs (batches of up to 200 pushes) this instance delivered",
            delivery.fan_outs.clone(),
        );
        registry.register_with_unit(
            "pushchat_push_latency",
            "From when a fan-out was queued to a push's final answer",
            Unit::Seconds,
            delivery.latency.clone(),
        );
        registry.register(
            "pushchat_http_requests",
            "HTTP requests by route and status",
            http_requests.clone(),
        );
        Metrics {
            registry,
            members,
            http_requests,
        }
    }

    /// The exposition text, `members` (as the store counts them now) included.
    pub fn render(&self, members: usize) -> String {
        self.members.set(members as u64);
        let mut text = String::new();
        prometheus_text::encode(&mut text, &self.registry)
            .expect("a String takes every write, and no histogram here is native-only");
        text
    }
}

/// Middleware: counts every request by its matched route and the status it got.
pub async fn count_requests(
    State(metrics): State<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "other".to_owned(), |path| path.as_str().to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16();
    metrics
        .http_requests
        .get_or_create(&HttpRequest { route, status })
        .inc();
    response
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::{body::Body, middleware, routing::post, Router};
    use tower::ServiceExt;

    use super::*;
    use crate::push::DeliveryReport;

    /// The lines that are not comments, sorted: a family's series come in no fixed order.
    fn samples(text: &str) -> Vec<&str> {
        let mut samples: Vec<&str> = text.lines().filter(|line| !line.starts_with('#')).collect();
        samples.sort_unstable();
        samples
    }

    #[tokio::test]
    async fn test_exposition_reads_as_the_hand_written_one_did() {
        let delivery = DeliveryTotals::default();
        let metrics = Arc::new(Metrics::new(&delivery));
        let ms = Duration::from_millis;
        delivery.add(&DeliveryReport {
            delivered: 2,
            gone: 1,
            retried: 1,
            latencies: vec![ms(20), ms(20), ms(1500)],
            ..DeliveryReport::default()
        });
        let app = Router::new()
            .route("/api/chat/{id}", post(|| async { "ok" }))
            .layer(middleware::from_fn_with_state(
                Arc::clone(&metrics),
                count_requests,
            ));
        for uri in ["/api/chat/1", "/api/chat/2", "/nowhere"] {
            let request = Request::post(uri).body(Body::empty()).unwrap();
            app.clone().oneshot(request).await.unwrap();
        }

        let text = metrics.render(2);
        let mut expected = vec![
            "pushchat_members 2",
            r#"pushchat_pushes_total{result="delivered"} 2"#,
            r#"pushchat_pushes_total{result="gone"} 1"#,
            r#"pushchat_pushes_total{result="failed"} 0"#,
            "pushchat_push_retries_total 1",
            "pushchat_fan_outs_total 1",
            r#"pushchat_push_latency_seconds_bucket{le="0.005"} 0"#,
            r#"pushchat_push_latency_seconds_bucket{le="0.01"} 0"#,
            r#"pushchat_push_latency_seconds_bucket{le="0.025"} 2"#,
            r#"pushchat_push_latency_seconds_bucket{le="0.05"} 2"#,
            r#"pushchat_push_latency_seconds_bucket{le="0.1"} 2"#,
            r#"pushchat_push_latency_seconds_bucket{le="0.25"} 2"#,
            r#"pushchat_push_latency_seconds_bucket{le="0.5"} 2"#,
            r#"pushchat_push_latency_seconds_bucket{le="1"} 2"#,
            r#"pushchat_push_latency_seconds_bucket{le="2.5"} 3"#,
            r#"pushchat_push_latency_seconds_bucket{le="5"} 3"#,
            r#"pushchat_push_latency_seconds_bucket{le="10"} 3"#,
            r#"pushchat_push_latency_seconds_bucket{le="30"} 3"#,
            r#"pushchat_push_latency_seconds_bucket{le="+Inf"} 3"#,
            "pushchat_push_latency_seconds_sum 1.54",
            "pushchat_push_latency_seconds_count 3",
            r#"pushchat_http_requests_total{route="/api/chat/{id}",status="200"} 2"#,
            r#"pushchat_http_requests_total{route="other",status="404"} 1"#,
        ];
        expected.sort_unstable();
        assert_eq!(samples(&text), expected, "{text}");
        assert!(text.starts_with(
            "# HELP pushchat_members Members of the chat.\n\
             # TYPE pushchat_members gauge\n\
             pushchat_members 2\n\
             # HELP pushchat_pushes_total Pushes by final result.\n\
             # TYPE pushchat_pushes_total counter\n"
        ));
        assert!(text.contains("# TYPE pushchat_push_latency_seconds histogram\n"));
        assert!(!text.contains("# EOF"), "{text}");
    }
}
