//! What an operator watches, in the Prometheus text format (`GET /metrics`): members,
//! pushes by final result, retries, fan-outs, the push latency histogram, and HTTP
//! requests by route and status. Delivery keeps its own totals; this module counts HTTP
//! requests and renders everything.

use std::{
    collections::BTreeMap,
    fmt::Display,
    sync::{Arc, Mutex},
};

use axum::{
    extract::{MatchedPath, Request, State},
    middleware::Next,
    response::Response,
};

use crate::push::delivery::{DeliveryTotals, LATENCY_BUCKETS};

/// Requests answered, by route (the route's pattern, never the raw path, so the number of
/// series stays bounded) and status.
#[derive(Default)]
pub struct HttpCounts {
    answered: Mutex<BTreeMap<(String, u16), u64>>,
}

impl HttpCounts {
    fn count(&self, route: String, status: u16) {
        let mut answered = self
            .answered
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *answered.entry((route, status)).or_default() += 1;
    }
}

/// Middleware: counts every request by its matched route and the status it got.
pub async fn count_requests(
    State(counts): State<Arc<HttpCounts>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "other".to_owned(), |path| path.as_str().to_owned());
    let response = next.run(request).await;
    counts.count(route, response.status().as_u16());
    response
}

/// The exposition text.
pub fn render(members: usize, delivery: &DeliveryTotals, http: &HttpCounts) -> String {
    let mut out = Exposition::default();
    out.family("pushchat_members", "gauge", "Members of the chat.");
    out.sample("pushchat_members", "", members);

    out.family(
        "pushchat_pushes_total",
        "counter",
        "Pushes by final result.",
    );
    for (result, count) in [
        ("delivered", delivery.delivered),
        ("gone", delivery.gone),
        ("failed", delivery.failed),
    ] {
        out.sample(
            "pushchat_pushes_total",
            &format!("result=\"{result}\""),
            count,
        );
    }
    out.family(
        "pushchat_push_retries_total",
        "counter",
        "Retries after 429, 5xx or no answer.",
    );
    out.sample("pushchat_push_retries_total", "", delivery.retried);
    out.family(
        "pushchat_fan_outs_total",
        "counter",
        "Queued fan-outs (batches of up to 200 pushes) this instance delivered.",
    );
    out.sample("pushchat_fan_outs_total", "", delivery.fan_outs);

    let latency = "pushchat_push_latency_seconds";
    out.family(
        latency,
        "histogram",
        "From when a fan-out was queued to a push's final answer.",
    );
    for (bound, count) in LATENCY_BUCKETS.iter().zip(delivery.latency_buckets) {
        out.sample(
            &format!("{latency}_bucket"),
            &format!("le=\"{bound}\""),
            count,
        );
    }
    out.sample(
        &format!("{latency}_bucket"),
        "le=\"+Inf\"",
        delivery.pushes(),
    );
    out.sample(&format!("{latency}_sum"), "", delivery.latency_sum);
    out.sample(&format!("{latency}_count"), "", delivery.pushes());

    out.family(
        "pushchat_http_requests_total",
        "counter",
        "HTTP requests by route and status.",
    );
    let answered = http
        .answered
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for ((route, status), count) in answered.iter() {
        let labels = format!("route=\"{route}\",status=\"{status}\"");
        out.sample("pushchat_http_requests_total", &labels, count);
    }
    out.0
}

#[derive(Default)]
struct Exposition(String);

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        self.0
            .push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
    }

    fn sample(&mut self, name: &str, labels: &str, value: impl Display) {
        let labels = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        self.0.push_str(&format!("{name}{labels} {value}\n"));
    }
}
