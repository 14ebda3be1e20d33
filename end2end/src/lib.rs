//! pushchat's test harness, for every test that runs pushchat for real: the `pushchat`
//! binary started on a port of its choosing (`process`), waits with a deadline instead
//! of sleeps (`wait`), and throwaway PostgreSQL databases with the switch that runs the
//! shared suites on them (`postgres`). The browser tests (`tests/browser.rs`) are built
//! on it; the push service the tests point pushchat at is the `localpush` crate.

mod postgres;
mod process;
mod wait;

pub use postgres::{suites_use_postgres, TestDatabase, SERVER_URL_VAR, STORE_VAR};
pub use process::{PushchatProcess, SUBJECT};
pub use wait::{eventually, DEADLINE};
