//! Throwaway PostgreSQL databases for tests, on the server `.ci/test` starts (its URL is
//! in `PUSHCHAT_TEST_POSTGRES_URL`), and the switch that runs the shared suites (store,
//! chat rules, API, delivery) against PostgreSQL instead of sled: `PUSHCHAT_TEST_STORE`.

use sqlx::{Connection, PgConnection};
use url::Url;

/// A PostgreSQL server where tests may create databases: `postgres://USER@HOST:PORT/DB`.
pub const SERVER_URL_VAR: &str = "PUSHCHAT_TEST_POSTGRES_URL";
/// `sled` (the default) or `postgres`: the store the shared suites run against.
pub const STORE_VAR: &str = "PUSHCHAT_TEST_STORE";

/// Whether the shared suites run against PostgreSQL in this run.
pub fn suites_use_postgres() -> bool {
    match std::env::var(STORE_VAR).as_deref() {
        Ok("postgres") => true,
        Ok("sled") | Err(_) => false,
        Ok(other) => panic!("{STORE_VAR}={other:?}: expected sled or postgres"),
    }
}

/// A database of its own for one test, dropped with it.
pub struct TestDatabase {
    /// `postgres://…/pushchat_test_…`: what `pushchat --database-url` takes.
    pub url: String,
    server: String,
    name: String,
}

impl TestDatabase {
    /// Creates an empty database on the server named by [`SERVER_URL_VAR`].
    pub async fn create() -> TestDatabase {
        let server = std::env::var(SERVER_URL_VAR).unwrap_or_else(|_| {
            panic!(
                "{SERVER_URL_VAR} is not set: it names a PostgreSQL server where tests may \
                 create databases (`bash .ci/test` starts one and sets it)"
            )
        });
        let name = format!("pushchat_test_{:016x}", rand::random::<u64>());
        let mut admin = PgConnection::connect(&server)
            .await
            .unwrap_or_else(|error| panic!("cannot reach {server}: {error}"));
        sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("the test server lets tests create databases");
        let mut url = Url::parse(&server).expect("the test server's URL parses");
        url.set_path(&name);
        TestDatabase {
            url: url.into(),
            server,
            name,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (server, name) = (self.server.clone(), self.name.clone());
        // Drop runs outside any runtime (or inside one that must not block): a thread of
        // its own with a runtime of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let mut admin = PgConnection::connect(&server).await?;
                sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await?;
                Ok::<_, sqlx::Error>(())
            })?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        })
        .join();
        if let Ok(Err(error)) = dropped {
            eprintln!("could not drop test database {}: {error}", self.name);
        }
    }
}
