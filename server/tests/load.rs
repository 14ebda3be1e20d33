//! Load: 200 members, every one a virtual browser on the local push service, post chat
//! lines at a steady pace for 30 s to the real `pushchat` binary. No request may fail, the
//! push service must receive every push of every line, and the server's memory at the end
//! must be within 20% of what it was after 10 s. Prints requests/s, POST latency and RSS.
//!
//! The pace is set so two cores keep up (each line is 200 encrypted pushes);
//! `PUSHCHAT_LOAD_LINES_PER_SECOND` changes it.

mod support;

use std::time::{Duration, Instant};

use app::wire::PostLineRequest;
use end2end::{credentials, eventually, join_body, Server};
use localpush::{LocalPush, NewSubscriber};
use support::PUSHCHAT;
use tokio::task::JoinSet;

const MEMBERS: usize = 200;
const DURATION: Duration = Duration::from_secs(30);
const RSS_BASELINE_AT: Duration = Duration::from_secs(10);
const DEFAULT_LINES_PER_SECOND: f64 = 20.0;

fn lines_per_second() -> f64 {
    std::env::var("PUSHCHAT_LOAD_LINES_PER_SECOND")
        .ok()
        .and_then(|rate| rate.parse().ok())
        .filter(|rate: &f64| *rate > 0.0)
        .unwrap_or(DEFAULT_LINES_PER_SECOND)
}

/// Resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

#[tokio::test(flavor = "multi_thread")]
async fn test_200_members_chatting_for_30_s_lose_nothing_and_hold_their_memory() {
    // The receiver decrypts one push in 50 (it checks every push's headers and VAPID), so
    // it leaves the cores to the server being measured.
    let push = LocalPush::start_sampling("127.0.0.1:0".parse().unwrap(), 50)
        .await
        .unwrap();
    let data_dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        PUSHCHAT,
        data_dir.path(),
        &[
            "--members-per-address",
            "1000",
            "--chat-lines-per-minute",
            "600",
        ],
    )
    .await;
    let pid = server.process.pid().expect("the server runs");
    let pushes = push.client();

    let mut members = Vec::new();
    for n in 0..MEMBERS {
        let member = pushes.subscribe(&NewSubscriber::default()).await.unwrap();
        let join = join_body(&format!("member {n}"), &member.subscription);
        let (status, _) = server.post("/api/subscribe", &join).await;
        assert!(status.is_success(), "join {n}: {status}");
        members.push(member);
    }
    // Join n is pushed to the n members there by then.
    let join_pushes = (MEMBERS * (MEMBERS + 1) / 2) as u64;
    eventually("every join to be pushed", || async {
        let stats = pushes.stats().await.ok()?;
        (stats.accepted == join_pushes).then_some(())
    })
    .await;

    let rate = lines_per_second();
    let period = Duration::from_secs_f64(MEMBERS as f64 / rate);
    let start = tokio::time::Instant::now();
    let mut posters = JoinSet::new();
    for (n, member) in members.iter().enumerate() {
        let (http, url) = (server.http.clone(), format!("{}/api/chat", server.base));
        let credentials = credentials(member);
        // Members take turns: together they post `rate` lines a second.
        let first = start + Duration::from_secs_f64(n as f64 / rate);
        posters.spawn(async move {
            let mut latencies = Vec::new();
            let mut failures = Vec::new();
            let mut at = first;
            while at < start + DURATION {
                tokio::time::sleep_until(at).await;
                let line = PostLineRequest {
                    member: credentials.clone(),
                    msg: format!("line {} from member {n}", latencies.len() + failures.len()),
                };
                let sent = Instant::now();
                match http.post(&url).json(&line).send().await {
                    Ok(response) if response.status().is_success() => {
                        latencies.push(sent.elapsed())
                    }
                    Ok(response) => failures.push(response.status().to_string()),
                    Err(error) => failures.push(error.to_string()),
                }
                at += period;
            }
            (latencies, failures)
        });
    }
    tokio::time::sleep_until(start + RSS_BASELINE_AT).await;
    let rss_baseline = rss_kib(pid);
    let mut latencies = Vec::new();
    let mut failures = Vec::new();
    for (mut mine, mut failed) in posters.join_all().await {
        latencies.append(&mut mine);
        failures.append(&mut failed);
    }
    let elapsed = start.elapsed();
    let rss_end = rss_kib(pid);
    assert!(failures.is_empty(), "failed requests: {failures:?}");

    let lines = latencies.len() as u64;
    let expected = join_pushes + lines * MEMBERS as u64;
    let drained = Instant::now();
    let stats = eventually("every line's pushes to arrive", || async {
        let stats = pushes.stats().await.ok()?;
        (stats.accepted >= expected).then_some(stats)
    })
    .await;
    let drain = drained.elapsed();
    assert_eq!(stats.accepted, expected, "pushes received");
    assert_eq!(stats.refused, 0, "pushes refused");
    for (n, member) in members.iter().enumerate() {
        // Member n was told of its own join and of every later one, then of every line.
        let got = push.received_by(&member.id).len();
        assert_eq!(got, MEMBERS - n + lines as usize, "pushes to member {n}");
    }

    latencies.sort();
    let percentile = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
    println!(
        "load: {MEMBERS} members, {lines} chat lines in {:.1} s = {:.1} requests/s, \
         POST latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; {} pushes, all received \
         ({:.1} s after the last POST); server RSS after {} s {} KiB, at the end {} KiB \
         ({:+.1}%)",
        elapsed.as_secs_f64(),
        lines as f64 / elapsed.as_secs_f64(),
        percentile(0.5).as_secs_f64() * 1e3,
        percentile(0.99).as_secs_f64() * 1e3,
        latencies.last().unwrap().as_secs_f64() * 1e3,
        lines * MEMBERS as u64,
        drain.as_secs_f64(),
        RSS_BASELINE_AT.as_secs(),
        rss_baseline,
        rss_end,
        (rss_end as f64 / rss_baseline as f64 - 1.0) * 100.0,
    );
    assert!(
        rss_end as f64 <= rss_baseline as f64 * 1.2,
        "RSS grew from {rss_baseline} KiB to {rss_end} KiB"
    );
}
