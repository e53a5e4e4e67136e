//! The SQL backends: SQLite (embedded default) and PostgreSQL (production), from one
//! implementation written against both (`?` placeholders, numbered for PostgreSQL).

use kit::discovery::BoxFuture;
use kit::store::{Migration, StoreError};

use kit_events::outbox::InboxPage;

use super::{Effect, NotificationStore, NotificationStoreError, Sent};
use crate::domain::Recipient;

static SQLITE_MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "outbox and inbox",
        sql: kit_events::outbox::SQLITE_SCHEMA,
    },
    Migration {
        version: 2,
        description: "notifications",
        sql: include_str!("../../migrations/sqlite/0001_notifications.sql"),
    },
];

static POSTGRES_MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "outbox and inbox",
        sql: kit_events::outbox::POSTGRES_SCHEMA,
    },
    Migration {
        version: 2,
        description: "notifications",
        sql: include_str!("../../migrations/postgres/0001_notifications.sql"),
    },
];

const COLUMNS: &str = "id, user_id, event_id, event_type, kind, channel, recipient, subject, \
                       body, message_id, status, created_at";

// SQLite takes the statements as written; PostgreSQL numbers its placeholders.
use kit::store::postgres::statement as postgres;
use kit::store::sqlite::statement as sqlite;

macro_rules! notifications {
    ($(#[$doc:meta])* $name:ident, $pool:ty, $open:path, $migrations:ident, $q:path, $handled:path, $inbox:path) => {
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
        }

        impl NotificationStore for $name {
            fn handled<'a>(
                &'a self,
                consumer: &'a str,
                event_id: &'a str,
            ) -> BoxFuture<'a, Result<bool, NotificationStoreError>> {
                Box::pin(async move {
                    let sql = $q("SELECT COUNT(*) FROM inbox WHERE consumer = ? AND event_id = ?");
                    let (n,): (i64,) = sqlx::query_as(&sql)
                        .bind(consumer)
                        .bind(event_id)
                        .fetch_one(&self.pool)
                        .await?;
                    Ok(n > 0)
                })
            }

            fn recipient<'a>(
                &'a self,
                user_id: &'a str,
            ) -> BoxFuture<'a, Result<Option<Recipient>, NotificationStoreError>> {
                Box::pin(async move {
                    let sql = $q("SELECT email, name FROM recipients WHERE user_id = ?");
                    let row: Option<(String, String)> = sqlx::query_as(&sql)
                        .bind(user_id)
                        .fetch_optional(&self.pool)
                        .await?;
                    Ok(row.map(|(email, name)| Recipient { email, name }))
                })
            }

            fn record<'a>(
                &'a self,
                consumer: &'a str,
                event_id: &'a str,
                effect: Effect,
            ) -> BoxFuture<'a, Result<bool, NotificationStoreError>> {
                Box::pin(async move {
                    let mut tx = self.pool.begin().await?;
                    if !$handled(&mut *tx, consumer, event_id).await? {
                        tx.rollback().await?;
                        return Ok(false);
                    }
                    if let Some((user_id, r)) = &effect.recipient {
                        let sql = $q(
                            "INSERT INTO recipients (user_id, email, name, updated_at) \
                             VALUES (?, ?, ?, ?) ON CONFLICT (user_id) DO UPDATE SET \
                             email = excluded.email, name = excluded.name, \
                             updated_at = excluded.updated_at",
                        );
                        sqlx::query(&sql)
                            .bind(user_id)
                            .bind(&r.email)
                            .bind(&r.name)
                            .bind(crate::now_rfc3339())
                            .execute(&mut *tx)
                            .await?;
                    }
                    if let Some(s) = &effect.sent {
                        let sql = format!(
                            "INSERT INTO notifications ({COLUMNS}) \
                             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
                             ON CONFLICT (event_id) DO NOTHING"
                        );
                        let sql = $q(&sql);
                        sqlx::query(&sql)
                            .bind(&s.id)
                            .bind(&s.user_id)
                            .bind(&s.event_id)
                            .bind(&s.event_type)
                            .bind(&s.kind)
                            .bind(&s.channel)
                            .bind(&s.recipient)
                            .bind(&s.subject)
                            .bind(&s.body)
                            .bind(&s.message_id)
                            .bind(&s.status)
                            .bind(&s.created_at)
                            .execute(&mut *tx)
                            .await?;
                    }
                    tx.commit().await?;
                    Ok(true)
                })
            }

            fn list<'a>(
                &'a self,
                user_id: &'a str,
                before: Option<&'a str>,
                limit: u32,
            ) -> BoxFuture<'a, Result<Vec<Sent>, NotificationStoreError>> {
                Box::pin(async move {
                    let sql = match before {
                        Some(_) => format!(
                            "SELECT {COLUMNS} FROM notifications WHERE user_id = ? AND id < ? \
                             ORDER BY id DESC LIMIT ?"
                        ),
                        None => format!(
                            "SELECT {COLUMNS} FROM notifications WHERE user_id = ? \
                             ORDER BY id DESC LIMIT ?"
                        ),
                    };
                    let sql = $q(&sql);
                    let mut query = sqlx::query_as::<_, Sent>(&sql).bind(user_id);
                    if let Some(b) = before {
                        query = query.bind(b);
                    }
                    Ok(query.bind(i64::from(limit)).fetch_all(&self.pool).await?)
                })
            }

            fn by_event<'a>(
                &'a self,
                event_id: &'a str,
            ) -> BoxFuture<'a, Result<Vec<Sent>, NotificationStoreError>> {
                Box::pin(async move {
                    let sql = format!("SELECT {COLUMNS} FROM notifications WHERE event_id = ?");
                    let sql = $q(&sql);
                    Ok(sqlx::query_as::<_, Sent>(&sql)
                        .bind(event_id)
                        .fetch_all(&self.pool)
                        .await?)
                })
            }

            fn inbox<'a>(
                &'a self,
                consumer: &'a str,
                after: Option<&'a str>,
                limit: u32,
            ) -> BoxFuture<'a, Result<InboxPage, NotificationStoreError>> {
                Box::pin(async move { Ok($inbox(&self.pool, consumer, after, limit).await?) })
            }

            fn ping(&self) -> BoxFuture<'_, Result<(), NotificationStoreError>> {
                Box::pin(async move {
                    sqlx::query("SELECT 1").execute(&self.pool).await?;
                    Ok(())
                })
            }
        }
    };
}

notifications!(
    /// Notifications in SQLite (embedded default).
    SqliteNotifications,
    sqlx::SqlitePool,
    kit::store::sqlite::open,
    SQLITE_MIGRATIONS,
    sqlite,
    kit_events::outbox::record_handled,
    kit_events::outbox::inbox_page
);

notifications!(
    /// Notifications in PostgreSQL (production).
    PgNotifications,
    sqlx::PgPool,
    kit::store::postgres::open,
    POSTGRES_MIGRATIONS,
    postgres,
    kit_events::outbox::postgres::record_handled,
    kit_events::outbox::postgres::inbox_page
);
