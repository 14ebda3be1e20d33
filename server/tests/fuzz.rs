//! Property tests over the JSON API: thousands of generated request bodies, from random
//! bytes to valid requests with one field swapped for something hostile, go through the
//! real router, rules and sled store (in process, no network). Every answer must be a
//! success or a 4xx with a readable `{"error": ...}` body; nothing may panic or 5xx, and
//! Bo, whose secret the fuzzer never holds (it damages Ann's requests and tries Bo's
//! endpoint with them), is never moved, renamed or removed.

use std::{net::SocketAddr, sync::OnceLock};

use axum::{
    body::{to_bytes, Body},
    extract::connect_info::MockConnectInfo,
    http::{header::CONTENT_TYPE, Request},
    Router,
};
use clap::Parser;
use localpush::crypto::rfc8291_example;
use proptest::{prelude::*, test_runner::TestRunner};
use serde_json::{json, Map, Value};
use tower::ServiceExt;

use server::{
    config::{
        cli::{Cli, Command},
        Config,
    },
    http::state::AppState,
};

/// A real P-256 point (RFC 8291 Appendix A) and a 16-byte secret.
const P256DH: &str = rfc8291_example::RECEIVER_PUBLIC_KEY;
const AUTH: &str = rfc8291_example::AUTH_SECRET;
const ENDPOINT: &str = "https://push.example.net/send/ann";
const BO_ENDPOINT: &str = "https://push.example.net/send/bo";
const BO_AUTH: &str = "AAECAwQFBgcICQoLDA0ODw";

const ROUTES: [&str; 7] = [
    "/api/subscribe",
    "/api/init",
    "/api/resubscribe",
    "/api/unsubscribe",
    "/api/chat",
    "/api/mute",
    "/api/device-code",
];

/// One server for the whole file, with Ann and Bo as members.
struct Target {
    runtime: tokio::runtime::Runtime,
    router: Router,
    state: AppState,
    _data_dir: tempfile::TempDir,
}

fn target() -> &'static Target {
    static TARGET: OnceLock<Target> = OnceLock::new();
    TARGET.get_or_init(|| {
        let data_dir = tempfile::tempdir().unwrap();
        let cli = Cli::parse_from([
            "pushchat",
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--data-dir",
            data_dir.path().to_str().unwrap(),
            "--vapid-subject",
            "mailto:fuzz@pushchat.example.org",
            "--chat-lines-per-minute",
            "1000000",
            "--members-per-address",
            "1000000",
        ]);
        let Command::Serve(args) = cli.command else {
            unreachable!("parsed a serve command")
        };
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let state =
            runtime.block_on(async { server::open(&Config::from_args(*args).unwrap()).await });
        let state = state.unwrap();
        let client: SocketAddr = ([203, 0, 113, 1], 40000).into();
        let router = server::http::routes::router(state.clone()).layer(MockConnectInfo(client));
        let target = Target {
            runtime,
            router,
            state,
            _data_dir: data_dir,
        };
        for joins in [ann_joins(), bo_joins()] {
            let (status, answer) = target.post("/api/subscribe", joins.to_string().into());
            assert_eq!(status, 200, "{answer}");
        }
        target
    })
}

impl Target {
    fn post(&self, route: &str, body: Vec<u8>) -> (u16, String) {
        self.runtime.block_on(async {
            let request = Request::post(route)
                .header(CONTENT_TYPE, "application/json")
                .body(Body::from(body))
                .unwrap();
            let response = self.router.clone().oneshot(request).await.unwrap();
            let status = response.status().as_u16();
            let body = to_bytes(response.into_body(), 1 << 20).await.unwrap();
            (status, String::from_utf8_lossy(&body).into_owned())
        })
    }

    /// Bo is still there, under his name, at his endpoint, with his secret.
    fn bo_is_intact(&self) {
        let bo = self.runtime.block_on(self.state.store.device(BO_ENDPOINT));
        let bo = bo.unwrap();
        let bo = bo.expect("Bo is a member");
        assert_eq!(bo.name, "Bo");
        assert!(bo.subscription.auth_matches(BO_AUTH));
    }
}

fn ann_joins() -> Value {
    json!({
        "name": "Ann",
        "subscription": {"endpoint": ENDPOINT, "keys": {"p256dh": P256DH, "auth": AUTH}},
    })
}

fn bo_joins() -> Value {
    json!({
        "name": "Bo",
        "subscription": {"endpoint": BO_ENDPOINT, "keys": {"p256dh": P256DH, "auth": BO_AUTH}},
    })
}

/// A valid body for each route, Ann's, that the fuzzer then damages.
fn valid_body(route: &str) -> Value {
    let credentials = json!({"endpoint": ENDPOINT, "auth": AUTH});
    match route {
        "/api/subscribe" | "/api/init" => ann_joins(),
        "/api/resubscribe" => {
            let mut body = credentials;
            body["subscription"] = ann_joins()["subscription"].clone();
            body
        }
        "/api/chat" => {
            let mut body = credentials;
            body["msg"] = json!("hello");
            body
        }
        _ => credentials,
    }
}

/// Any JSON value: hostile strings (markup, control and bidi characters, long ones),
/// extreme numbers, nesting.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        hostile_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(hostile_string(), inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn hostile_string() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[\\p{Cc}\\p{Cf}<>&\"' a-zA-Z]{0,40}",
        Just("<img src=x onerror=alert(1)>".to_owned()),
        Just("\u{202e}Ann".to_owned()),
        Just("ANN".to_owned()),
        Just("A\u{00a0}nn".to_owned()),
        Just("http://127.0.0.1:80/x".to_owned()),
        Just("https://[::ffff:169.254.169.254]/x".to_owned()),
        Just("https://metadata.google.internal/x".to_owned()),
        Just(AUTH.to_owned()),
        Just(ENDPOINT.to_owned()),
        Just(BO_ENDPOINT.to_owned()),
        Just("Bo".to_owned()),
        Just(" bo ".to_owned()),
        (1usize..20_000).prop_map(|n| "m".repeat(n)),
    ]
}

/// Paths to every value inside `value` (object keys and array indexes), itself included.
fn pointers(value: &Value, here: String, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                pointers(inner, format!("{here}/{key}"), out);
            }
        }
        Value::Array(items) => {
            for (index, inner) in items.iter().enumerate() {
                pointers(inner, format!("{here}/{index}"), out);
            }
        }
        _ => {}
    }
    out.push(here);
}

/// A valid body with the value at one of its paths replaced by `replacement` (or removed).
fn damaged(route: &str, pick: prop::sample::Index, replacement: Option<Value>) -> Vec<u8> {
    let mut body = valid_body(route);
    let mut paths = Vec::new();
    pointers(&body, String::new(), &mut paths);
    let path = pick.get(&paths);
    match (path.rsplit_once('/'), replacement) {
        (Some((parent, key)), None) => {
            if let Some(Value::Object(map)) = body.pointer_mut(parent) {
                map.remove(key);
            }
        }
        (_, Some(value)) => {
            if let Some(slot) = body.pointer_mut(path) {
                *slot = value;
            }
        }
        (None, None) => body = Value::Null,
    }
    body.to_string().into_bytes()
}

/// A 4xx whose body says what went wrong, or a success.
fn assert_answered_well(route: &str, body: &[u8], status: u16, answer: &str) {
    let shown = String::from_utf8_lossy(&body[..body.len().min(300)]);
    assert!(
        (200..300).contains(&status) || (400..500).contains(&status),
        "{route} answered {status} to {shown}: {answer}"
    );
    if status >= 400 {
        let parsed: Value = serde_json::from_str(answer)
            .unwrap_or_else(|_| panic!("{route}: {status} body is not JSON: {answer}"));
        let message = parsed["error"].as_str().unwrap_or_default();
        assert!(
            !message.is_empty(),
            "{route}: {status} without a message: {answer}"
        );
    }
}

/// Runs `cases` generated requests and prints how they were answered, by status.
fn run(name: &str, cases: u32, strategy: impl Strategy<Value = (usize, Vec<u8>)>) {
    let target = target();
    let answers = std::sync::Mutex::new(std::collections::BTreeMap::<u16, u32>::new());
    let config = ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = TestRunner::new(config);
    runner
        .run(&strategy, |(route, body)| {
            let route = ROUTES[route];
            let (status, answer) = target.post(route, body.clone());
            assert_answered_well(route, &body, status, &answer);
            *answers.lock().unwrap().entry(status).or_default() += 1;
            Ok(())
        })
        .unwrap();
    println!(
        "fuzz {name}: {cases} requests, answered by status {:?}",
        answers.lock().unwrap()
    );
    target.bo_is_intact();
    let devices = target.runtime.block_on(target.state.store.devices());
    devices.expect("the store still reads");
}

#[test]
fn test_random_bytes_are_refused_with_a_readable_4xx() {
    run(
        "random bytes",
        1000,
        (0..ROUTES.len(), prop::collection::vec(any::<u8>(), 0..2048)),
    );
}

#[test]
fn test_any_json_is_refused_or_accepted_never_a_crash() {
    run(
        "any JSON",
        2000,
        (0..ROUTES.len(), any_json())
            .prop_map(|(route, value)| (route, value.to_string().into_bytes())),
    );
}

#[test]
fn test_damaged_requests_never_crash_or_touch_a_member_whose_secret_they_lack() {
    run(
        "damaged valid requests",
        3000,
        (
            0..ROUTES.len(),
            any::<prop::sample::Index>(),
            prop::option::weighted(
                0.9,
                prop_oneof![any_json(), hostile_string().prop_map(Value::String)],
            ),
        )
            .prop_map(|(route, pick, replacement)| {
                (route, damaged(ROUTES[route], pick, replacement))
            }),
    );
}
