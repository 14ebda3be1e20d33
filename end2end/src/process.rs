//! The `pushchat` binary running for a test: started on a port of its choosing, with
//! the address it printed, killed when the test drops it.

use std::{path::Path, process::Stdio};

use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

use crate::DEADLINE;

/// The contact every test's server names in its VAPID JWTs (`--vapid-subject`).
pub const SUBJECT: &str = "mailto:tests@pushchat.example.org";

/// A running `pushchat serve` on `127.0.0.1` with a port of its choosing and loopback
/// endpoints allowed. Killed when dropped.
pub struct PushchatProcess {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub url: String,
}

impl PushchatProcess {
    /// Starts `binary` in `workdir` (where it finds the site, `target/site`) on `data_dir`,
    /// with `extra_args` after the ones every test needs.
    pub async fn start(
        binary: &Path,
        workdir: &Path,
        data_dir: &Path,
        extra_args: &[&str],
    ) -> Self {
        let mut child = Command::new(binary)
            .current_dir(workdir)
            .args([
                "serve",
                "--addr",
                "127.0.0.1:0",
                "--allow-loopback-endpoints",
            ])
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--vapid-subject", SUBJECT])
            .args(extra_args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", binary.display()));
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(stdout).lines();
        let url = tokio::time::timeout(DEADLINE, async {
            while let Some(line) = lines.next_line().await.expect("stdout is readable") {
                if let Some(url) = line.strip_prefix("pushchat listening on ") {
                    return url.to_owned();
                }
            }
            panic!("pushchat exited before listening");
        })
        .await
        .expect("pushchat listens within the deadline");
        // Keep reading, so that anything it prints later never meets a closed pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        PushchatProcess { child, url }
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// SIGKILL: no graceful shutdown, so only what was flushed survives.
    pub async fn kill(mut self) {
        self.child.kill().await.expect("pushchat can be killed");
    }
}
