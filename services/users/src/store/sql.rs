//! The SQL backends: SQLite (embedded default) and PostgreSQL (production), from one
//! implementation written against both.

use kit::discovery::BoxFuture;
use kit::store::{Migration, StoreError};
use sqlx::FromRow;

use super::{Created, ProfileStore, ProfileStoreError};
use crate::domain::Profile;

static SQLITE_MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    description: "profiles",
    sql: include_str!("../../migrations/sqlite/0001_profiles.sql"),
}];

static POSTGRES_MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    description: "profiles",
    sql: include_str!("../../migrations/postgres/0001_profiles.sql"),
}];

#[derive(FromRow)]
struct Row {
    id: String,
    email: String,
    name: String,
    created_at: String,
    updated_at: String,
}

impl From<Row> for Profile {
    fn from(r: Row) -> Self {
        Profile {
            id: r.id,
            email: r.email,
            name: r.name,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

const SELECT: &str = "SELECT id, email, name, created_at, updated_at FROM profiles WHERE id = ?";

// SQLite takes the statements as written; PostgreSQL numbers its placeholders.
use kit::store::postgres::statement as postgres;
use kit::store::sqlite::statement as sqlite;

macro_rules! profiles {
    ($(#[$doc:meta])* $name:ident, $pool:ty, $open:path, $migrations:ident, $q:path) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name {
            pool: $pool,
        }

        impl $name {
            /// Opens (and migrates) the database at `url`.
            pub async fn open(url: &str, setting: &str) -> Result<Self, StoreError> {
                Ok(Self {
                    pool: $open(url, setting, $migrations).await?,
                })
            }

            async fn fetch(&self, id: &str) -> Result<Option<Profile>, ProfileStoreError> {
                let sql = $q(SELECT);
                let row: Option<Row> = sqlx::query_as(&sql)
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.map(Profile::from))
            }
        }

        impl ProfileStore for $name {
            fn create(&self, p: Profile) -> BoxFuture<'_, Result<Created, ProfileStoreError>> {
                Box::pin(async move {
                    let sql = $q(
                        "INSERT INTO profiles (id, email, name, created_at, updated_at) \
                         VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                    );
                    let inserted = sqlx::query(&sql)
                        .bind(&p.id)
                        .bind(&p.email)
                        .bind(&p.name)
                        .bind(&p.created_at)
                        .bind(&p.updated_at)
                        .execute(&self.pool)
                        .await?
                        .rows_affected();
                    if inserted == 1 {
                        return Ok(Created::New(p));
                    }
                    match self.fetch(&p.id).await? {
                        Some(existing) => Ok(Created::Existing(existing)),
                        None => Err(ProfileStoreError(format!("profile {} vanished", p.id))),
                    }
                })
            }

            fn get(&self, id: String) -> BoxFuture<'_, Result<Option<Profile>, ProfileStoreError>> {
                Box::pin(async move { self.fetch(&id).await })
            }

            fn rename(
                &self,
                id: String,
                name: String,
                at: String,
            ) -> BoxFuture<'_, Result<Option<Profile>, ProfileStoreError>> {
                Box::pin(async move {
                    let sql = $q("UPDATE profiles SET name = ?, updated_at = ? WHERE id = ?");
                    let changed = sqlx::query(&sql)
                        .bind(&name)
                        .bind(&at)
                        .bind(&id)
                        .execute(&self.pool)
                        .await?
                        .rows_affected();
                    if changed == 0 {
                        return Ok(None);
                    }
                    self.fetch(&id).await
                })
            }

            fn ping(&self) -> BoxFuture<'_, Result<(), ProfileStoreError>> {
                Box::pin(async move {
                    sqlx::query("SELECT 1").execute(&self.pool).await?;
                    Ok(())
                })
            }
        }
    };
}

profiles!(
    /// Profiles in SQLite (embedded default).
    SqliteProfiles,
    sqlx::SqlitePool,
    kit::store::sqlite::open,
    SQLITE_MIGRATIONS,
    sqlite
);

profiles!(
    /// Profiles in PostgreSQL (production).
    PgProfiles,
    sqlx::PgPool,
    kit::store::postgres::open,
    POSTGRES_MIGRATIONS,
    postgres
);

#[cfg(test)]
mod tests {
    #[test]
    fn postgres_placeholders_are_numbered() {
        assert_eq!(
            super::postgres("UPDATE t SET a = ?, b = ? WHERE id = ?"),
            "UPDATE t SET a = $1, b = $2 WHERE id = $3"
        );
    }
}
