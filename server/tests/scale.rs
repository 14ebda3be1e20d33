//! Several `pushchat serve` instances on one PostgreSQL database (the server named by
//! `PUSHCHAT_TEST_POSTGRES_URL`, which `.ci/test` starts), with virtual members on the
//! local push service seeded straight into the store:
//! - lines posted round-robin to three instances reach every member exactly once;
//! - an instance killed in the middle of fan-outs loses nothing: its fan-outs are taken
//!   over, every line arrives at least once, and the copies sent twice are no more than
//!   the recipients of the fan-outs it held;
//! - a benchmark: fan-out throughput to 10,000 members with one instance, then three,
//!   printed (the figures in the README).

mod support;

use std::{collections::HashMap, sync::Arc, time::Instant};

use app::wire::PushMessage;
use end2end::{eventually, join_body, Server, TestDatabase};
use localpush::{Fault, LocalPush, NewSubscriber, VirtualSubscription};
use serde_json::json;
use server::store::{self, StoreLocation, FAN_OUT_BATCH};
use sqlx::{Connection, PgConnection};
use support::{device, PUSHCHAT};
use tokio::{sync::Mutex, task::JoinSet};

/// The tests of this file measure and kill processes: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

/// A database, the local push service, and the instances serving the chat (first, so
/// that they stop before their database is dropped).
struct Cluster {
    instances: Vec<Instance>,
    database: TestDatabase,
    push: LocalPush,
    /// What every instance is started with besides the database.
    args: Vec<String>,
}

struct Instance {
    server: Server,
    _data_dir: tempfile::TempDir,
}

impl Cluster {
    /// One instance on a new database; it makes the VAPID key the members subscribe with.
    async fn start(push: LocalPush) -> Cluster {
        Cluster::start_with(push, &["--chat-lines-per-minute", "100000"]).await
    }

    /// One instance on a new database, started with `args`, as every later one.
    async fn start_with(push: LocalPush, args: &[&str]) -> Cluster {
        let mut cluster = Cluster {
            instances: Vec::new(),
            database: TestDatabase::create().await,
            push,
            args: args.iter().map(|&arg| arg.to_owned()).collect(),
        };
        cluster.add_instance().await;
        cluster
    }

    async fn add_instance(&mut self) {
        // Each instance has a data dir of its own, for its admin socket.
        let data_dir = tempfile::tempdir().unwrap();
        let mut args = vec!["--database-url", self.database.url.as_str()];
        args.extend(self.args.iter().map(String::as_str));
        let server = Server::start(PUSHCHAT, data_dir.path(), &args).await;
        self.instances.push(Instance {
            server,
            _data_dir: data_dir,
        });
    }

    /// `count` members with fresh virtual subscriptions, stored straight into the
    /// database (not joined one by one: that would cost `count`² pushes).
    async fn seed(&self, count: usize) -> Vec<VirtualSubscription> {
        let key = self.instances[0].server.vapid_key().await;
        let members: Vec<VirtualSubscription> = (0..count)
            .map(|_| {
                let request = NewSubscriber {
                    application_server_key: Some(key.clone()),
                    fault: None,
                };
                self.push.add_subscriber(request).unwrap()
            })
            .collect();
        let location = StoreLocation::Postgres {
            url: self.database.url.clone(),
        };
        let data_dir = tempfile::tempdir().unwrap();
        let store = store::open(&location, data_dir.path(), 8).await.unwrap();
        let mut inserts = JoinSet::new();
        for (part, chunk) in members.chunks(count.div_ceil(8)).enumerate() {
            let (store, chunk) = (Arc::clone(&store), chunk.to_vec());
            inserts.spawn(async move {
                for (n, member) in chunk.iter().enumerate() {
                    let name = format!("member {part}-{n}");
                    store.put_device(&device(&name, member)).await.unwrap();
                }
            });
        }
        inserts.join_all().await;
        assert_eq!(store.member_count().await.unwrap(), count);
        members
    }

    /// Posts `lines` chat lines, line n to instance n % instances, each from another
    /// member; returns their ids.
    async fn post_round_robin(&self, speakers: &[VirtualSubscription], lines: usize) -> Vec<u64> {
        let mut ids = Vec::with_capacity(lines);
        for n in 0..lines {
            let instance = &self.instances[n % self.instances.len()].server;
            let speaker = &speakers[n % speakers.len()];
            let line = instance.chat(speaker, &format!("line {n}")).await;
            ids.push(line.id);
        }
        ids
    }

    /// Waits until the push service has accepted `count` pushes in all.
    async fn wait_for_pushes(&self, count: u64) {
        let pushes = self.push.client();
        eventually(&format!("{count} pushes"), || async {
            let stats = pushes.stats().await.ok()?;
            (stats.accepted >= count).then_some(())
        })
        .await;
    }

    async fn accepted(&self) -> u64 {
        self.push.client().stats().await.unwrap().accepted
    }
}

/// How many copies of each of `lines` every member received.
fn copies(
    push: &LocalPush,
    members: &[VirtualSubscription],
    lines: &[u64],
) -> Vec<HashMap<u64, usize>> {
    members
        .iter()
        .map(|member| {
            let mut copies: HashMap<u64, usize> = lines.iter().map(|id| (*id, 0)).collect();
            for push in push.received_by(&member.id) {
                if let Some(PushMessage::Line(line)) = push.message() {
                    if let Some(count) = copies.get_mut(&line.id) {
                        *count += 1;
                    }
                }
            }
            copies
        })
        .collect()
}

/// Fan-outs instance `pid` holds: its connections inside a transaction, waiting on
/// delivery (each taken fan-out keeps its row locked in one).
async fn fan_outs_held(database: &TestDatabase, pid: u32) -> i64 {
    let mut connection = PgConnection::connect(&database.url).await.unwrap();
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE application_name = $1 AND state = 'idle in transaction'",
    )
    .bind(format!("pushchat/{pid}"))
    .fetch_one(&mut connection)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn test_three_instances_share_fan_outs_once_each_and_survive_one_killed() {
    const MEMBERS: usize = 1_000;
    const LINES: usize = 12;
    let _alone = ONE_AT_A_TIME.lock().await;
    let push = LocalPush::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut cluster = Cluster::start(push).await;
    let members = cluster.seed(MEMBERS).await;
    cluster.add_instance().await;
    cluster.add_instance().await;

    // The normal path: every member gets every line exactly once.
    let lines = cluster.post_round_robin(&members, LINES).await;
    cluster.wait_for_pushes((LINES * MEMBERS) as u64).await;
    for (n, got) in copies(&cluster.push, &members, &lines).iter().enumerate() {
        assert!(
            got.values().all(|copies| *copies == 1),
            "member {n} got {got:?}"
        );
    }
    assert_eq!(cluster.accepted().await, (LINES * MEMBERS) as u64);

    // Every push service now answers after a second, so that fan-outs are in flight
    // when one instance dies, once part of the next lines went out.
    let pushes = cluster.push.client();
    for member in &members {
        let slow = Fault::Slow { millis: 1000 };
        pushes.set_fault(&member.id, Some(slow)).await.unwrap();
    }
    let before = cluster.accepted().await;
    let lines = cluster.post_round_robin(&members, LINES).await;
    let part = before + (LINES * MEMBERS / 4) as u64;
    cluster.wait_for_pushes(part).await;
    let victim = cluster.instances.remove(1).server.process;
    let pid = victim.pid().expect("the instance runs");
    let held = fan_outs_held(&cluster.database, pid).await;
    victim.kill().await;
    assert!(
        held > 0,
        "the instance was killed with no fan-out in flight"
    );
    let accepted_at_kill = cluster.accepted().await - before;

    let sent = (LINES * MEMBERS) as u64;
    eventually("every line to reach every member", || async {
        let got = copies(&cluster.push, &members, &lines);
        got.iter()
            .all(|member| member.values().all(|copies| *copies >= 1))
            .then_some(())
    })
    .await;
    // Copies still on their way would be missed: count once no fan-out is left.
    let mut connection = PgConnection::connect(&cluster.database.url).await.unwrap();
    let connection = Mutex::new(&mut connection);
    eventually("the queue to empty", || async {
        let mut connection = connection.lock().await;
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM fan_outs")
            .fetch_one(&mut **connection)
            .await
            .ok()?;
        (left == 0).then_some(())
    })
    .await;
    let got = copies(&cluster.push, &members, &lines);
    let total: usize = got.iter().flat_map(|member| member.values()).sum();
    let duplicates = total as u64 - sent;
    println!(
        "scale: {MEMBERS} members, 3 instances, {LINES} lines round-robin: {} pushes, each \
         member got each line once; then {LINES} more, one instance killed after {} of \
         their {sent} pushes holding {held} fan-outs: every line reached every member, {} \
         pushes sent twice (at most {held} × {FAN_OUT_BATCH})",
        LINES * MEMBERS,
        accepted_at_kill,
        duplicates,
    );
    assert!(
        duplicates <= held as u64 * FAN_OUT_BATCH as u64,
        "{duplicates} duplicates, but the killed instance held {held} fan-outs"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn test_fan_out_throughput_to_10000_members_with_1_and_3_instances() {
    const MEMBERS: usize = 10_000;
    const LINES: usize = 3;
    let _alone = ONE_AT_A_TIME.lock().await;
    // The receiver decrypts one push in 50 (it checks every push's headers and VAPID),
    // leaving the cores to the instances being measured.
    let push = LocalPush::start_sampling("127.0.0.1:0".parse().unwrap(), 50)
        .await
        .unwrap();
    let mut cluster = Cluster::start(push).await;
    let members = cluster.seed(MEMBERS).await;

    let mut rates = Vec::new();
    for instances in [1, 3] {
        while cluster.instances.len() < instances {
            cluster.add_instance().await;
        }
        let before = cluster.accepted().await;
        let started = Instant::now();
        cluster.post_round_robin(&members, LINES).await;
        let expected = before + (LINES * MEMBERS) as u64;
        cluster.wait_for_pushes(expected).await;
        let elapsed = started.elapsed();
        assert_eq!(cluster.accepted().await, expected, "no push twice");
        let rate = (LINES * MEMBERS) as f64 / elapsed.as_secs_f64();
        println!(
            "bench: {LINES} lines to {MEMBERS} members with {instances} instance(s) on \
             PostgreSQL: {} pushes in {:.2} s = {rate:.0} pushes/s",
            LINES * MEMBERS,
            elapsed.as_secs_f64(),
        );
        rates.push(rate);
    }
    println!(
        "bench: 3 instances / 1 instance = {:.2} (on {} cores)",
        rates[1] / rates[0],
        std::thread::available_parallelism().map_or(0, |cores| cores.get())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn test_three_instances_refuse_a_passphrase_guesser_as_one_would() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let push = LocalPush::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut cluster = Cluster::start_with(push, &["--join-passphrase", "open sesame"]).await;
    cluster.add_instance().await;
    cluster.add_instance().await;
    let key = cluster.instances[0].server.vapid_key().await;
    let guesser = cluster
        .push
        .add_subscriber(NewSubscriber {
            application_server_key: Some(key),
            fault: None,
        })
        .unwrap();
    let mut statuses = std::collections::BTreeMap::new();
    for n in 0..30 {
        let instance = &cluster.instances[n % 3].server;
        let mut join = join_body("Mallory", &guesser.subscription);
        join["passphrase"] = json!(format!("guess {n}"));
        let (status, _) = instance.post("/api/subscribe", &join).await;
        *statuses.entry(status.as_u16()).or_insert(0) += 1;
    }
    // One instance would answer ten tries and slow the rest: so do three together.
    assert_eq!(statuses, [(403, 10), (429, 20)].into());
}
