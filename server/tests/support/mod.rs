//! What the tests that run the real `pushchat` binary share: a server on a temporary
//! data dir with the local push service, virtual members, and readers of what they got.
//! Each test file uses part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use app::wire::{
    ChatLine, ChatRequest, MemberCredentials, PushMessage, PushSubscription, RoomState,
    SubscribeRequest, VapidPublicKey,
};
use end2end::{eventually, suites_use_postgres, PushchatProcess, TestDatabase};
use localpush::{LocalPush, LocalPushClient, NewSubscriber, ReceivedPush, VirtualSubscription};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// The `pushchat` binary Cargo built for these tests.
pub const PUSHCHAT: &str = env!("CARGO_BIN_EXE_pushchat");

/// A running `pushchat serve` and a client of its API.
pub struct Server {
    pub process: PushchatProcess,
    pub base: String,
    pub http: reqwest::Client,
}

impl Server {
    /// Starts `binary` on `data_dir` and in it, so with no site: the API and the pages it
    /// renders are served, not the wasm bundle or the service worker.
    pub async fn start(binary: impl AsRef<Path>, data_dir: &Path, extra_args: &[&str]) -> Server {
        let binary = binary.as_ref();
        let process = PushchatProcess::start(binary, data_dir, data_dir, extra_args).await;
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

    /// One series of `GET /metrics`.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let url = format!("{}/metrics", self.base);
        let text = self.http.get(url).send().await.ok()?.text().await.ok()?;
        sample(&text, series)
    }

    /// Waits until the server has finished `count` fan-outs since it started: every
    /// member's push service answered.
    pub async fn wait_for_fan_outs(&self, count: f64) {
        eventually(&format!("{count} fan-outs to finish"), || async {
            (self.metric("pushchat_fan_outs_total").await == Some(count)).then_some(())
        })
        .await;
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
    json!(ChatRequest {
        member: credentials(member),
        msg: msg.into()
    })
}

/// Where a fixture's server keeps the chat: in its data dir (sled), or in a database of
/// its own when this run tests PostgreSQL (`PUSHCHAT_TEST_STORE=postgres`).
pub struct ChatHome {
    pub database: Option<TestDatabase>,
}

impl ChatHome {
    pub async fn new() -> ChatHome {
        let database = match suites_use_postgres() {
            true => Some(TestDatabase::create().await),
            false => None,
        };
        ChatHome { database }
    }

    /// `args` and, on PostgreSQL, `--database-url URL`.
    pub fn with<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut all = args.to_vec();
        if let Some(database) = &self.database {
            all.extend(["--database-url", database.url.as_str()]);
        }
        all
    }
}

/// The local push service, plus the data dir, chat home and server of one test.
pub struct Fixture {
    pub push: LocalPush,
    pub data_dir: tempfile::TempDir,
    pub home: ChatHome,
    pub server: Server,
    /// The `pushchat` binary the server runs, and runs again after a restart.
    binary: PathBuf,
}

impl Fixture {
    /// A fixture whose server runs `binary`.
    pub async fn new(binary: impl AsRef<Path>) -> Fixture {
        Fixture::with_args(binary, &[]).await
    }

    /// A fixture whose server runs `binary` with `extra_args`.
    pub async fn with_args(binary: impl AsRef<Path>, extra_args: &[&str]) -> Fixture {
        let binary = binary.as_ref().to_owned();
        let push = LocalPush::start("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let data_dir = tempfile::tempdir().unwrap();
        let home = ChatHome::new().await;
        let server = Server::start(&binary, data_dir.path(), &home.with(extra_args)).await;
        Fixture {
            push,
            data_dir,
            home,
            server,
            binary,
        }
    }

    pub fn pushes(&self) -> LocalPushClient {
        self.push.client()
    }

    /// A virtual browser subscribed with this server's VAPID key, as a page would be.
    pub async fn browser(&self) -> VirtualSubscription {
        let key = self.server.vapid_key().await;
        self.pushes()
            .subscribe(&NewSubscriber {
                application_server_key: Some(key),
                fault: None,
            })
            .await
            .unwrap()
    }

    /// Subscribes one member per name, in order.
    pub async fn members<const N: usize>(&self, names: [&str; N]) -> [VirtualSubscription; N] {
        let mut members = Vec::with_capacity(N);
        for name in names {
            let member = self.browser().await;
            self.server.subscribe(name, &member).await;
            members.push(member);
        }
        members
            .try_into()
            .unwrap_or_else(|_| unreachable!("one member per name"))
    }

    /// Stops the server (SIGKILL) and leaves its data dir and the push service.
    pub async fn stopped(self) -> Stopped {
        self.server.process.kill().await;
        Stopped {
            push: self.push,
            data_dir: self.data_dir,
            home: self.home,
        }
    }

    /// Kills the server and starts a new one on the same data dir.
    pub async fn restarted(self) -> Fixture {
        let Fixture {
            push,
            data_dir,
            home,
            server,
            binary,
        } = self;
        server.process.kill().await;
        let server = Server::start(&binary, data_dir.path(), &home.with(&[])).await;
        Fixture {
            push,
            data_dir,
            home,
            server,
            binary,
        }
    }
}

/// A fixture whose server was stopped.
pub struct Stopped {
    pub push: LocalPush,
    pub data_dir: tempfile::TempDir,
    pub home: ChatHome,
}

/// Waits until `member` has received exactly `count` pushes; returns them.
pub async fn received(
    pushes: &LocalPushClient,
    member: &VirtualSubscription,
    count: usize,
) -> Vec<ReceivedPush> {
    let got = eventually(&format!("{count} pushes"), || async {
        let got = pushes.received(&member.id).await.unwrap();
        (got.len() >= count).then_some(got)
    })
    .await;
    assert_eq!(got.len(), count, "more pushes than expected: {got:?}");
    got
}

pub fn messages(pushes: &[ReceivedPush]) -> Vec<PushMessage> {
    let mut messages: Vec<PushMessage> = pushes
        .iter()
        .map(|push| push.message().expect("payload is a PushMessage"))
        .collect();
    messages.sort_by_key(|message| format!("{message:?}"));
    messages
}

pub fn joined(name: &str) -> PushMessage {
    PushMessage::Subscribe { name: name.into() }
}

pub fn left(names: &[&str]) -> PushMessage {
    PushMessage::Unsubscribe {
        names: names.iter().map(|&name| name.to_owned()).collect(),
    }
}

/// The value of one sample line (`name{labels} value`) of a Prometheus exposition.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.parse().ok())
}

pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode()
}
