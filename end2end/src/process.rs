//! The `pushchat` binary running for a test: started on a port of its choosing, with
//! the address it printed, killed when the test drops it.

use std::{
    path::Path,
    process::Stdio,
    sync::{Arc, Mutex},
};

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
    /// Starts `binary` in `workdir` on `data_dir`, with `extra_args` after the ones every
    /// test needs. It serves the site it carries (or, built before any site existed,
    /// `target/site` under `workdir`).
    pub async fn start(
        binary: &Path,
        workdir: &Path,
        data_dir: &Path,
        extra_args: &[&str],
    ) -> Self {
        let mut command = Command::new(binary);
        command.env("RUST_LOG", "warn");
        PushchatProcess::launch(command, workdir, data_dir, extra_args).await
    }

    /// Like [`start`](Self::start), serving the site in the folder `site` (a changed copy,
    /// say) rather than the one the binary carries.
    pub async fn start_on_site(
        binary: &Path,
        site: &Path,
        data_dir: &Path,
        extra_args: &[&str],
    ) -> Self {
        let mut command = Command::new(binary);
        command
            .env("RUST_LOG", "warn")
            .env("LEPTOS_SITE_ROOT", site);
        PushchatProcess::launch(command, data_dir, data_dir, extra_args).await
    }

    /// Like [`start`](Self::start), logging at `filter` (`RUST_LOG`) into the returned
    /// [`Logs`] rather than the test's own stderr.
    pub async fn start_logged(
        binary: &Path,
        workdir: &Path,
        data_dir: &Path,
        extra_args: &[&str],
        filter: &str,
    ) -> (Self, Logs) {
        let mut command = Command::new(binary);
        command.env("RUST_LOG", filter).stderr(Stdio::piped());
        let mut process = PushchatProcess::launch(command, workdir, data_dir, extra_args).await;
        let stderr = process.child.stderr.take().expect("stderr is piped");
        let logs = Logs::default();
        let kept = Arc::clone(&logs.lines);
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                kept.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        (process, logs)
    }

    async fn launch(
        mut command: Command,
        workdir: &Path,
        data_dir: &Path,
        extra_args: &[&str],
    ) -> Self {
        let binary = Path::new(command.as_std().get_program()).to_owned();
        let mut child = command
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

    /// Sends `signal` (`libc::SIGHUP`, say) to the process, while it runs.
    pub fn signal(&self, signal: i32) {
        let pid = self.pid().expect("pushchat runs") as i32;
        // SAFETY: kill(2) takes any pid and signal number and touches no memory of ours.
        let sent = unsafe { libc::kill(pid, signal) };
        assert_eq!(sent, 0, "cannot signal pushchat");
    }

    /// SIGKILL: no graceful shutdown, so only what was flushed survives.
    pub async fn kill(mut self) {
        self.child.kill().await.expect("pushchat can be killed");
    }
}

/// What a process started with [`PushchatProcess::start_logged`] has written to stderr
/// so far, line by line.
#[derive(Clone, Default)]
pub struct Logs {
    lines: Arc<Mutex<Vec<String>>>,
}

impl Logs {
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
