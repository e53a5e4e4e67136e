//! MariaDB / MySQL: a production store (`mysql://user:pass@host:3306/db`).

use std::str::FromStr;
use std::time::Duration;

use sqlx::MySqlPool;
use sqlx::migrate::Migrator;
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};

use super::sqlite::Embedded;
use super::{Migration, StoreError, redact};

/// Connects to the database at `url` (failing fast if the server is not there) and
/// applies `migrations` (from the service's `migrations/mysql`).
pub async fn open(
    url: &str,
    setting: &str,
    migrations: &'static [Migration],
) -> Result<MySqlPool, StoreError> {
    let connect_err = |e: Box<dyn std::error::Error + Send + Sync>| StoreError::Connect {
        setting: setting.to_owned(),
        url: redact(url),
        source: e,
    };
    let options = MySqlConnectOptions::from_str(url).map_err(|e| connect_err(Box::new(e)))?;
    let pool = MySqlPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await
        .map_err(|e| connect_err(Box::new(e)))?;
    let migrate_err = |source| StoreError::Migrate {
        url: redact(url),
        source,
    };
    Migrator::new(Embedded(migrations))
        .await
        .map_err(migrate_err)?
        .run(&pool)
        .await
        .map_err(migrate_err)?;
    Ok(pool)
}
