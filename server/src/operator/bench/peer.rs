//! The bench's peer: the same chat line sent to the same members by the `web-push`
//! crate, as its README shows a Rust user doing it (its own client, here the hyper one;
//! one VAPID signature and one `send` per member), 2,048 sends at once. It shows what
//! the engine adds, or saves, over the library one would pick. Built only with the
//! feature `peer`, never into the production binary.
//!
//! The crate's hyper client keeps as many connections as it ever opened (2 descriptors
//! each in this process, with the receiver's end), so before the engine's next run the
//! peer drops it and waits, at most a minute, for those descriptors to close.
//!
//! One departure from the README: the JWT's `aud` is set to the endpoint's origin with its
//! port, as `add_claim` allows, since the crate leaves the port out and the local push
//! service, like the strict real ones, refuses that.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use p256::pkcs8::{EncodePrivateKey, LineEnding};
use tokio::{sync::Semaphore, task::JoinSet};
use url::Url;
use web_push::{
    ContentEncoding, HyperWebPushClient, PartialVapidSignatureBuilder, SubscriptionInfo,
    VapidSignatureBuilder, WebPushClient, WebPushMessageBuilder,
};

use super::{process_cpu, LocalReceiver};
use crate::model::subscription::Subscription;

/// Sends at once, as a typical user's `buffer_unordered` or `JoinSet` would.
const AT_ONCE: usize = 2048;

/// Sends `payload` to every one of `members` with the `web-push` crate and prints its rate,
/// CPU time and CPU per push, as the engine's line does above it.
pub(super) async fn compare(
    receiver: Option<&LocalReceiver>,
    members: &[Subscription],
    payload: &[u8],
) -> anyhow::Result<()> {
    let pem = p256::SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng)
        .to_pkcs8_pem(LineEnding::LF)
        .context("cannot make the peer's VAPID key")?;
    let vapid = VapidSignatureBuilder::from_pem_no_sub(pem.as_bytes())?;
    let client = HyperWebPushClient::new();
    let payload: Arc<[u8]> = payload.into();
    let slots = Arc::new(Semaphore::new(AT_ONCE));

    let descriptors_before = open_descriptors();
    let receiver_cpu_before = receiver.map(LocalReceiver::cpu).unwrap_or_default();
    let cpu_before = process_cpu();
    let started = Instant::now();
    let mut sends = JoinSet::new();
    for member in members {
        let slot = Arc::clone(&slots).acquire_owned().await?;
        let (client, vapid, payload) = (client.clone(), vapid.clone(), Arc::clone(&payload));
        let member = member.clone();
        sends.spawn(async move {
            let sent = send(&client, vapid, &member, &payload).await;
            drop(slot);
            sent
        });
    }
    let mut failed = 0usize;
    let mut first_error = None;
    while let Some(sent) = sends.join_next().await {
        if let Err(error) = sent.map_err(anyhow::Error::from).and_then(|sent| sent) {
            failed += 1;
            first_error.get_or_insert(error);
        }
    }
    let elapsed = started.elapsed();
    let receiver_cpu = receiver
        .map(LocalReceiver::cpu)
        .unwrap_or_default()
        .saturating_sub(receiver_cpu_before);
    let cpu = process_cpu()
        .saturating_sub(cpu_before)
        .saturating_sub(receiver_cpu);
    println!(
        "{:>7}  {:<9} {:<17} {:>10.0}  {:>12}  {:>8}  {:>8}  {:>8}  {:>10}  {:>9}  {:>12}",
        members.len(),
        "http1.1",
        "peer: web-push",
        members.len() as f64 / elapsed.as_secs_f64(),
        format!("{} ms", elapsed.as_millis()),
        "",
        "",
        failed,
        format!("{:.2} s", cpu.as_secs_f64()),
        format!(
            "{:.0} µs",
            cpu.as_secs_f64() * 1e6 / members.len().max(1) as f64
        ),
        format!("{:.2} s", receiver_cpu.as_secs_f64()),
    );
    if let Some(error) = first_error {
        println!("  peer's first failure: {error:#}");
    }
    drop(client);
    let deadline = Instant::now() + Duration::from_secs(60);
    while open_descriptors() > descriptors_before + 64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// File descriptors this process has open.
fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |entries| entries.count())
}

/// One push, as the crate's README writes it.
async fn send(
    client: &HyperWebPushClient,
    vapid: PartialVapidSignatureBuilder,
    member: &Subscription,
    payload: &[u8],
) -> anyhow::Result<()> {
    let info = SubscriptionInfo::new(&member.endpoint, &member.p256dh, &member.auth);
    let audience = Url::parse(&member.endpoint)?.origin().ascii_serialization();
    let mut signature = vapid.add_sub_info(&info);
    signature.add_claim("sub", "mailto:bench@pushchat.example.org");
    signature.add_claim("aud", audience);
    let mut message = WebPushMessageBuilder::new(&info);
    message.set_payload(ContentEncoding::Aes128Gcm, payload);
    message.set_vapid_signature(signature.build()?);
    client.send(message.build()?).await?;
    Ok(())
}
