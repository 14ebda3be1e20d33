//! `pushchat bench`: how fast the real code path fans one chat line out. For each member
//! count it seeds that many members straight into a fresh store (joining them through the
//! API would push every join to everyone), starts the real server, and posts chat lines
//! through the JSON API, timing each until the engine has the last push service answer.
//! The first line meets a cold server (no connection to the push service yet); the second,
//! the one measured, meets a server that has been running, as a real one has.
//!
//! Members are virtual subscribers of the local push service, run in this process on a
//! thread of its own so its CPU time is reported apart from the engine's; it checks every
//! push's headers and VAPID but decrypts only a sample. It answers over TLS with HTTP/2,
//! as the real push services do (the engine trusts its certificate made at start, here
//! only), and, for comparison, a second one over HTTP/1.1 in the clear. With
//! `--push-service URL` members point at an external service instead (anything that
//! answers 2xx to a POST under URL).
//!
//! Figures, printed per run: messages per second (members / time from the POST to the
//! last answer), that time, the median and 99th-percentile push latency, the engine's and
//! the receiver's CPU time and the engine's CPU per push; per member count, the peak RSS
//! of the whole process while it ran (the kernel's high-water mark, reset before each
//! count). Measured in the same run, per second of one core's CPU time: the floor, the
//! primitives of one message (a fresh P-256 key pair and its ECDH, with OpenSSL as the
//! engine does them, `encryption::fresh_agreement`), and beside it the whole encryption
//! of one message (`encryption::encrypt`: those, HKDF and AES-GCM).
//!
//! Built with the feature `peer`, each member count is also sent the same line by the
//! `web-push` crate as its README shows (its own hyper client, a VAPID signature built
//! per message, one `send` per member, 2,048 at once), with its rate and CPU beside the
//! engine's; `--features peer` is never in the production binary.
//!
//! The output ends with one machine-readable line per member count and transport (the
//! last one for the last count over HTTP/2): `fanout members=N msgs_per_s=X
//! floor_per_s=Y cores=C ratio=R p99_ms=L engine_cpu_us_per_push=E primitives_us=P
//! transport=T`, where the floor is the primitives' rate on every core, `ratio` is
//! `msgs_per_s / floor_per_s` and T is `http2`, `http1.1` or `external`.

use std::{
    net::SocketAddr,
    path::PathBuf,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use localpush::{Fault, LocalPush, NewSubscriber, Transport, VirtualSubscription};
use p256::elliptic_curve::rand_core::{OsRng, RngCore};
use tokio::{
    net::TcpListener,
    sync::{broadcast, oneshot},
};

use app::wire::{self, MemberCredentials, PostLineRequest, PushMessage};

use crate::{
    chat::ChatRules,
    config::{cli::BenchArgs, Config},
    http::client_address::TrustedProxies,
    model::member::Device,
    model::subscription::{self, EndpointPolicy, Subscription},
    push::{
        encryption::{self, ReceiverKeys},
        vapid::VapidKeys,
        DeliveryReport, DeliverySettings,
    },
    store::{self, StoreContents, StoreLocation},
};

/// The chat line every run fans out.
const LINE: &str = "The quick brown fox jumps over the lazy dog, and tells every member.";
const RUN_DEADLINE: Duration = Duration::from_secs(300);

#[cfg(feature = "peer")]
mod peer;

/// How a run's members behave.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scenario {
    /// Every push service answers at once.
    Healthy,
    /// 5% of endpoints answer after 2 s, 5% answer 500 once and then 201.
    Faulty,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Healthy => "healthy",
            Scenario::Faulty => "5% slow + 5% 500",
        }
    }

    fn fault(self, member: usize) -> Option<Fault> {
        match (self, member % 20) {
            (Scenario::Faulty, 1) => Some(Fault::Slow { millis: 2000 }),
            (Scenario::Faulty, 2) => Some(Fault::Flaky),
            _ => None,
        }
    }
}

/// Where the virtual members' endpoints live.
enum Receiver {
    Local(LocalReceiver),
    External(String),
}

impl Receiver {
    /// The name of its transport, in the table and the machine-readable lines.
    fn transport(&self) -> &'static str {
        match self {
            Receiver::Local(local) => match local.transport {
                Transport::Http2Tls => "http2",
                Transport::Http1Plain => "http1.1",
            },
            Receiver::External(_) => "external",
        }
    }

    /// The runs it takes: over HTTP/2 (what deployments meet) healthy and with faults;
    /// over HTTP/1.1 healthy only, to compare the transports. An external service's
    /// faults are its own.
    fn scenarios(&self) -> &'static [Scenario] {
        match self {
            Receiver::Local(local) if local.transport == Transport::Http2Tls => {
                &[Scenario::Healthy, Scenario::Faulty]
            }
            _ => &[Scenario::Healthy],
        }
    }
}

/// The local push service on its own thread and runtime.
struct LocalReceiver {
    push: LocalPush,
    transport: Transport,
    /// `/proc/self/task/TID/stat` of the receiver's thread.
    thread_stat: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl LocalReceiver {
    fn start(transport: Transport, decrypt_every: u64) -> anyhow::Result<Self> {
        let (ready, started) = std::sync::mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            let Ok(runtime) = runtime else { return };
            runtime.block_on(async move {
                let local: SocketAddr = ([127, 0, 0, 1], 0).into();
                let push = LocalPush::start_with(local, transport, decrypt_every).await;
                let own_stat = std::fs::read_link("/proc/thread-self")
                    .map(|task| PathBuf::from("/proc").join(task).join("stat"));
                if ready.send(push.map(|push| (push, own_stat))).is_ok() {
                    let _ = stopped.await;
                }
            });
        });
        let (push, thread_stat) = started.recv().context("the receiver thread died")??;
        Ok(LocalReceiver {
            push,
            transport,
            thread_stat: thread_stat?,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    fn cpu(&self) -> Duration {
        cpu_time(&self.thread_stat).unwrap_or_default()
    }
}

impl Drop for LocalReceiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The figures of one run.
struct RunFigures {
    members: usize,
    scenario: Scenario,
    /// The first line's time, on a cold server.
    cold_post_to_last: Duration,
    post_to_last: Duration,
    report: DeliveryReport,
    engine_cpu: Duration,
    receiver_cpu: Option<Duration>,
    /// Sampled payloads the receiver decrypted, and how many of them were the line sent.
    sampled: usize,
    sampled_ok: usize,
}

impl RunFigures {
    fn msgs_per_sec(&self) -> f64 {
        self.members as f64 / self.post_to_last.as_secs_f64()
    }

    /// The engine's CPU time per push of the measured line.
    fn engine_cpu_per_push(&self) -> Duration {
        self.engine_cpu / self.members.max(1) as u32
    }
}

/// What one core does per second, measured in the same run.
struct Floors {
    /// Fresh P-256 key pairs with their ECDH.
    primitives: f64,
    /// Whole RFC 8291 encryptions of the chat line.
    encryptions: f64,
}

impl Floors {
    /// Measures each for about a second on this thread.
    fn measure(payload: &[u8]) -> anyhow::Result<Self> {
        let member = external_member("https://push.example.org", 0).subscription;
        let receiver = ReceiverKeys::from_base64(&member.keys.p256dh, &member.keys.auth)?;
        Ok(Floors {
            primitives: per_second(|| Ok(encryption::fresh_agreement(&receiver).map(drop)?))?,
            encryptions: per_second(|| Ok(encryption::encrypt(&receiver, payload, 0).map(drop)?))?,
        })
    }
}

/// How many times `work` runs per second of this thread's CPU time, over about a second
/// of wall time. CPU time, like the engine's figures, so that other work on a shared
/// machine does not make the floor look lower than it is.
fn per_second(mut work: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let started = Instant::now();
    let cpu_before = thread_cpu();
    let mut done = 0u64;
    while started.elapsed() < Duration::from_secs(1) {
        work()?;
        done += 1;
    }
    let cpu = thread_cpu().saturating_sub(cpu_before);
    Ok(done as f64 / cpu.as_secs_f64().max(1e-9))
}

/// This thread's CPU time, with the clock's own resolution (nanoseconds here).
fn thread_cpu() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only into the timespec it is given.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// The payload the engine sends for [`LINE`] (give or take its id and time).
fn line_payload() -> Vec<u8> {
    PushMessage::Line(wire::ChatLine {
        id: u64::MAX,
        name: "member 0".into(),
        msg: LINE.into(),
        time: u64::MAX,
    })
    .to_payload(&DeliverySettings::default().chat_url)
}

/// Runs the benchmark as `args` say and prints its figures.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.members.is_empty() || args.members.contains(&0) {
        bail!("--members needs one or more counts above zero, e.g. --members 100,1000,10000");
    }
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    println!("measuring the floor on one core…");
    let floors = tokio::task::spawn_blocking(|| Floors::measure(&line_payload())).await??;
    let floor = floors.primitives * cores as f64;
    let primitives_us = 1e6 / floors.primitives;
    println!(
        "primitives (P-256 key pair + ECDH, OpenSSL): {:.0}/s per core ({primitives_us:.1} µs), \
         × {cores} cores = {floor:.0}/s: the floor",
        floors.primitives
    );
    println!(
        "encryption (the engine's whole RFC 8291 body): {:.0}/s per core ({:.1} µs)",
        floors.encryptions,
        1e6 / floors.encryptions
    );
    if !cfg!(feature = "peer") {
        println!(
            "peer (the web-push crate) not built in: build with \
             `cargo build --release -p server --features peer` to compare"
        );
    }

    // HTTP/1.1 first, so that the last machine-readable line is the default transport's.
    let receivers = match &args.push_service {
        Some(url) => vec![Receiver::External(url.trim_end_matches('/').to_owned())],
        None => vec![
            Receiver::Local(LocalReceiver::start(
                Transport::Http1Plain,
                args.decrypt_every,
            )?),
            Receiver::Local(LocalReceiver::start(
                Transport::Http2Tls,
                args.decrypt_every,
            )?),
        ],
    };
    println!(
        "{:>7}  {:<9} {:<17} {:>10}  {:>12}  {:>8}  {:>8}  {:>8}  {:>10}  {:>9}  {:>12}  {:>15}",
        "members",
        "transport",
        "endpoints",
        "msgs/s",
        "POST→last",
        "p50",
        "p99",
        "failed",
        "engine CPU",
        "CPU/push",
        "receiver CPU",
        "cold POST→last"
    );
    let mut summaries = Vec::new();
    for &members in &args.members {
        let rss_reset = reset_peak_rss();
        for receiver in &receivers {
            for &scenario in receiver.scenarios() {
                let (figures, subscriptions) = run_once(receiver, members, scenario).await?;
                print_figures(receiver, &figures);
                if figures.sampled != figures.sampled_ok {
                    bail!(
                        "only {} of {} sampled pushes decrypted to the line sent",
                        figures.sampled_ok,
                        figures.sampled
                    );
                }
                if scenario == Scenario::Healthy {
                    summaries.push(format!(
                        "fanout members={members} msgs_per_s={:.0} floor_per_s={floor:.0} cores={cores} ratio={:.2} p99_ms={} engine_cpu_us_per_push={:.1} primitives_us={primitives_us:.1} transport={}",
                        figures.msgs_per_sec(),
                        figures.msgs_per_sec() / floor,
                        figures.report.percentile(99).as_millis(),
                        figures.engine_cpu_per_push().as_secs_f64() * 1e6,
                        receiver.transport(),
                    ));
                }
                // The crate's own client trusts no certificate of ours: it meets the
                // receiver in the clear.
                #[cfg(feature = "peer")]
                if scenario == Scenario::Healthy
                    && local(receiver).is_some_and(|local| local.transport == Transport::Http1Plain)
                {
                    peer::compare(local(receiver), &subscriptions, &line_payload()).await?;
                }
                drop(subscriptions);
            }
        }
        let peak = peak_rss_kib().unwrap_or(0) / 1024;
        if rss_reset {
            println!("peak RSS while {members} members ran: {peak} MiB");
        } else {
            println!(
                "peak RSS of the process so far (this kernel cannot reset it, so it only grows): {peak} MiB"
            );
        }
    }
    // Machine-readable, one line per member count, the largest last.
    for summary in summaries {
        println!("{summary}");
    }
    Ok(())
}

fn print_figures(receiver: &Receiver, figures: &RunFigures) {
    let ms = |d: Duration| format!("{} ms", d.as_millis());
    let receiver_cpu = figures.receiver_cpu.map_or("external".into(), |cpu| {
        format!("{:.2} s", cpu.as_secs_f64())
    });
    println!(
        "{:>7}  {:<9} {:<17} {:>10.0}  {:>12}  {:>8}  {:>8}  {:>8}  {:>10}  {:>9}  {:>12}  {:>15}",
        figures.members,
        receiver.transport(),
        figures.scenario.name(),
        figures.msgs_per_sec(),
        ms(figures.post_to_last),
        ms(figures.report.percentile(50)),
        ms(figures.report.percentile(99)),
        figures.report.failed,
        format!("{:.2} s", figures.engine_cpu.as_secs_f64()),
        format!(
            "{:.0} µs",
            figures.engine_cpu_per_push().as_secs_f64() * 1e6
        ),
        receiver_cpu,
        ms(figures.cold_post_to_last),
    );
}

/// One fan-out to `count` members on a fresh server and store; also returns the members'
/// subscriptions.
async fn run_once(
    receiver: &Receiver,
    count: usize,
    scenario: Scenario,
) -> anyhow::Result<(RunFigures, Vec<Subscription>)> {
    let data_dir = tempfile::tempdir().context("cannot make a temporary data dir")?;
    let config = Config {
        addr: ([127, 0, 0, 1], 0).into(),
        data_dir: data_dir.path().to_owned(),
        vapid_subject: "mailto:bench@pushchat.example.org".into(),
        rules: ChatRules {
            endpoints: EndpointPolicy::local_testing(),
            history_limit: 200,
            chat_lines_per_minute: 30,
            members_per_address: usize::MAX,
            join_passphrase: None,
            stale_after: None,
        },
        delivery: DeliverySettings {
            allow_loopback_endpoints: true,
            extra_trusted_roots: local(receiver)
                .and_then(|local| local.push.certificate())
                .map(|der| vec![der.to_vec()])
                .unwrap_or_default(),
            ..DeliverySettings::default()
        },
        store: StoreLocation::Sled {
            cache_bytes: 64 << 20,
        },
        trusted_proxies: TrustedProxies::default(),
        admin_token: None,
        tls: None,
    };
    let (sender, sampled_ids, subscriptions) = seed(&config, receiver, count, scenario).await?;

    let state = crate::open(&config).await?;
    let mut reports = state.delivery.reports();
    let listener = TcpListener::bind(config.addr).await?;
    let url = format!("http://{}/api/chat", listener.local_addr()?);
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(crate::serve_until(listener, None, state, async {
        let _ = stopped.await;
    }));

    let http = reqwest::Client::new();
    let request = PostLineRequest {
        member: sender,
        msg: LINE.into(),
    };
    let (cold_post_to_last, _) = post_and_wait(&http, &url, &request, &mut reports, count).await?;
    let receiver_cpu_before = local(receiver).map(LocalReceiver::cpu);
    let process_cpu_before = process_cpu();
    let (post_to_last, report) = post_and_wait(&http, &url, &request, &mut reports, count).await?;
    let receiver_cpu = local(receiver).map(|r| {
        r.cpu()
            .saturating_sub(receiver_cpu_before.unwrap_or_default())
    });
    let engine_cpu = process_cpu()
        .saturating_sub(process_cpu_before)
        .saturating_sub(receiver_cpu.unwrap_or_default());

    let _ = stop.send(());
    server.await??;
    let (sampled, sampled_ok) = check_samples(receiver, &sampled_ids);
    let figures = RunFigures {
        members: count,
        scenario,
        cold_post_to_last,
        post_to_last,
        report,
        engine_cpu,
        receiver_cpu,
        sampled,
        sampled_ok,
    };
    Ok((figures, subscriptions))
}

/// Posts a chat line and waits until the engine has a final answer for each of its
/// `members` pushes (in batches); returns the time from the POST to then, and the
/// batches' reports as one.
async fn post_and_wait(
    http: &reqwest::Client,
    url: &str,
    request: &PostLineRequest,
    reports: &mut broadcast::Receiver<DeliveryReport>,
    members: usize,
) -> anyhow::Result<(Duration, DeliveryReport)> {
    let posted = Instant::now();
    let response = http.post(url).json(request).send().await?;
    if !response.status().is_success() {
        bail!(
            "the chat POST answered {}: {}",
            response.status(),
            response.text().await?
        );
    }
    let mut fan_out = DeliveryReport::default();
    let all_answered = async {
        while fan_out.latencies.len() < members {
            fan_out.absorb(reports.recv().await?);
        }
        Ok::<_, broadcast::error::RecvError>(())
    };
    tokio::time::timeout(RUN_DEADLINE, all_answered)
        .await
        .context("a fan-out did not finish within 5 minutes")?
        .context("missed the reports of a fan-out")?;
    Ok((posted.elapsed(), fan_out))
}

fn local(receiver: &Receiver) -> Option<&LocalReceiver> {
    match receiver {
        Receiver::Local(local) => Some(local),
        Receiver::External(_) => None,
    }
}

/// Makes the server's VAPID key and stores `count` members straight into the data dir's
/// store; returns the credentials of the first (the sender), the receiver ids of all and
/// their subscriptions.
async fn seed(
    config: &Config,
    receiver: &Receiver,
    count: usize,
    scenario: Scenario,
) -> anyhow::Result<(MemberCredentials, Vec<String>, Vec<Subscription>)> {
    let store = store::open(&config.store, &config.data_dir, 1).await?;
    // Members are bound to the key, so it must exist before they do.
    VapidKeys::load_or_create(&*store, config.vapid_subject.clone()).await?;
    let mut ids = Vec::with_capacity(count);
    let mut devices = Vec::with_capacity(count);
    let mut sender = None;
    for n in 0..count {
        let virtual_member = match receiver {
            Receiver::Local(local) => {
                let request = NewSubscriber {
                    application_server_key: None,
                    fault: scenario.fault(n),
                };
                local
                    .push
                    .add_subscriber(request)
                    .map_err(anyhow::Error::msg)?
            }
            Receiver::External(url) => external_member(url, n),
        };
        let subscription = subscription::validate(
            &virtual_member.subscription,
            &EndpointPolicy::local_testing(),
        )
        .with_context(|| format!("member {n}'s endpoint"))?;
        sender.get_or_insert_with(|| MemberCredentials {
            endpoint: subscription.endpoint.clone(),
            auth: subscription.auth.clone(),
        });
        devices.push(Device {
            name: format!("member {n}"),
            member_id: format!("member {n}"),
            subscription,
            joined: 0,
            joined_from: None,
            muted_until: None,
            last_seen: crate::model::clock::now_millis(),
            stale_warned: None,
        });
        ids.push(virtual_member.id);
    }
    // In one change: one write to disk, not one per member.
    let members = StoreContents {
        devices,
        ..StoreContents::default()
    };
    store.restore(&members).await?;
    let subscriptions = members
        .devices
        .into_iter()
        .map(|device| device.subscription)
        .collect();
    Ok((sender.context("no members")?, ids, subscriptions))
}

/// A member with fresh keys whose endpoint is under an external push service's URL.
fn external_member(url: &str, n: usize) -> VirtualSubscription {
    let secret = p256::SecretKey::random(&mut OsRng);
    let mut auth = [0u8; 16];
    OsRng.fill_bytes(&mut auth);
    VirtualSubscription {
        id: n.to_string(),
        subscription: wire::PushSubscription {
            endpoint: format!("{url}/{n}"),
            keys: wire::SubscriptionKeys {
                p256dh: URL_SAFE_NO_PAD.encode(secret.public_key().to_sec1_bytes()),
                auth: URL_SAFE_NO_PAD.encode(auth),
            },
        },
    }
}

/// How many pushes the local receiver decrypted, and how many of those were the line.
fn check_samples(receiver: &Receiver, ids: &[String]) -> (usize, usize) {
    let Receiver::Local(local) = receiver else {
        return (0, 0);
    };
    let decrypted: Vec<_> = ids
        .iter()
        .flat_map(|id| local.push.received_by(id))
        .filter(|push| push.payload.is_some())
        .collect();
    let ok = decrypted
        .iter()
        .filter(|push| matches!(push.message(), Some(PushMessage::Line(line)) if line.msg == LINE))
        .count();
    (decrypted.len(), ok)
}

/// This process's CPU time (user + system), all threads.
fn process_cpu() -> Duration {
    cpu_time(&PathBuf::from("/proc/self/stat")).unwrap_or_default()
}

/// utime + stime from a `/proc/.../stat` file.
fn cpu_time(stat: &PathBuf) -> Option<Duration> {
    let text = std::fs::read_to_string(stat).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_millis(ticks * 1000 / per_second))
}

/// Resets the kernel's peak-RSS mark of this process (`VmHWM`) to its present RSS, so
/// that each member count's peak is its own; false where the kernel does not allow it.
fn reset_peak_rss() -> bool {
    // Writing 5 to clear_refs resets the high-water mark (proc(5)); kernels before 4.0
    // refuse it.
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Peak resident set size of this process, in KiB.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
