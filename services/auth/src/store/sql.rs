//! The SQL backends: SQLite (embedded default) and PostgreSQL (production), from one
//! implementation written against both.

use std::sync::Arc;

use kit::discovery::BoxFuture;
use kit::store::{Migration, StoreError};
use kit_events::outbox::OutboxStore;
use secrecy::{ExposeSecret, SecretString};
use sqlx::FromRow;
use tokio::sync::Notify;

use super::{
    Account, AuthStore, AuthStoreError, NewAccount, PendingProfile, RefreshRecord, Registered,
    Rotation, StoredKey,
};
use crate::domain::{RefreshDecision, RefreshState, Role, decide_refresh};

static SQLITE_MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "credentials, refresh tokens, signing keys, throttling",
        sql: include_str!("../../migrations/sqlite/0001_auth.sql"),
    },
    Migration {
        version: 2,
        description: "outbox and inbox",
        sql: kit_events::outbox::SQLITE_SCHEMA,
    },
];

static POSTGRES_MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "credentials, refresh tokens, signing keys, throttling",
        sql: include_str!("../../migrations/postgres/0001_auth.sql"),
    },
    Migration {
        version: 2,
        description: "outbox and inbox",
        sql: kit_events::outbox::POSTGRES_SCHEMA,
    },
];

// SQLite takes the statements as written; PostgreSQL numbers its placeholders.
use kit::store::postgres::statement as postgres;
use kit::store::sqlite::statement as sqlite;

#[derive(FromRow)]
struct AccountRow {
    id: String,
    email: String,
    password_hash: String,
    role: String,
}

impl TryFrom<AccountRow> for Account {
    type Error = AuthStoreError;
    fn try_from(r: AccountRow) -> Result<Self, AuthStoreError> {
        Ok(Account {
            role: Role::parse(&r.role)
                .ok_or_else(|| AuthStoreError(format!("stored role {:?}", r.role)))?,
            id: r.id,
            email: r.email,
            password_hash: r.password_hash,
        })
    }
}

#[derive(FromRow)]
struct KeyRow {
    kid: String,
    private_key: String,
    public_key: String,
    created_ms: i64,
    rotated_ms: Option<i64>,
    retire_after_ms: Option<i64>,
}

impl From<KeyRow> for StoredKey {
    fn from(r: KeyRow) -> Self {
        StoredKey {
            kid: r.kid,
            private_key: SecretString::from(r.private_key),
            public_key: r.public_key,
            created_ms: r.created_ms,
            rotated_ms: r.rotated_ms,
            retire_after_ms: r.retire_after_ms,
        }
    }
}

const ACCOUNT: &str = "SELECT id, email, password_hash, role FROM credentials";

macro_rules! auth_store {
    ($(#[$doc:meta])* $name:ident, $db:ty, $pool:ty, $open:path, $migrations:ident, $enqueue:path, $q:path) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name {
            pool: $pool,
            wake: Arc<Notify>,
        }

        impl $name {
            /// Opens (and migrates) the database at `url`.
            pub async fn open(url: &str, setting: &str) -> Result<Self, StoreError> {
                Ok(Self {
                    pool: $open(url, setting, $migrations).await?,
                    wake: Arc::new(Notify::new()),
                })
            }

            /// The pool (tests look inside).
            pub fn pool(&self) -> &$pool {
                &self.pool
            }

            async fn account_where(
                &self,
                sql: &'static str,
                value: String,
            ) -> Result<Option<Account>, AuthStoreError> {
                let sql = $q(sql);
                let row: Option<AccountRow> = sqlx::query_as(&sql)
                    .bind(value)
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(Account::try_from).transpose()
            }

            async fn insert_refresh(
                tx: &mut sqlx::Transaction<'_, $db>,
                r: &RefreshRecord,
            ) -> Result<(), AuthStoreError> {
                let sql = $q(
                    "INSERT INTO refresh_tokens (token_hash, family_id, user_id, issued_ms, expires_ms) \
                     VALUES (?, ?, ?, ?, ?)",
                );
                sqlx::query(&sql)
                    .bind(&r.token_hash)
                    .bind(&r.family_id)
                    .bind(&r.user_id)
                    .bind(r.issued_ms)
                    .bind(r.expires_ms)
                    .execute(&mut **tx)
                    .await?;
                Ok(())
            }
        }

        impl AuthStore for $name {
            fn register(
                &self,
                new: NewAccount,
                subject: &'static str,
                event: kit_events::Event,
            ) -> BoxFuture<'_, Result<Registered, AuthStoreError>> {
                Box::pin(async move {
                    let a = &new.account;
                    let mut tx = self.pool.begin().await?;
                    let sql = $q(
                        "INSERT INTO credentials (id, email, password_hash, role, created_ms) \
                         VALUES (?, ?, ?, ?, ?)",
                    );
                    let inserted = sqlx::query(&sql)
                        .bind(&a.id)
                        .bind(&a.email)
                        .bind(&a.password_hash)
                        .bind(a.role.as_str())
                        .bind(new.created_ms)
                        .execute(&mut *tx)
                        .await;
                    match inserted {
                        Ok(_) => {}
                        Err(sqlx::Error::Database(d)) if d.is_unique_violation() => {
                            return Ok(Registered::EmailTaken);
                        }
                        Err(e) => return Err(e.into()),
                    }
                    let sql = $q(
                        "INSERT INTO pending_profiles (user_id, email, name, attempts, next_attempt_ms, created_ms) \
                         VALUES (?, ?, ?, 0, ?, ?)",
                    );
                    sqlx::query(&sql)
                        .bind(&a.id)
                        .bind(&a.email)
                        .bind(&new.name)
                        .bind(new.created_ms)
                        .bind(new.created_ms)
                        .execute(&mut *tx)
                        .await?;
                    $enqueue(&mut *tx, subject, &event).await?;
                    tx.commit().await?;
                    self.wake.notify_one();
                    Ok(Registered::New)
                })
            }

            fn account_by_email(
                &self,
                email: String,
            ) -> BoxFuture<'_, Result<Option<Account>, AuthStoreError>> {
                Box::pin(self.account_where(
                    "SELECT id, email, password_hash, role FROM credentials WHERE email = ?",
                    email,
                ))
            }

            fn account_by_id(
                &self,
                id: String,
            ) -> BoxFuture<'_, Result<Option<Account>, AuthStoreError>> {
                Box::pin(self.account_where(
                    "SELECT id, email, password_hash, role FROM credentials WHERE id = ?",
                    id,
                ))
            }

            fn admin_exists(&self) -> BoxFuture<'_, Result<bool, AuthStoreError>> {
                Box::pin(async move {
                    let row: Option<AccountRow> =
                        sqlx::query_as(&format!("{ACCOUNT} WHERE role = 'admin' LIMIT 1"))
                            .fetch_optional(&self.pool)
                            .await?;
                    Ok(row.is_some())
                })
            }

            fn due_profiles(
                &self,
                now_ms: i64,
                limit: i64,
            ) -> BoxFuture<'_, Result<Vec<PendingProfile>, AuthStoreError>> {
                Box::pin(async move {
                    let sql = $q(
                        "SELECT user_id, email, name, attempts FROM pending_profiles \
                         WHERE next_attempt_ms <= ? ORDER BY created_ms, user_id LIMIT ?",
                    );
                    let rows: Vec<(String, String, String, i64)> = sqlx::query_as(&sql)
                        .bind(now_ms)
                        .bind(limit)
                        .fetch_all(&self.pool)
                        .await?;
                    Ok(rows
                        .into_iter()
                        .map(|(user_id, email, name, attempts)| PendingProfile {
                            user_id,
                            email,
                            name,
                            attempts,
                        })
                        .collect())
                })
            }

            fn profile_created(&self, user_id: String) -> BoxFuture<'_, Result<(), AuthStoreError>> {
                Box::pin(async move {
                    let sql = $q("DELETE FROM pending_profiles WHERE user_id = ?");
                    sqlx::query(&sql).bind(user_id).execute(&self.pool).await?;
                    Ok(())
                })
            }

            fn profile_failed(
                &self,
                user_id: String,
                attempts: i64,
                next_attempt_ms: i64,
                error: String,
            ) -> BoxFuture<'_, Result<(), AuthStoreError>> {
                Box::pin(async move {
                    let sql = $q(
                        "UPDATE pending_profiles SET attempts = ?, next_attempt_ms = ?, last_error = ? \
                         WHERE user_id = ?",
                    );
                    sqlx::query(&sql)
                        .bind(attempts)
                        .bind(next_attempt_ms)
                        .bind(error)
                        .bind(user_id)
                        .execute(&self.pool)
                        .await?;
                    Ok(())
                })
            }

            fn issue_refresh(&self, record: RefreshRecord) -> BoxFuture<'_, Result<(), AuthStoreError>> {
                Box::pin(async move {
                    let mut tx = self.pool.begin().await?;
                    Self::insert_refresh(&mut tx, &record).await?;
                    tx.commit().await?;
                    Ok(())
                })
            }

            fn rotate_refresh(
                &self,
                token_hash: String,
                successor: RefreshRecord,
                now_ms: i64,
            ) -> BoxFuture<'_, Result<Rotation, AuthStoreError>> {
                Box::pin(async move {
                    let mut tx = self.pool.begin().await?;
                    // The compare-and-set goes first: it takes SQLite's write lock at once,
                    // and of two concurrent presentations exactly one wins.
                    let sql = $q(
                        "UPDATE refresh_tokens SET rotated_ms = ? WHERE token_hash = ? \
                         AND rotated_ms IS NULL AND revoked_ms IS NULL AND expires_ms > ?",
                    );
                    let won = sqlx::query(&sql)
                        .bind(now_ms)
                        .bind(&token_hash)
                        .bind(now_ms)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected()
                        == 1;
                    let sql = $q(
                        "SELECT family_id, user_id, rotated_ms, revoked_ms, expires_ms \
                         FROM refresh_tokens WHERE token_hash = ?",
                    );
                    let row: Option<(String, String, Option<i64>, Option<i64>, i64)> =
                        sqlx::query_as(&sql)
                            .bind(&token_hash)
                            .fetch_optional(&mut *tx)
                            .await?;
                    let Some((family_id, user_id, rotated, revoked, expires_ms)) = row else {
                        return Ok(Rotation::Rejected);
                    };
                    if won {
                        let next = RefreshRecord {
                            family_id,
                            user_id: user_id.clone(),
                            ..successor
                        };
                        Self::insert_refresh(&mut tx, &next).await?;
                        tx.commit().await?;
                        return Ok(Rotation::Rotated { user_id });
                    }
                    let state =
                        RefreshState::of(rotated.is_some(), revoked.is_some(), expires_ms, now_ms);
                    match decide_refresh(state) {
                        RefreshDecision::RevokeFamily => {
                            let sql = $q(
                                "UPDATE refresh_tokens SET revoked_ms = ? \
                                 WHERE family_id = ? AND revoked_ms IS NULL",
                            );
                            sqlx::query(&sql)
                                .bind(now_ms)
                                .bind(&family_id)
                                .execute(&mut *tx)
                                .await?;
                            tx.commit().await?;
                            Ok(Rotation::Reused)
                        }
                        // An active token whose compare-and-set lost cannot be seen inside
                        // the same transaction; refuse rather than guess.
                        RefreshDecision::Rotate | RefreshDecision::Reject => Ok(Rotation::Rejected),
                    }
                })
            }

            fn revoke_family(
                &self,
                token_hash: String,
                now_ms: i64,
            ) -> BoxFuture<'_, Result<bool, AuthStoreError>> {
                Box::pin(async move {
                    let sql = $q(
                        "UPDATE refresh_tokens SET revoked_ms = ? WHERE revoked_ms IS NULL AND family_id = \
                         (SELECT family_id FROM refresh_tokens WHERE token_hash = ?)",
                    );
                    let n = sqlx::query(&sql)
                        .bind(now_ms)
                        .bind(&token_hash)
                        .execute(&self.pool)
                        .await?
                        .rows_affected();
                    Ok(n > 0)
                })
            }

            fn purge_refresh(&self, cutoff_ms: i64) -> BoxFuture<'_, Result<u64, AuthStoreError>> {
                Box::pin(async move {
                    let sql = $q("DELETE FROM refresh_tokens WHERE expires_ms < ?");
                    Ok(sqlx::query(&sql)
                        .bind(cutoff_ms)
                        .execute(&self.pool)
                        .await?
                        .rows_affected())
                })
            }

            fn keys(&self) -> BoxFuture<'_, Result<Vec<StoredKey>, AuthStoreError>> {
                Box::pin(async move {
                    let rows: Vec<KeyRow> = sqlx::query_as(
                        "SELECT kid, private_key, public_key, created_ms, rotated_ms, retire_after_ms \
                         FROM signing_keys ORDER BY created_ms DESC, kid DESC",
                    )
                    .fetch_all(&self.pool)
                    .await?;
                    Ok(rows.into_iter().map(StoredKey::from).collect())
                })
            }

            fn add_key(
                &self,
                key: StoredKey,
                retire_previous_ms: i64,
            ) -> BoxFuture<'_, Result<(), AuthStoreError>> {
                Box::pin(async move {
                    let mut tx = self.pool.begin().await?;
                    let sql = $q(
                        "UPDATE signing_keys SET rotated_ms = ?, retire_after_ms = ? WHERE rotated_ms IS NULL",
                    );
                    sqlx::query(&sql)
                        .bind(key.created_ms)
                        .bind(retire_previous_ms)
                        .execute(&mut *tx)
                        .await?;
                    let sql = $q(
                        "INSERT INTO signing_keys (kid, private_key, public_key, created_ms) VALUES (?, ?, ?, ?)",
                    );
                    sqlx::query(&sql)
                        .bind(&key.kid)
                        .bind(key.private_key.expose_secret())
                        .bind(&key.public_key)
                        .bind(key.created_ms)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    Ok(())
                })
            }

            fn locked_until(
                &self,
                keys: Vec<String>,
                now_ms: i64,
            ) -> BoxFuture<'_, Result<Option<i64>, AuthStoreError>> {
                Box::pin(async move {
                    let sql = $q(
                        "SELECT locked_until_ms FROM login_throttle WHERE throttle_key = ? AND locked_until_ms > ?",
                    );
                    let mut latest = None;
                    for key in keys {
                        let row: Option<(i64,)> = sqlx::query_as(&sql)
                            .bind(key)
                            .bind(now_ms)
                            .fetch_optional(&self.pool)
                            .await?;
                        if let Some((until,)) = row {
                            latest = latest.max(Some(until));
                        }
                    }
                    Ok(latest)
                })
            }

            fn record_failure(
                &self,
                key: String,
                now_ms: i64,
                window_ms: i64,
            ) -> BoxFuture<'_, Result<u32, AuthStoreError>> {
                Box::pin(async move {
                    // One statement, so concurrent failures are each counted.
                    let sql = $q(
                        "INSERT INTO login_throttle (throttle_key, failures, last_failure_ms, locked_until_ms) \
                         VALUES (?, 1, ?, 0) ON CONFLICT (throttle_key) DO UPDATE SET \
                         failures = CASE WHEN login_throttle.last_failure_ms >= ? \
                             OR login_throttle.locked_until_ms > ? \
                             THEN login_throttle.failures + 1 ELSE 1 END, \
                         last_failure_ms = excluded.last_failure_ms \
                         RETURNING failures",
                    );
                    let (failures,): (i64,) = sqlx::query_as(&sql)
                        .bind(&key)
                        .bind(now_ms)
                        .bind(now_ms.saturating_sub(window_ms))
                        .bind(now_ms)
                        .fetch_one(&self.pool)
                        .await?;
                    Ok(u32::try_from(failures).unwrap_or(u32::MAX))
                })
            }

            fn lock(&self, key: String, until_ms: i64) -> BoxFuture<'_, Result<(), AuthStoreError>> {
                Box::pin(async move {
                    let sql = $q(
                        "UPDATE login_throttle SET locked_until_ms = ? WHERE throttle_key = ? AND locked_until_ms < ?",
                    );
                    sqlx::query(&sql)
                        .bind(until_ms)
                        .bind(key)
                        .bind(until_ms)
                        .execute(&self.pool)
                        .await?;
                    Ok(())
                })
            }

            fn clear_failures(&self, key: String) -> BoxFuture<'_, Result<(), AuthStoreError>> {
                Box::pin(async move {
                    let sql = $q("DELETE FROM login_throttle WHERE throttle_key = ?");
                    sqlx::query(&sql).bind(key).execute(&self.pool).await?;
                    Ok(())
                })
            }

            fn outbox(&self) -> (Arc<dyn OutboxStore>, Arc<Notify>) {
                (Arc::new(self.pool.clone()), self.wake.clone())
            }

            fn ping(&self) -> BoxFuture<'_, Result<(), AuthStoreError>> {
                Box::pin(async move {
                    sqlx::query("SELECT 1").execute(&self.pool).await?;
                    Ok(())
                })
            }
        }
    };
}

auth_store!(
    /// Auth's state in SQLite (embedded default).
    SqliteAuthStore,
    sqlx::Sqlite,
    sqlx::SqlitePool,
    kit::store::sqlite::open,
    SQLITE_MIGRATIONS,
    kit_events::outbox::enqueue,
    sqlite
);

auth_store!(
    /// Auth's state in PostgreSQL (production).
    PgAuthStore,
    sqlx::Postgres,
    sqlx::PgPool,
    kit::store::postgres::open,
    POSTGRES_MIGRATIONS,
    kit_events::outbox::postgres::enqueue,
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
