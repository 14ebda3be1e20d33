//! Stores for tests: a fresh one of the kind this test run covers, sled by default or
//! PostgreSQL with `PUSHCHAT_TEST_STORE=postgres` (see `end2end::TestDatabase`), which the
//! unit tests and the integration tests share; and the members they store.

use std::{path::Path, sync::Arc, time::Duration};

use end2end::{suites_use_postgres, TestDatabase};

use super::{PostgresStore, SledStore, Store, StoreError};
use crate::model::{member::Device, subscription::Subscription};

/// The auth secret of RFC 8291's example subscription.
pub use localpush::crypto::rfc8291_example::AUTH_SECRET as AUTH;

/// A device of the member called `name`, whose id is its lowercase name, at `endpoint`.
pub fn member(name: &str, endpoint: &str) -> Device {
    Device {
        name: name.into(),
        member_id: name.to_lowercase(),
        subscription: Subscription {
            endpoint: endpoint.into(),
            p256dh: "key".into(),
            auth: AUTH.into(),
        },
        joined: 1,
        joined_from: None,
        muted_until: None,
        last_seen: 1,
        stale_warned: None,
    }
}

/// Ann's one device, at https://p.example/1.
pub fn ann() -> Device {
    member("Ann", "https://p.example/1")
}

/// A store of the kind under test, on a home of its own that lives as long as it does.
pub struct TestStore {
    pub store: Arc<dyn Store>,
    home: Home,
    /// How many fan-outs its delivery may hold at once (PostgreSQL: connections for them).
    max_fan_outs: usize,
}

/// Where a test store keeps its data; removed when dropped.
enum Home {
    Sled(tempfile::TempDir),
    Postgres(TestDatabase),
}

impl TestStore {
    /// A new, empty store.
    pub async fn new() -> TestStore {
        Self::with_fan_outs(4).await
    }

    /// A new, empty store whose delivery may hold `max_fan_outs` fan-outs at once.
    pub async fn with_fan_outs(max_fan_outs: usize) -> TestStore {
        let home = if suites_use_postgres() {
            Home::Postgres(TestDatabase::create().await)
        } else {
            Home::Sled(tempfile::tempdir().unwrap())
        };
        TestStore {
            store: open(&home, max_fan_outs).await,
            home,
            max_fan_outs,
        }
    }

    /// The same store, closed and opened again.
    pub async fn reopen(self) -> TestStore {
        let TestStore {
            store,
            home,
            max_fan_outs,
        } = self;
        drop(store);
        TestStore {
            store: open(&home, max_fan_outs).await,
            home,
            max_fan_outs,
        }
    }
}

async fn open(home: &Home, max_fan_outs: usize) -> Arc<dyn Store> {
    match home {
        Home::Sled(dir) => Arc::new(open_sled_when_free(dir.path()).await),
        Home::Postgres(database) => Arc::new(
            PostgresStore::connect(&database.url, max_fan_outs)
                .await
                .unwrap(),
        ),
    }
}

/// Opens the sled store in `dir`, once free: sled's background flusher lets go of the
/// directory's lock a moment after the last handle is dropped (this waits up to 10 s).
pub async fn open_sled_when_free(dir: &Path) -> SledStore {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match SledStore::open(dir, 1 << 20) {
            Err(StoreError::InUse) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            opened => return opened.unwrap(),
        }
    }
}
