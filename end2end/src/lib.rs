//! pushchat's test harness, for every test that runs pushchat for real: the `pushchat`
//! binary started on a port of its choosing (`harness`), waits with a deadline instead of
//! sleeps, and throwaway PostgreSQL databases with the switch that runs the shared suites
//! on them (`postgres`). The browser tests (`tests/browser.rs`) are built on it; the push
//! service the tests point pushchat at is the `localpush` crate.

mod harness;
mod postgres;

pub use harness::{eventually, PushchatProcess, DEADLINE};
pub use postgres::{suites_use_postgres, TestDatabase, SERVER_URL_VAR, STORE_VAR};
