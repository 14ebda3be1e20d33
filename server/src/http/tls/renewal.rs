//! Renewing the served certificate without a restart: on SIGHUP (`systemctl reload`),
//! and when `--tls-cert` or `--tls-key` changes on disk, the pair is read again and
//! serves the next handshakes. A pair that cannot be served (unreadable, half written,
//! a key of another certificate) is refused with a warning naming the file and why, and
//! the pair in use stays.
//!
//! Changes are found by looking at the files every [`POLL_INTERVAL`], following
//! symlinks: certbot renews by pointing `live/NAME/*.pem` at new files in `archive/`,
//! Kubernetes by swapping a symlinked directory, others by writing in place or renaming
//! over. The identity and modification time of the file a path leads to change in every
//! one of these, whereas a watch on the file itself (inotify) is lost when the file is
//! replaced, and a watch on its directory misses a change further along the symlinks.
//! Two `stat` calls every few seconds cost nothing; a renewal waits a few seconds at most.

use std::{io, os::unix::fs::MetadataExt, path::Path, sync::Arc, time::Duration};

use tokio::{
    signal::unix::{signal, SignalKind},
    task::JoinHandle,
};

use super::ServedCertificate;

/// How often the files are looked at.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// Reloads `certificate` on SIGHUP and when its files change, until aborted. SIGHUP is
/// taken from the moment this returns, so it never ends the process.
pub(super) fn keep_renewed(certificate: Arc<ServedCertificate>) -> io::Result<JoinHandle<()>> {
    let mut hangups = signal(SignalKind::hangup())?;
    // Looked at now, not when the task first runs: a change made in between (the task may
    // wait for a busy runtime) would otherwise be taken as the files in use.
    let mut seen = FilesSeen::of(&certificate);
    Ok(tokio::spawn(async move {
        let mut ticks = tokio::time::interval(POLL_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let cause = tokio::select! {
                _ = hangups.recv() => "SIGHUP",
                _ = ticks.tick() => {
                    if FilesSeen::of(&certificate) == seen {
                        continue;
                    }
                    "a file changed"
                }
            };
            // Noted before reading, so a pair refused now is tried again only once
            // either file changes again (its writer finishing, say), not every tick.
            seen = FilesSeen::of(&certificate);
            reload(&certificate, cause);
        }
    }))
}

fn reload(certificate: &ServedCertificate, cause: &str) {
    let (cert, key) = (
        certificate.files.cert.display(),
        certificate.files.key.display(),
    );
    match certificate.reload() {
        Ok(()) => tracing::info!(%cert, %key, cause, "serving the TLS certificate read again"),
        Err(error) => tracing::warn!(
            %error,
            cause,
            "refused the new TLS certificate; new connections get the one in use"
        ),
    }
}

/// Without TLS there is nothing to reload, but SIGHUP (`systemctl reload`) must not end
/// the server, as it would by default: it is logged instead, until aborted.
pub fn answer_hangups_without_tls() -> io::Result<JoinHandle<()>> {
    let mut hangups = signal(SignalKind::hangup())?;
    Ok(tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP: nothing to reload without --tls-cert");
        }
    }))
}

/// What the two paths lead to, as far as telling a new file from the old one goes.
#[derive(PartialEq, Eq)]
struct FilesSeen([Option<FileSeen>; 2]);

#[derive(PartialEq, Eq)]
struct FileSeen {
    device: u64,
    inode: u64,
    modified: (i64, i64),
    len: u64,
}

impl FilesSeen {
    fn of(certificate: &ServedCertificate) -> Self {
        let files = &certificate.files;
        FilesSeen([FileSeen::of(&files.cert), FileSeen::of(&files.key)])
    }
}

impl FileSeen {
    /// `None` while it cannot be looked at (missing, say): its coming back is a change.
    fn of(path: &Path) -> Option<Self> {
        let metadata = std::fs::metadata(path).ok()?;
        Some(FileSeen {
            device: metadata.dev(),
            inode: metadata.ino(),
            modified: (metadata.mtime(), metadata.mtime_nsec()),
            len: metadata.len(),
        })
    }
}
