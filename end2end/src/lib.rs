//! pushchat's test harness, for every test that runs pushchat for real: the `pushchat`
//! binary started on a port of its choosing (`process`) and a client of its API with the
//! request bodies tests send (`api`); a test's fixture, the local push service and a
//! server with virtual members, and readers of what they received (`fixture`); waits
//! with a deadline instead of sleeps (`wait`), and throwaway PostgreSQL databases with
//! the switch that runs the shared suites on them (`postgres`). The server's integration
//! tests and the browser tests (`tests/browser.rs`) are built on it; the push service is
//! the `localpush` crate. The binary is the caller's to name: a package's own tests know
//! theirs as `env!("CARGO_BIN_EXE_pushchat")`.

mod api;
mod fixture;
mod postgres;
mod process;
mod wait;

pub use api::{chat_body, credentials, join_body, sample, Server, ADMIN_TOKEN};
pub use fixture::{joined, left, messages, received, ChatHome, Fixture, Stopped};
pub use postgres::{suites_use_postgres, TestDatabase, SERVER_URL_VAR, STORE_VAR};
pub use process::{PushchatProcess, SUBJECT};
pub use wait::{eventually, DEADLINE};
