//! One test's world: the local push service, a data dir (and a PostgreSQL database when
//! the suites run on it) and a server on them; virtual members, and readers of what they
//! received.

use std::path::{Path, PathBuf};

use app::wire::PushMessage;
use localpush::{LocalPush, LocalPushClient, NewSubscriber, ReceivedPush, VirtualSubscription};

use crate::{eventually, suites_use_postgres, Server, TestDatabase};

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
        let push = LocalPush::start("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let not_yet_started = Stopped {
            push,
            data_dir: tempfile::tempdir().unwrap(),
            home: ChatHome::new().await,
            binary: binary.as_ref().to_owned(),
        };
        not_yet_started.started(extra_args).await
    }

    pub fn pushes(&self) -> LocalPushClient {
        self.push.client()
    }

    /// A virtual browser subscribed with this server's VAPID key, as a page would be.
    pub async fn browser(&self) -> VirtualSubscription {
        virtual_browser(&self.server, &self.pushes()).await
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
            binary: self.binary,
        }
    }

    /// Kills the server and starts a new one on the same data dir.
    pub async fn restarted(self) -> Fixture {
        self.stopped().await.started(&[]).await
    }
}

/// A fixture whose server was stopped.
pub struct Stopped {
    pub push: LocalPush,
    pub data_dir: tempfile::TempDir,
    pub home: ChatHome,
    binary: PathBuf,
}

impl Stopped {
    /// A server on this data dir again, started with `extra_args`.
    async fn started(self, extra_args: &[&str]) -> Fixture {
        let Stopped {
            push,
            data_dir,
            home,
            binary,
        } = self;
        let server = Server::start(&binary, data_dir.path(), &home.with(extra_args)).await;
        Fixture {
            push,
            data_dir,
            home,
            server,
            binary,
        }
    }
}

/// A virtual browser on the push service `pushes` talks to, subscribed with `server`'s
/// VAPID key, as a page would be.
pub async fn virtual_browser(server: &Server, pushes: &LocalPushClient) -> VirtualSubscription {
    let key = server.vapid_key().await;
    let subscriber = NewSubscriber {
        application_server_key: Some(key),
        fault: None,
    };
    pushes.subscribe(&subscriber).await.unwrap()
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
    PushMessage::Joined { name: name.into() }
}

pub fn left(names: &[&str]) -> PushMessage {
    PushMessage::Left {
        names: names.iter().map(|&name| name.to_owned()).collect(),
    }
}
