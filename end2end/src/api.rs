//! A client of a running pushchat's JSON API, and the request bodies tests send it.

use std::path::Path;

use app::wire::{
    ChatLine, MemberCredentials, PostLineRequest, PushSubscription, RoomState, SubscribeRequest,
    VapidPublicKey,
};
use localpush::VirtualSubscription;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::{eventually, PushchatProcess};

/// The operator's token for the admin API, on servers started with
/// `--admin-token ADMIN_TOKEN`.
pub const ADMIN_TOKEN: &str = "an-admin-token-for-the-tests";

/// A running `pushchat serve` and a client of its API.
pub struct Server {
    pub process: PushchatProcess,
    pub base: String,
    pub http: reqwest::Client,
}

impl Server {
    /// Starts `binary` on `data_dir` and in it.
    pub async fn start(binary: impl AsRef<Path>, data_dir: &Path, extra_args: &[&str]) -> Server {
        let process = PushchatProcess::start(binary.as_ref(), data_dir, data_dir, extra_args);
        Server::client_of(process.await)
    }

    /// A client of `process`, which a test started where it chose (in a folder holding a
    /// site, say).
    pub fn client_of(process: PushchatProcess) -> Server {
        let base = process.url.clone();
        Server {
            process,
            base,
            http: reqwest::Client::new(),
        }
    }

    pub async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn post_ok<T: serde::de::DeserializeOwned>(&self, path: &str, body: &Value) -> T {
        let (status, answer) = self.post(path, body).await;
        assert!(status.is_success(), "{path} answered {status}: {answer}");
        serde_json::from_value(answer).unwrap()
    }

    /// `POST /api/admin/PATH` with [`ADMIN_TOKEN`]: the status of the answer.
    pub async fn as_operator(&self, path: &str, body: &Value) -> StatusCode {
        let url = format!("{}/api/admin/{path}", self.base);
        let request = self.http.post(url).bearer_auth(ADMIN_TOKEN).json(body);
        request.send().await.unwrap().status()
    }

    /// One series of `GET /metrics`.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let url = format!("{}/metrics", self.base);
        let text = self.http.get(url).send().await.ok()?.text().await.ok()?;
        sample(&text, series)
    }

    /// Waits until one series of `GET /metrics` reads exactly `value`.
    pub async fn wait_for_metric(&self, series: &str, value: f64) {
        eventually(&format!("the metric {series} to read {value}"), || async {
            (self.metric(series).await == Some(value)).then_some(())
        })
        .await;
    }

    /// Waits until the server has finished `count` fan-outs since it started: every
    /// member's push service answered.
    pub async fn wait_for_fan_outs(&self, count: f64) {
        self.wait_for_metric("pushchat_fan_outs_total", count).await;
    }

    pub async fn get_ok<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = response.status();
        assert!(status.is_success(), "{path} answered {status}");
        response.json().await.unwrap()
    }

    pub async fn vapid_key(&self) -> String {
        let key: VapidPublicKey = self.get_ok("/api/vapid-public-key").await;
        key.public_key
    }

    pub async fn subscribe(&self, name: &str, member: &VirtualSubscription) -> RoomState {
        self.post_ok("/api/subscribe", &join_body(name, &member.subscription))
            .await
    }

    pub async fn init(&self, name: &str, member: &VirtualSubscription) -> RoomState {
        self.post_ok("/api/init", &join_body(name, &member.subscription))
            .await
    }

    pub async fn chat(&self, member: &VirtualSubscription, msg: &str) -> ChatLine {
        self.post_ok("/api/chat", &chat_body(member, msg)).await
    }
}

pub fn join_body(name: &str, subscription: &PushSubscription) -> Value {
    json!(SubscribeRequest {
        name: name.into(),
        subscription: subscription.clone(),
        passphrase: None,
        device_code: None,
    })
}

pub fn credentials(member: &VirtualSubscription) -> MemberCredentials {
    MemberCredentials {
        endpoint: member.subscription.endpoint.clone(),
        auth: member.subscription.keys.auth.clone(),
    }
}

pub fn chat_body(member: &VirtualSubscription, msg: &str) -> Value {
    json!(PostLineRequest {
        member: credentials(member),
        msg: msg.into()
    })
}

/// The value of one sample line (`name{labels} value`) of a Prometheus exposition.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.parse().ok())
}
