//! PostgreSQL: a production store (`postgres://user:pass@host:5432/db`).

use sqlx::PgPool;

use super::{Migration, StoreError};

/// Connects to the database at `url` (failing fast if the server is not there) and
/// applies `migrations` (from the service's `migrations/postgres`).
pub async fn open(
    url: &str,
    setting: &str,
    migrations: &'static [Migration],
) -> Result<PgPool, StoreError> {
    super::open_server(url, setting, migrations).await
}
