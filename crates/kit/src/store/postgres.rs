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

/// A statement written with `?` placeholders in PostgreSQL's form
/// ([`numbered_placeholders`]), for stores that run one text on both backends.
pub fn statement(sql: &str) -> std::borrow::Cow<'_, str> {
    std::borrow::Cow::Owned(numbered_placeholders(sql))
}

/// A statement written with `?` placeholders (as SQLite and MariaDB take them) in
/// PostgreSQL's numbered form: `?` becomes `$1`, `$2`… The statement must not have a
/// `?` inside a literal.
pub fn numbered_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    out
}
