//! MariaDB / MySQL: a production store (`mysql://user:pass@host:3306/db`).

use sqlx::MySqlPool;

use super::{Migration, StoreError};

/// Connects to the database at `url` (failing fast if the server is not there) and
/// applies `migrations` (from the service's `migrations/mysql`).
pub async fn open(
    url: &str,
    setting: &str,
    migrations: &'static [Migration],
) -> Result<MySqlPool, StoreError> {
    super::open_server(url, setting, migrations).await
}
