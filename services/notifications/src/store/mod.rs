//! Where notifications keeps what it sent, who it writes to, and the inbox of handled
//! events: one trait, one implementation per SQL backend. SQLite is the embedded
//! default; PostgreSQL (`FLOTILLA_NOTIFICATIONS__STORE=postgres://…`) is the production
//! engine. Both run the same SQL and pass the same tests.

pub mod sql;

use std::sync::Arc;

use kit::discovery::BoxFuture;
use kit::store::StoreError;
use kit::telemetry::db::Db;
use kit_events::outbox::InboxPage;

use crate::domain::Recipient;

/// The store failed.
#[derive(Debug, thiserror::Error)]
#[error("notifications store: {0}")]
pub struct NotificationStoreError(pub String);

impl From<sqlx::Error> for NotificationStoreError {
    fn from(e: sqlx::Error) -> Self {
        Self(e.to_string())
    }
}

/// One message that was sent.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Sent {
    /// Its id (UUIDv7, so ids sort by time).
    pub id: String,
    /// The user it went to.
    pub user_id: String,
    /// The event it answers (unique).
    pub event_id: String,
    /// The event's type (`orders.confirmed`).
    pub event_type: String,
    /// What kind of message (`order_confirmed`).
    pub kind: String,
    /// `email`.
    pub channel: String,
    /// The address it went to.
    pub recipient: String,
    /// Subject line.
    pub subject: String,
    /// Body.
    pub body: String,
    /// Its Message-ID header.
    pub message_id: String,
    /// `sent`.
    pub status: String,
    /// When it was sent (RFC 3339 UTC).
    pub created_at: String,
}

/// What handling one event changes, applied in one transaction with its inbox entry.
#[derive(Debug, Clone, Default)]
pub struct Effect {
    /// A recipient learned from the event (`users.registered`): `(user id, recipient)`.
    pub recipient: Option<(String, Recipient)>,
    /// The message sent for it.
    pub sent: Option<Sent>,
}

/// Where notifications keeps its state.
pub trait NotificationStore: Send + Sync + 'static {
    /// Whether `consumer` has handled `event_id` already.
    fn handled<'a>(
        &'a self,
        consumer: &'a str,
        event_id: &'a str,
    ) -> BoxFuture<'a, Result<bool, NotificationStoreError>>;
    /// The address of a user, if a registration told us.
    fn recipient<'a>(
        &'a self,
        user_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Recipient>, NotificationStoreError>>;
    /// Records that `consumer` handled `event_id` and applies `effect`, in one
    /// transaction; `false` (and nothing applied) if it was handled before.
    fn record<'a>(
        &'a self,
        consumer: &'a str,
        event_id: &'a str,
        effect: Effect,
    ) -> BoxFuture<'a, Result<bool, NotificationStoreError>>;
    /// A user's messages, newest first: up to `limit`, older than the id `before`.
    fn list<'a>(
        &'a self,
        user_id: &'a str,
        before: Option<&'a str>,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<Sent>, NotificationStoreError>>;
    /// Every message sent for `event_id` (tests and operators: exactly one, or none).
    fn by_event<'a>(
        &'a self,
        event_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Sent>, NotificationStoreError>>;
    /// A page of the events `consumer` handled (its inbox), in event-id order: up to
    /// `limit` (1 to 1000) after the id `after`.
    fn inbox<'a>(
        &'a self,
        consumer: &'a str,
        after: Option<&'a str>,
        limit: u32,
    ) -> BoxFuture<'a, Result<InboxPage, NotificationStoreError>>;
    /// Checks the backend answers.
    fn ping(&self) -> BoxFuture<'_, Result<(), NotificationStoreError>>;
}

/// Opens the store a URL names (`sqlite://…` or `postgres://…`); every call but
/// [`NotificationStore::ping`] (probed every few seconds) is a database client span.
pub async fn open(url: &str, setting: &str) -> Result<Arc<dyn NotificationStore>, StoreError> {
    let db = Db::from_url(url);
    match kit::store::scheme(url) {
        "sqlite" => Ok(Arc::new(Traced {
            inner: sql::SqliteNotifications::open(url, setting).await?,
            db,
        })),
        "postgres" | "postgresql" => Ok(Arc::new(Traced {
            inner: sql::PgNotifications::open(url, setting).await?,
            db,
        })),
        _ => Err(StoreError::UnknownScheme {
            setting: setting.to_owned(),
            url: kit::store::redact(url),
            expected: "sqlite://, postgres://",
        }),
    }
}

/// A store whose calls are database client spans (see `kit::telemetry::db`).
struct Traced<S> {
    inner: S,
    db: Db,
}

impl<S: NotificationStore> NotificationStore for Traced<S> {
    fn handled<'a>(
        &'a self,
        consumer: &'a str,
        event_id: &'a str,
    ) -> BoxFuture<'a, Result<bool, NotificationStoreError>> {
        Box::pin(
            self.db
                .run("SELECT", "inbox", self.inner.handled(consumer, event_id)),
        )
    }
    fn recipient<'a>(
        &'a self,
        user_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Recipient>, NotificationStoreError>> {
        Box::pin(
            self.db
                .run("SELECT", "recipients", self.inner.recipient(user_id)),
        )
    }
    fn record<'a>(
        &'a self,
        consumer: &'a str,
        event_id: &'a str,
        effect: Effect,
    ) -> BoxFuture<'a, Result<bool, NotificationStoreError>> {
        let call = self.inner.record(consumer, event_id, effect);
        Box::pin(self.db.run("INSERT", "notifications", call))
    }
    fn list<'a>(
        &'a self,
        user_id: &'a str,
        before: Option<&'a str>,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<Sent>, NotificationStoreError>> {
        let call = self.inner.list(user_id, before, limit);
        Box::pin(self.db.run("SELECT", "notifications", call))
    }
    fn by_event<'a>(
        &'a self,
        event_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Sent>, NotificationStoreError>> {
        Box::pin(
            self.db
                .run("SELECT", "notifications", self.inner.by_event(event_id)),
        )
    }
    fn inbox<'a>(
        &'a self,
        consumer: &'a str,
        after: Option<&'a str>,
        limit: u32,
    ) -> BoxFuture<'a, Result<InboxPage, NotificationStoreError>> {
        Box::pin(
            self.db
                .run("SELECT", "inbox", self.inner.inbox(consumer, after, limit)),
        )
    }
    fn ping(&self) -> BoxFuture<'_, Result<(), NotificationStoreError>> {
        self.inner.ping()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(id: &str, user: &str, event: &str) -> Sent {
        Sent {
            id: id.into(),
            user_id: user.into(),
            event_id: event.into(),
            event_type: "orders.confirmed".into(),
            kind: "order_confirmed".into(),
            channel: "email".into(),
            recipient: format!("{user}@example.com"),
            subject: "Order o1 confirmed".into(),
            body: "Hello".into(),
            message_id: format!("<{event}@notifications.flotilla>"),
            status: "sent".into(),
            created_at: "2026-01-01T00:00:00.000Z".into(),
        }
    }

    async fn conformance(store: Arc<dyn NotificationStore>) {
        assert!(store.recipient("u1").await.unwrap().is_none());
        let ada = Recipient {
            email: "ada@example.com".into(),
            name: "Ada".into(),
        };
        let first = Effect {
            recipient: Some(("u1".into(), ada.clone())),
            sent: Some(sent("01", "u1", "e1")),
        };
        assert!(!store.handled("mail", "e1").await.unwrap());
        assert!(store.record("mail", "e1", first.clone()).await.unwrap());
        assert!(store.handled("mail", "e1").await.unwrap());
        assert!(
            !store.record("mail", "e1", first).await.unwrap(),
            "a redelivery has no second effect"
        );
        assert_eq!(store.by_event("e1").await.unwrap().len(), 1);
        assert_eq!(store.recipient("u1").await.unwrap(), Some(ada));

        for (id, event) in [("02", "e2"), ("03", "e3")] {
            let effect = Effect {
                recipient: None,
                sent: Some(sent(id, "u1", event)),
            };
            assert!(store.record("mail", event, effect).await.unwrap());
        }
        store
            .record(
                "mail",
                "e4",
                Effect {
                    recipient: None,
                    sent: Some(sent("04", "u2", "e4")),
                },
            )
            .await
            .unwrap();
        let page: Vec<String> = store
            .list("u1", None, 2)
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(page, ["03", "02"], "newest first, only the user's");
        let rest: Vec<String> = store
            .list("u1", Some("02"), 2)
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(rest, ["01"]);
        // An event with no effect (nothing to send) is still recorded as handled.
        assert!(store.record("mail", "e5", Effect::default()).await.unwrap());
        assert!(store.handled("mail", "e5").await.unwrap());
        store
            .record("other", "e0", Effect::default())
            .await
            .unwrap();
        let inbox = store.inbox("mail", None, 3).await.unwrap();
        assert_eq!(inbox.group, "mail");
        let ids: Vec<&str> = inbox.events.iter().map(|e| e.event_id.as_str()).collect();
        assert_eq!(ids, ["e1", "e2", "e3"], "by event id, only this consumer's");
        assert_eq!(inbox.next.as_deref(), Some("e3"));
        let rest = store.inbox("mail", inbox.next.as_deref(), 3).await.unwrap();
        let ids: Vec<&str> = rest.events.iter().map(|e| e.event_id.as_str()).collect();
        assert_eq!(ids, ["e4", "e5"]);
        assert_eq!(rest.next, None);
        store.ping().await.unwrap();
    }

    #[tokio::test]
    async fn sqlite_conforms() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/notifications.db", dir.path().display());
        conformance(open(&url, "X").await.unwrap()).await;
    }

    #[tokio::test]
    async fn postgres_conforms() {
        use kit::store::testing::{Server, TestDatabase};
        let Some(db) = TestDatabase::create(Server::Postgres).await else {
            return;
        };
        conformance(open(&db.url, "X").await.unwrap()).await;
        db.drop_database().await;
    }

    #[tokio::test]
    async fn unknown_backends_name_the_setting() {
        let Err(e) = open("redis://x", "FLOTILLA_NOTIFICATIONS__STORE").await else {
            panic!("redis is not a notifications store");
        };
        assert!(
            e.to_string().contains("FLOTILLA_NOTIFICATIONS__STORE"),
            "{e}"
        );
    }
}
