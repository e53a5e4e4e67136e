//! Storage plumbing: connection pools and migrations per backend (SQLite, PostgreSQL,
//! MariaDB/MySQL, Redis), chosen by URL.
//!
//! Each service owns its store (database per service); this module only opens
//! connections, applies the service's own versioned migrations at start, and turns
//! connection failures into errors that name the setting, with credentials redacted.

pub mod mysql;
pub mod postgres;
pub mod redis;
pub mod sqlite;
pub mod testing;

/// A store could not be opened or prepared.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL names a backend this store does not support.
    #[error("setting `{setting}`: unsupported store URL {url:?}; expected one of: {expected}")]
    UnknownScheme {
        /// The setting, as an environment variable name.
        setting: String,
        /// The URL with any password removed.
        url: String,
        /// The supported schemes.
        expected: &'static str,
    },
    /// The server could not be reached or refused the connection.
    #[error("setting `{setting}`: cannot connect to {url}: {source}")]
    Connect {
        /// The setting, as an environment variable name.
        setting: String,
        /// The URL with any password removed.
        url: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Applying migrations failed.
    #[error("migrating {url} failed: {source}")]
    Migrate {
        /// The URL with any password removed.
        url: String,
        /// Why.
        #[source]
        source: sqlx::migrate::MigrateError,
    },
}

/// Runs a store operation to its end on its own task, whatever becomes of the caller.
///
/// A request handler's future is dropped when its client goes away (a cancelled call, a
/// spent deadline, a killed caller). Dropped in the middle of a transaction, a pooled
/// connection can go back to the pool still inside it (sqlx marks the transaction only
/// once `BEGIN` has answered), and every later use of that connection then fails. Write
/// transactions that a handler starts go through here, so they commit or roll back
/// whole. The error is the task's: a panic inside the operation, or a runtime shutting
/// down. The task runs in the caller's span, so its database calls, the events it writes
/// and the sagas it starts stay in the request's trace.
pub async fn detached<T, F>(operation: F) -> Result<T, tokio::task::JoinError>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    use tracing::Instrument;
    tokio::spawn(operation.in_current_span()).await
}

#[cfg(test)]
mod detached_tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_detached_operation_finishes_when_its_caller_is_dropped() {
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        let caller = super::detached(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            flag.store(true, Ordering::SeqCst);
        });
        let _ = tokio::time::timeout(Duration::from_millis(10), caller).await;
        assert!(!done.load(Ordering::SeqCst), "the caller gave up first");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            done.load(Ordering::SeqCst),
            "the operation ran to its end anyway"
        );
    }
}

/// The scheme of a store URL (`sqlite`, `redis`, `postgres`…), empty if none.
pub fn scheme(url: &str) -> &str {
    url.split_once("://").map(|(s, _)| s).unwrap_or("")
}

/// The URL with the password (if any) replaced by `***`, for logs and errors.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map(|(u, _)| u).unwrap_or(userinfo);
            format!("{scheme}://{user}:***@{host}{tail}")
        }
        None => url.to_owned(),
    }
}

/// One versioned migration, embedded in the service binary.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Version; applied in ascending order, each once.
    pub version: i64,
    /// What it does.
    pub description: &'static str,
    /// The SQL.
    pub sql: &'static str,
}

/// Connects to a database server at `url` (failing fast if it is not there) and applies
/// `migrations`: the shared body of [`postgres::open`] and [`mysql::open`].
async fn open_server<DB>(
    url: &str,
    setting: &str,
    migrations: &'static [Migration],
) -> Result<sqlx::Pool<DB>, StoreError>
where
    DB: sqlx::Database,
    DB::Connection: sqlx::migrate::Migrate,
{
    use sqlx::Connection;
    use std::str::FromStr;
    let connect_err = |e: Box<dyn std::error::Error + Send + Sync>| StoreError::Connect {
        setting: setting.to_owned(),
        url: redact(url),
        source: e,
    };
    let options = <DB::Connection as Connection>::Options::from_str(url)
        .map_err(|e| connect_err(Box::new(e)))?;
    let pool = sqlx::pool::PoolOptions::<DB>::new()
        .max_connections(16)
        .acquire_timeout(std::time::Duration::from_secs(5))
        .connect_with(options)
        .await
        .map_err(|e| connect_err(Box::new(e)))?;
    let migrate_err = |source| StoreError::Migrate {
        url: redact(url),
        source,
    };
    sqlx::migrate::Migrator::new(sqlite::Embedded(migrations))
        .await
        .map_err(migrate_err)?
        .run(&pool)
        .await
        .map_err(migrate_err)?;
    Ok(pool)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact("redis://:secret@h:6379/0"), "redis://:***@h:6379/0");
        assert_eq!(redact("postgres://u:p@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("sqlite://x.db"), "sqlite://x.db");
        assert_eq!(scheme("redis://h"), "redis");
    }
}
