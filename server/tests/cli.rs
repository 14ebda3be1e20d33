//! The operator's subcommands, run as the real `pushchat` binary on temporary data dirs:
//! each one's happy path with a server running (through its admin socket) and stopped
//! (opening the data dir), and its clear errors. Also the admin API over HTTP.

mod support;

use std::{ffi::OsStr, path::Path, process::Output};

use app::wire::PushMessage;
use end2end::{
    eventually, join_body, left, messages, received, Fixture, Server, DEADLINE, SUBJECT,
};
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::*;
use tokio::process::Command;

/// Runs `pushchat ARGS` with none of the environment's PUSHCHAT_ settings; a command
/// still running after [`DEADLINE`] (a `serve` that was meant to refuse) fails the test.
async fn pushchat<I, A>(args: I) -> Output
where
    I: IntoIterator<Item = A>,
    A: AsRef<OsStr>,
{
    let mut command = Command::new(PUSHCHAT);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PUSHCHAT_") {
            command.env_remove(name);
        }
    }
    command
        .args(args)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true);
    tokio::time::timeout(DEADLINE, command.output())
        .await
        .expect("pushchat exits within the deadline")
        .unwrap()
}

/// Runs `pushchat ARGS --data-dir DIR`; returns its stdout, asserting it succeeded.
async fn succeeds(args: &[&str], data_dir: &Path) -> String {
    let output = pushchat(with_data_dir(args, data_dir)).await;
    let (stdout, stderr) = texts(&output);
    assert!(output.status.success(), "{args:?}: {stderr}{stdout}");
    stdout
}

/// Runs `pushchat ARGS --data-dir DIR`; returns its stderr, asserting it failed.
async fn fails(args: &[&str], data_dir: &Path) -> String {
    let output = pushchat(with_data_dir(args, data_dir)).await;
    let (stdout, stderr) = texts(&output);
    assert!(!output.status.success(), "{args:?} succeeded: {stdout}");
    // Ours, or clap's for a command line it cannot parse.
    assert!(
        stderr.starts_with("pushchat: ") || stderr.starts_with("error: "),
        "{stderr}"
    );
    stderr
}

fn with_data_dir<'a>(args: &'a [&'a str], data_dir: &'a Path) -> Vec<&'a OsStr> {
    let mut all: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    all.extend([OsStr::new("--data-dir"), data_dir.as_os_str()]);
    all
}

fn texts(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn test_the_server_refuses_to_start_without_a_contact_or_with_a_local_one() {
    let dir = tempfile::tempdir().unwrap();
    let stderr = fails(&["serve", "--addr", "127.0.0.1:0"], dir.path()).await;
    assert!(stderr.contains("--vapid-subject mailto:"), "{stderr}");
    let args = ["serve", "--vapid-subject", "mailto:me@box.local"];
    let stderr = fails(&args, dir.path()).await;
    assert!(stderr.contains("Apple"), "{stderr}");
    assert!(!dir.path().join("vapid_private_key.pem").exists());
}

#[tokio::test]
async fn test_subcommands_on_a_missing_data_dir_say_what_to_do() {
    let parent = tempfile::tempdir().unwrap();
    let missing = parent.path().join("nothing-here");
    for args in [
        &["members"][..],
        &["vapid", "show"],
        &["vapid", "generate"],
        &["send", "hello"],
        &["backup", "/dev/null"],
    ] {
        let stderr = fails(args, &missing).await;
        assert!(
            stderr.contains("holds no pushchat data"),
            "{args:?}: {stderr}"
        );
        assert!(stderr.contains("--data-dir"), "{args:?}: {stderr}");
    }
    assert!(!missing.exists(), "a subcommand created the data dir");
}

#[tokio::test]
async fn test_members_are_listed_removed_and_banned_through_the_running_server() {
    let fx = Fixture::new(PUSHCHAT).await;
    let [ann, bo] = fx.members(["Ann", "Bo"]).await;
    received(&fx.pushes(), &ann, 2).await;
    let dir = fx.data_dir.path();

    let listing = succeeds(&["members"], dir).await;
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines.len(), 3, "{listing}");
    assert!(
        lines[1].starts_with("Ann ") && lines[2].starts_with("Bo "),
        "{listing}"
    );
    assert!(lines[1].contains("127.0.0.1"), "{listing}");
    assert!(lines[1].contains("delivered"), "{listing}");

    let done = succeeds(&["members", "remove", "ann", "--ban"], dir).await;
    assert!(done.contains("removed ann and banned"), "{done}");
    let bo_got = received(&fx.pushes(), &bo, 2).await;
    assert!(messages(&bo_got).contains(&left(&["Ann"])));
    let (status, answer) = fx
        .server
        .post("/api/subscribe", &join_body("ANN", &ann.subscription))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("banned"),
        "{answer}"
    );

    let stderr = fails(&["members", "remove", "Cy"], dir).await;
    assert!(stderr.contains("No member is called \"Cy\""), "{stderr}");
    succeeds(&["members", "unban", "Ann"], dir).await;
    fx.server.subscribe("Ann", &ann).await;
}

#[tokio::test]
async fn test_send_pushes_a_notice_to_one_member_or_everyone_and_reports() {
    let fx = Fixture::new(PUSHCHAT).await;
    let [ann, bo] = fx.members(["Ann", "Bo"]).await;
    let pushes = fx.pushes();
    received(&pushes, &ann, 2).await;
    received(&pushes, &bo, 1).await;
    let dir = fx.data_dir.path();

    let report = succeeds(&["send", "--to", "bo", "just you"], dir).await;
    assert!(
        report.starts_with("delivered to 1, gone 0, failed 0"),
        "{report}"
    );
    let report = succeeds(&["send", "everyone"], dir).await;
    assert!(report.starts_with("delivered to 2,"), "{report}");
    let notice = |text: &str| PushMessage::Notice { text: text.into() };
    let bo_got = messages(&received(&pushes, &bo, 3).await);
    let bo_notices: Vec<&PushMessage> = (bo_got.iter())
        .filter(|message| matches!(message, PushMessage::Notice { .. }))
        .collect();
    assert_eq!(bo_notices, [&notice("everyone"), &notice("just you")]);
    let ann_got = messages(&received(&pushes, &ann, 3).await);
    assert!(!ann_got.contains(&notice("just you")));
    assert!(fails(&["send", "--to", "Cy", "hi"], dir)
        .await
        .contains("No member"));

    // With the server stopped, send opens the data dir and delivers itself.
    let fx = fx.stopped().await;
    let args = ["send", "--allow-loopback-endpoints", "while you were out"];
    let report = succeeds(&args, fx.data_dir.path()).await;
    assert!(report.starts_with("delivered to 2,"), "{report}");
    received(&pushes, &ann, 4).await;
}

#[tokio::test]
async fn test_vapid_show_and_generate_guard_the_members_subscriptions() {
    let fx = Fixture::new(PUSHCHAT).await;
    fx.members(["Ann"]).await;
    let key = fx.server.vapid_key().await;
    let dir = fx.data_dir.path();
    let shown = succeeds(&["vapid", "show"], dir).await;
    assert!(shown.contains(&key) && shown.contains(SUBJECT), "{shown}");
    let stderr = fails(&["vapid", "generate", "--force"], dir).await;
    assert!(stderr.contains("stop it first"), "{stderr}");

    let fx = fx.stopped().await;
    let dir = fx.data_dir.path();
    let shown = succeeds(&["vapid", "show"], dir).await;
    assert!(shown.contains(&key) && shown.contains(SUBJECT), "{shown}");
    let stderr = fails(&["vapid", "generate"], dir).await;
    assert!(
        stderr.contains("--force") && stderr.contains("subscribe again"),
        "{stderr}"
    );
    let made = succeeds(&["vapid", "generate", "--force"], dir).await;
    assert!(made.contains("removed 1 members"), "{made}");
    assert!(!made.contains(&key));
    assert_eq!(mode(&dir.join("vapid_private_key.pem")) & 0o777, 0o600);
    assert_eq!(succeeds(&["members"], dir).await.trim(), "no members");
}

#[tokio::test]
async fn test_a_backup_restored_into_a_fresh_data_dir_is_the_same_chat() {
    let fx = Fixture::new(PUSHCHAT).await;
    let [ann, bo] = fx.members(["Ann", "Bo"]).await;
    let line = fx.server.chat(&ann, "keep me").await;
    let key = fx.server.vapid_key().await;
    let room = fx.server.init("Bo", &bo).await;
    let backups = tempfile::tempdir().unwrap();
    let file = backups.path().join("chat.json");
    let file_arg = file.to_str().unwrap();

    let done = succeeds(&["backup", file_arg], fx.data_dir.path()).await;
    assert!(
        done.contains("2 members (2 devices), 1 chat lines"),
        "{done}"
    );
    assert_eq!(mode(&file) & 0o777, 0o600);
    assert!(fails(&["backup", file_arg], fx.data_dir.path())
        .await
        .contains("must not exist"));
    let stderr = fails(&["restore", file_arg], fx.data_dir.path()).await;
    assert!(stderr.contains("stop it first"), "{stderr}");

    let fresh = backups.path().join("restored");
    succeeds(&["restore", file_arg], &fresh).await;
    let stderr = fails(&["restore", file_arg], &fresh).await;
    assert!(stderr.contains("already holds a chat"), "{stderr}");
    let restored = Server::start(PUSHCHAT, &fresh, &[]).await;
    assert_eq!(restored.vapid_key().await, key);
    let again = restored.init("Bo", &bo).await;
    assert_eq!(again, room);
    assert_eq!(again.history, vec![line.clone()]);
    let next = restored.chat(&ann, "after").await;
    assert!(next.id > line.id);
    drop(restored);

    // A backup of a build before the queue of fan-outs kept unsent lines as `unsent`:
    // restored, they go out again to every member.
    let mut old: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let old = old.as_object_mut().unwrap();
    assert_eq!(old.remove("fan_outs"), Some(json!([])));
    old.insert("unsent".into(), json!([line]));
    let old_file = backups.path().join("old.json");
    std::fs::write(&old_file, serde_json::to_vec(old).unwrap()).unwrap();
    let older = backups.path().join("restored-old");
    succeeds(&["restore", old_file.to_str().unwrap()], &older).await;
    let _restored = Server::start(PUSHCHAT, &older, &[]).await;
    let again = PushMessage::Line(line);
    let pushes = fx.pushes();
    for member in [&ann, &bo] {
        let got = eventually("the unsent line", || async {
            let got = messages(&pushes.received(&member.id).await.unwrap());
            (got.iter().filter(|message| **message == again).count() == 2).then_some(())
        });
        got.await;
    }
}

#[tokio::test]
async fn test_the_admin_api_over_http_needs_the_token() {
    let token = "a-token-of-enough-length";
    let fx = Fixture::with_args(PUSHCHAT, &["--admin-token", token]).await;
    let [ann, _bo] = fx.members(["Ann", "Bo"]).await;
    received(&fx.pushes(), &ann, 2).await;
    let url = format!("{}/api/admin/push", fx.server.base);
    let body = json!({"to": null, "text": "hello all"});
    let push = |bearer: Option<&str>| {
        let mut request = fx.server.http.post(&url).json(&body);
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        request.send()
    };

    for wrong in [None, Some("a-token-of-enough-lengtH"), Some("")] {
        let response = push(wrong).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let answer: Value = response.json().await.unwrap();
        assert!(
            answer["error"].as_str().unwrap().contains("Bearer"),
            "{answer}"
        );
    }
    let response = push(Some(token)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let report: Value = response.json().await.unwrap();
    assert_eq!(
        (report["delivered"].as_u64(), report["failed"].as_u64()),
        (Some(2), Some(0))
    );
    received(&fx.pushes(), &ann, 3).await;
    // Every member's push secret: only on the admin socket.
    let contents = fx
        .server
        .http
        .get(format!("{}/api/admin/contents", fx.server.base));
    let response = contents.bearer_auth(token).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    let off = Fixture::new(PUSHCHAT).await;
    let (status, answer) = off.server.post("/api/admin/push", &body).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        answer["error"].as_str().unwrap().contains("--admin-token"),
        "{answer}"
    );
}

#[tokio::test]
async fn test_a_short_admin_token_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "serve",
        "--vapid-subject",
        SUBJECT,
        "--admin-token",
        "short",
    ];
    let stderr = fails(&args, dir.path()).await;
    assert!(
        stderr.contains("--admin-token must be at least 16"),
        "{stderr}"
    );
}

#[tokio::test]
async fn test_a_stale_after_that_is_no_number_of_days_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["0", "sixty"] {
        let args = ["serve", "--vapid-subject", SUBJECT, "--stale-after", bad];
        let stderr = fails(&args, dir.path()).await;
        assert!(
            stderr.contains("--stale-after must be a number of days"),
            "{stderr}"
        );
    }
}

#[tokio::test]
async fn test_tls_files_that_do_not_fit_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    std::fs::write(&cert, "not a certificate").unwrap();
    let cert = cert.to_str().unwrap();
    let args = ["serve", "--vapid-subject", SUBJECT, "--tls-cert", cert];
    let stderr = fails(&args, dir.path()).await;
    assert!(stderr.contains("--tls-key"), "{stderr}");
    let args = [
        "serve",
        "--vapid-subject",
        SUBJECT,
        "--tls-cert",
        cert,
        "--tls-key",
        cert,
    ];
    let stderr = fails(&args, dir.path()).await;
    assert!(stderr.contains("--tls-cert"), "{stderr}");
}

#[tokio::test]
async fn test_a_config_file_gives_defaults_that_flags_override() {
    let fx = Fixture::new(PUSHCHAT).await;
    fx.members(["Ann"]).await;
    let config = tempfile::NamedTempFile::new().unwrap();
    let data_dir = fx.data_dir.path().to_str().unwrap();
    let settings = format!(
        "data-dir = {data_dir:?}\nvapid-subject = \"mailto:me@box.local\"\ntrusted-proxy = [\"10.0.0.2\"]\n"
    );
    std::fs::write(config.path(), settings).unwrap();
    let config_path = config.path().to_str().unwrap();

    // The data dir comes from the file.
    let listing = pushchat(["members", "--config", config_path]).await;
    let (stdout, stderr) = texts(&listing);
    assert!(listing.status.success(), "{stderr}");
    assert!(stdout.contains("Ann"), "{stdout}");
    // So does the contact, which serve then refuses, naming why.
    let other = tempfile::tempdir().unwrap();
    let stderr = fails(&["serve", "--config", config_path], other.path()).await;
    assert!(stderr.contains("Apple"), "{stderr}");
    // A flag beats the file: this serve gets past the contact and stops at the data dir,
    // which the running server holds.
    let args = [
        "serve",
        "--config",
        config_path,
        "--vapid-subject",
        SUBJECT,
        "--addr",
        "127.0.0.1:0",
    ];
    let stderr = texts(&pushchat(args).await).1;
    assert!(stderr.contains("another pushchat"), "{stderr}");

    std::fs::write(config.path(), "members-per-adress = 3\n").unwrap();
    let stderr = texts(&pushchat(["members", "--config", config_path]).await).1;
    assert!(stderr.contains("--members-per-adress"), "{stderr}");
}

#[tokio::test]
async fn test_on_postgres_members_works_without_a_server_and_backup_points_to_pg_dump() {
    let database = end2end::TestDatabase::create().await;
    let location = server::store::StoreLocation::Postgres {
        url: database.url.clone(),
    };
    let store = server::store::open(&location, Path::new("/nonexistent"), 1)
        .await
        .unwrap();
    let ann = server::model::member::Device {
        name: "Ann".into(),
        member_id: "ann".into(),
        subscription: server::model::subscription::Subscription {
            endpoint: "https://push.example.com/ann".into(),
            p256dh: "key".into(),
            auth: localpush::crypto::rfc8291_example::AUTH_SECRET.into(),
        },
        joined: 0,
        joined_from: None,
        muted_until: None,
        last_seen: server::model::clock::now_millis(),
        stale_warned: None,
    };
    store.put_device(&ann).await.unwrap();
    // No server runs on this (empty) data dir: the subcommand opens the database.
    let dir = tempfile::tempdir().unwrap();
    let url = ["--database-url", database.url.as_str()];
    let listed = succeeds(&[&["members"][..], &url].concat(), dir.path()).await;
    assert!(
        listed.contains("Ann") && listed.contains("push.example.com"),
        "{listed}"
    );
    let removed = succeeds(
        &[&["members", "remove", "ann"][..], &url].concat(),
        dir.path(),
    )
    .await;
    assert!(removed.contains("removed ann"), "{removed}");
    let listed = succeeds(&[&["members"][..], &url].concat(), dir.path()).await;
    assert!(listed.contains("no members"), "{listed}");

    let backup = dir.path().join("backup.json");
    let backup = backup.to_str().unwrap();
    for args in [
        &["backup", backup][..],
        &["restore", backup],
        &["vapid", "generate"],
    ] {
        let stderr = fails(&[args, &url].concat(), dir.path()).await;
        assert!(stderr.contains("PostgreSQL"), "{args:?}: {stderr}");
    }
    assert!(!Path::new(backup).exists());
    let bad = fails(
        &["members", "--database-url", "mysql://db/chat"],
        dir.path(),
    )
    .await;
    assert!(
        bad.contains("--database-url") || bad.contains("PostgreSQL"),
        "{bad}"
    );
}
