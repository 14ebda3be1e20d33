//! pushchat's one test harness, for every test that runs pushchat for real:
//! - `process`: the `pushchat` binary, started on a port of its choosing;
//! - `api`: a client of its JSON API ([`Server`]) and the request bodies tests send;
//! - `fixture`: one test's local push service, data dir and server ([`Fixture`]), its
//!   virtual members, and readers of what they received;
//! - `wait`: waits with a deadline instead of sleeps;
//! - `postgres`: throwaway PostgreSQL databases, and the switch that runs the shared
//!   suites on them;
//! - `devtools`: a client of Chromium's DevTools protocol that keeps the events it gets.
//!
//! The server's integration tests and the browser tests (`tests/browser.rs`) are built on
//! it; the push service is the `localpush` crate. Which binary runs is the caller's to
//! say: a package's own tests know theirs as `env!("CARGO_BIN_EXE_pushchat")`.

mod api;
mod devtools;
mod fixture;
mod postgres;
mod process;
mod wait;

pub use api::{chat_body, credentials, join_body, sample, Server, ADMIN_TOKEN};
pub use devtools::{DevTools, DevToolsError};
pub use fixture::{joined, left, messages, received, virtual_browser, ChatHome, Fixture, Stopped};
pub use postgres::{suites_use_postgres, TestDatabase, SERVER_URL_VAR, STORE_VAR};
pub use process::{Logs, PushchatProcess, SUBJECT};
pub use wait::{eventually, DEADLINE};
