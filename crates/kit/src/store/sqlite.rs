//! SQLite: the embedded default store of every service (WAL, one file per service).

use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::error::BoxDynError;
use sqlx::migrate::{MigrationSource, MigrationType, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::{Migration, StoreError};

/// Migrations compiled into the binary, as sqlx sees them (shared by every SQL backend).
#[derive(Debug)]
pub(crate) struct Embedded(pub(crate) &'static [Migration]);

impl MigrationSource<'static> for Embedded {
    fn resolve(
        self,
    ) -> futures_util::future::BoxFuture<'static, Result<Vec<sqlx::migrate::Migration>, BoxDynError>>
    {
        Box::pin(async move {
            Ok(self
                .0
                .iter()
                .map(|m| {
                    sqlx::migrate::Migration::new(
                        m.version,
                        Cow::Borrowed(m.description),
                        MigrationType::Simple,
                        Cow::Borrowed(m.sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

/// Opens (creating if missing) the SQLite database at `url` (`sqlite://path/to.db`) in
/// WAL mode and applies `migrations`.
pub async fn open(
    url: &str,
    setting: &str,
    migrations: &'static [Migration],
) -> Result<SqlitePool, StoreError> {
    let connect_err = |e: Box<dyn std::error::Error + Send + Sync>| StoreError::Connect {
        setting: setting.to_owned(),
        url: url.to_owned(),
        source: e,
    };
    if let Some(path) = url.strip_prefix("sqlite://")
        && let Some(dir) = std::path::Path::new(path).parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(|e| connect_err(Box::new(e)))?;
    }
    let options = SqliteConnectOptions::from_str(url)
        .map_err(|e| connect_err(Box::new(e)))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(5))
        .foreign_keys(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(8)
        .min_connections(1)
        .connect_with(options)
        .await
        .map_err(|e| connect_err(Box::new(e)))?;
    let migrator = Migrator::new(Embedded(migrations))
        .await
        .map_err(|source| StoreError::Migrate {
            url: url.to_owned(),
            source,
        })?;
    migrator
        .run(&pool)
        .await
        .map_err(|source| StoreError::Migrate {
            url: url.to_owned(),
            source,
        })?;
    Ok(pool)
}

/// A statement written with `?` placeholders, as SQLite takes it (the counterpart of
/// [`super::postgres::statement`], for stores that run one text on both).
pub fn statement(sql: &str) -> Cow<'_, str> {
    Cow::Borrowed(sql)
}

#[cfg(test)]
mod tests {
    use super::*;

    static MIGRATIONS: &[Migration] = &[
        Migration {
            version: 1,
            description: "t",
            sql: "CREATE TABLE t (id INTEGER PRIMARY KEY)",
        },
        Migration {
            version: 2,
            description: "t.name",
            sql: "ALTER TABLE t ADD COLUMN name TEXT",
        },
    ];

    #[tokio::test]
    async fn migrates_once_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/sub/db.sqlite", dir.path().display());
        let pool = open(&url, "X", MIGRATIONS).await.unwrap();
        sqlx::query("INSERT INTO t (id, name) VALUES (1, 'a')")
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
        let pool = open(&url, "X", MIGRATIONS).await.unwrap();
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM t")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(n, 1);
    }
}
