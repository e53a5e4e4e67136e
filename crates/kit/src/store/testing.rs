//! Test support for suites that run against real database servers: a fresh database per
//! test on the server the environment names, or a loud skip when there is none — unless
//! `FLOTILLA_REQUIRE_INFRA=1` (as in CI), which turns the skip into a failure.
//!
//! Servers: `FLOTILLA_TEST_MYSQL` (default `mysql://root@127.0.0.1:3306`) and
//! `FLOTILLA_TEST_POSTGRES` (default `postgres://postgres@127.0.0.1:5432`).

use sqlx::Connection;

/// Whether a missing server fails the tests instead of skipping them.
pub fn require_infra() -> bool {
    std::env::var("FLOTILLA_REQUIRE_INFRA").as_deref() == Ok("1")
}

/// Says loudly that `what` is skipped because of `why`, or panics under
/// `FLOTILLA_REQUIRE_INFRA=1`.
pub fn skip<T>(what: &str, why: impl std::fmt::Display, hint: &str) -> Option<T> {
    if require_infra() {
        panic!("FLOTILLA_REQUIRE_INFRA=1 but {what} cannot run: {why}");
    }
    eprintln!("\n*** SKIPPING {what}: {why} ***\n*** {hint} ***\n");
    None
}

/// Which server a [`TestDatabase`] lives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// MariaDB / MySQL.
    MySql,
    /// PostgreSQL.
    Postgres,
}

/// A database created for one test; [`TestDatabase::drop_database`] removes it.
#[derive(Debug)]
pub struct TestDatabase {
    /// Its URL, to open it with the store under test.
    pub url: String,
    server: Server,
    admin_url: String,
    name: String,
}

impl TestDatabase {
    /// Creates a fresh database on `server`, or returns `None` after saying why not.
    pub async fn create(server: Server) -> Option<Self> {
        let (var, default, admin_db, hint) = match server {
            Server::MySql => (
                "FLOTILLA_TEST_MYSQL",
                "mysql://root@127.0.0.1:3306",
                "",
                "start mariadbd or set FLOTILLA_TEST_MYSQL",
            ),
            Server::Postgres => (
                "FLOTILLA_TEST_POSTGRES",
                "postgres://postgres@127.0.0.1:5432",
                "/postgres",
                "start postgresql or set FLOTILLA_TEST_POSTGRES",
            ),
        };
        let base = std::env::var(var).unwrap_or_else(|_| default.to_owned());
        let base = base.trim_end_matches('/').to_owned();
        let admin_url = format!("{base}{admin_db}");
        let name = format!("flotilla_test_{}", uuid::Uuid::new_v4().simple());
        let created = execute(server, &admin_url, &format!("CREATE DATABASE {name}")).await;
        match created {
            Ok(()) => Some(Self {
                url: format!("{base}/{name}"),
                server,
                admin_url,
                name,
            }),
            Err(e) => skip(&format!("{server:?} tests"), e, hint),
        }
    }

    /// Drops the database (call at the end of the test).
    pub async fn drop_database(self) {
        let sql = match self.server {
            Server::MySql => format!("DROP DATABASE {}", self.name),
            Server::Postgres => format!("DROP DATABASE {} WITH (FORCE)", self.name),
        };
        if let Err(e) = execute(self.server, &self.admin_url, &sql).await {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}

async fn execute(server: Server, url: &str, sql: &str) -> Result<(), sqlx::Error> {
    match server {
        Server::MySql => {
            let mut c = sqlx::MySqlConnection::connect(url).await?;
            sqlx::raw_sql(sql).execute(&mut c).await?;
            c.close().await
        }
        Server::Postgres => {
            let mut c = sqlx::PgConnection::connect(url).await?;
            sqlx::raw_sql(sql).execute(&mut c).await?;
            c.close().await
        }
    }
}
