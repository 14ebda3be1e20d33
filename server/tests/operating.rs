//! What running the server for months needs, on the real binary: a renewed TLS
//! certificate served without a restart (on SIGHUP, and when its files change), a broken
//! renewal refused while the old certificate stays, and logs a machine reads
//! (`--log-format json`).

mod support;

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::SystemTime,
};

use end2end::{eventually, Logs, PushchatProcess, Server, DEADLINE};
use localpush::{LocalPush, NewSubscriber};
use rcgen::CertifiedKey;
use serde_json::Value;
use support::*;

/// Bigger than any PEM file these tests write, so padded files all have one size.
const PADDED_LEN: usize = 4096;

/// A self-signed certificate for 127.0.0.1, and its key.
fn new_pair() -> CertifiedKey {
    rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap()
}

/// The two files `--tls-cert` and `--tls-key` name.
struct PairFiles {
    cert: PathBuf,
    key: PathBuf,
}

impl PairFiles {
    fn in_dir(dir: &Path) -> Self {
        PairFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        }
    }

    /// Writes `pair`, each file padded to [`PADDED_LEN`].
    fn write(&self, pair: &CertifiedKey) {
        std::fs::write(&self.cert, padded(&pair.cert.pem())).unwrap();
        std::fs::write(&self.key, padded(&pair.key_pair.serialize_pem())).unwrap();
    }

    /// Writes `pair` in place and gives both files back their modification time: with
    /// the padding, nothing the server watches changes, so only a signal can make it
    /// read them.
    fn write_unnoticed(&self, pair: &CertifiedKey) {
        let modified = |path: &Path| std::fs::metadata(path).unwrap().modified().unwrap();
        let (cert, key) = (modified(&self.cert), modified(&self.key));
        self.write(pair);
        set_modified(&self.cert, cert);
        set_modified(&self.key, key);
    }

    fn args(&self) -> [&str; 4] {
        [
            "--tls-cert",
            self.cert.to_str().unwrap(),
            "--tls-key",
            self.key.to_str().unwrap(),
        ]
    }
}

/// PEM text ends at its last line; blank lines after it are allowed.
fn padded(pem: &str) -> String {
    assert!(pem.len() < PADDED_LEN);
    format!("{pem}{}", "\n".repeat(PADDED_LEN - pem.len()))
}

fn set_modified(path: &Path, modified: SystemTime) {
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(modified).unwrap();
}

/// `pushchat serve` over HTTPS with `files`, logging at info.
async fn https_server(dir: &Path, files: &PairFiles) -> (PushchatProcess, Logs) {
    let data_dir = dir.join("data");
    std::fs::create_dir(&data_dir).unwrap();
    let started = PushchatProcess::start_logged(
        Path::new(PUSHCHAT),
        &data_dir,
        &data_dir,
        &files.args(),
        "info",
    )
    .await;
    assert!(started.0.url.starts_with("https://"), "{}", started.0.url);
    started
}

/// The certificate the server at `url` presents to a new connection, from a client that
/// trusts each of `pairs`.
async fn served(url: &str, pairs: &[&CertifiedKey]) -> Vec<u8> {
    let mut client = reqwest::Client::builder().tls_info(true);
    for pair in pairs {
        client =
            client.add_root_certificate(reqwest::Certificate::from_der(pair.cert.der()).unwrap());
    }
    // A client of its own per look, so every look is a new handshake.
    let response = client
        .build()
        .unwrap()
        .get(format!("{url}/healthz"))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    let tls = response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .unwrap();
    tls.peer_certificate().unwrap().to_vec()
}

/// Waits until new connections to `url` are served `pair`.
async fn wait_until_served(url: &str, pair: &CertifiedKey, trusted: &[&CertifiedKey], what: &str) {
    let wanted = pair.cert.der().to_vec();
    eventually(what, || async {
        (served(url, trusted).await == wanted).then_some(())
    })
    .await;
}

/// Waits for a log line holding every one of `parts`, and returns it.
async fn logged(logs: &Logs, parts: &[&str]) -> String {
    eventually(&format!("a log line with {parts:?}"), || async {
        logs.lines()
            .into_iter()
            .find(|line| parts.iter().all(|part| line.contains(part)))
    })
    .await
}

#[tokio::test]
async fn test_sighup_serves_the_renewed_certificate_to_new_connections() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (new_pair(), new_pair());
    let files = PairFiles::in_dir(dir.path());
    files.write(&old);
    let (server, logs) = https_server(dir.path(), &files).await;
    let trusted = [&old, &new];
    assert_eq!(served(&server.url, &trusted).await, old.cert.der().to_vec());

    files.write_unnoticed(&new);
    server.signal(libc::SIGHUP);
    wait_until_served(
        &server.url,
        &new,
        &trusted,
        "the new certificate after SIGHUP",
    )
    .await;
    logged(&logs, &["serving the TLS certificate read again", "SIGHUP"]).await;
    // Still serving, now that it has taken SIGHUP.
    assert!(server.pid().is_some());
    assert_eq!(served(&server.url, &trusted).await, new.cert.der().to_vec());
}

#[tokio::test]
async fn test_a_renewal_on_disk_is_served_without_a_signal() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second, third) = (new_pair(), new_pair(), new_pair());
    // As certbot keeps them: live/*.pem are symlinks into archive/, which a renewal
    // points at new files.
    let (live, archive) = (dir.path().join("live"), dir.path().join("archive"));
    std::fs::create_dir(&live).unwrap();
    std::fs::create_dir(&archive).unwrap();
    let files = PairFiles::in_dir(&live);
    let point_at = |generation: u32, pair: &CertifiedKey| {
        let archived = PairFiles {
            cert: archive.join(format!("cert{generation}.pem")),
            key: archive.join(format!("key{generation}.pem")),
        };
        archived.write(pair);
        for (link, target) in [(&files.cert, &archived.cert), (&files.key, &archived.key)] {
            let fresh = link.with_extension("new");
            std::os::unix::fs::symlink(target, &fresh).unwrap();
            std::fs::rename(&fresh, link).unwrap();
        }
    };
    point_at(1, &first);
    let (server, logs) = https_server(dir.path(), &files).await;
    let trusted = [&first, &second, &third];
    assert_eq!(
        served(&server.url, &trusted).await,
        first.cert.der().to_vec()
    );

    point_at(2, &second);
    wait_until_served(
        &server.url,
        &second,
        &trusted,
        "the certificate the links point at",
    )
    .await;
    logged(
        &logs,
        &["serving the TLS certificate read again", "a file changed"],
    )
    .await;

    // A pair written over the files in place is seen too.
    let targets = PairFiles {
        cert: std::fs::canonicalize(&files.cert).unwrap(),
        key: std::fs::canonicalize(&files.key).unwrap(),
    };
    targets.write(&third);
    wait_until_served(
        &server.url,
        &third,
        &trusted,
        "the certificate written in place",
    )
    .await;
}

#[tokio::test]
async fn test_a_broken_renewal_is_refused_and_the_old_certificate_stays() {
    let dir = tempfile::tempdir().unwrap();
    let (old, other, fixed) = (new_pair(), new_pair(), new_pair());
    let files = PairFiles::in_dir(dir.path());
    files.write(&old);
    let (server, logs) = https_server(dir.path(), &files).await;
    let trusted = [&old, &other, &fixed];
    let key = files.key.to_str().unwrap();

    // A new certificate whose key is another's.
    std::fs::write(&files.cert, other.cert.pem()).unwrap();
    std::fs::write(&files.key, fixed.key_pair.serialize_pem()).unwrap();
    let warning = logged(&logs, &["WARN", "refused the new TLS certificate", key]).await;
    assert!(warning.contains("do not make a usable pair"), "{warning}");
    assert_eq!(served(&server.url, &trusted).await, old.cert.der().to_vec());

    // SIGHUP refuses it too, and so a key file that holds no key.
    std::fs::write(&files.key, "not a key").unwrap();
    server.signal(libc::SIGHUP);
    let warning = logged(&logs, &["refused the new TLS certificate", "SIGHUP", key]).await;
    assert!(warning.contains("cannot read a private key"), "{warning}");
    assert_eq!(served(&server.url, &trusted).await, old.cert.der().to_vec());

    // A good pair after broken ones is taken.
    files.write(&fixed);
    wait_until_served(&server.url, &fixed, &trusted, "the pair that was fixed").await;
}

#[tokio::test]
async fn test_json_logs_are_one_object_per_line_with_the_fan_out_fields() {
    let push = LocalPush::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let data_dir = tempfile::tempdir().unwrap();
    let (process, logs) = PushchatProcess::start_logged(
        Path::new(PUSHCHAT),
        data_dir.path(),
        data_dir.path(),
        &["--log-format", "json"],
        "info",
    )
    .await;
    let server = Server::client_of(process);
    let key = server.vapid_key().await;
    let mut members = Vec::new();
    for name in ["Ann", "Bo"] {
        let member = push
            .client()
            .subscribe(&NewSubscriber {
                application_server_key: Some(key.clone()),
                fault: None,
            })
            .await
            .unwrap();
        server.subscribe(name, &member).await;
        members.push(member);
    }
    server.chat(&members[0], "hello, machines").await;

    let fan_out = eventually("a fan-out that delivered a chat line", || async {
        parsed(&logs).into_iter().find(|event| {
            event["fields"]["message"] == "fan-out done" && event["fields"]["delivered"] == 1
        })
    })
    .await;
    assert_eq!(fan_out["level"], "INFO", "{fan_out}");
    for field in ["gone", "failed", "retried", "elapsed_ms", "p99_ms"] {
        assert!(fan_out["fields"][field].is_u64(), "{field}: {fan_out}");
    }
    assert!(fan_out["timestamp"].is_string(), "{fan_out}");
}

#[tokio::test]
async fn test_with_json_logs_a_failed_start_is_logged_as_json_too() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = tokio::process::Command::new(PUSHCHAT);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PUSHCHAT_") {
            command.env_remove(name);
        }
    }
    // No --vapid-subject: refused at start.
    command
        .args(["serve", "--log-format", "json", "--data-dir"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(DEADLINE, command.output())
        .await
        .expect("pushchat exits within the deadline")
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    let events: Vec<Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    let stopped = events.last().expect("a log line");
    assert_eq!(stopped["level"], "ERROR", "{stopped}");
    let error = stopped["fields"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("--vapid-subject"), "{stopped}");
}

/// Every line logged so far, each of which must be a JSON object.
fn parsed(logs: &Logs) -> Vec<Value> {
    logs.lines()
        .iter()
        .map(|line| match serde_json::from_str::<Value>(line) {
            Ok(event) if event.is_object() => event,
            _ => panic!("not a JSON object: {line}"),
        })
        .collect()
}
