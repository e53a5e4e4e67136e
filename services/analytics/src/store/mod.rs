//! Where analytics keeps its projections, the inbox of the events they contain, and the
//! generation of the replay they come from: one trait, SQLite (embedded default) and
//! PostgreSQL (`FLOTILLA_ANALYTICS__STORE=postgres://…`), the same SQL for both.

pub mod sql;

use std::collections::BTreeMap;
use std::sync::Arc;

use kit::discovery::BoxFuture;
use kit::store::StoreError;
use kit::telemetry::db::Db;
use kit_events::outbox::InboxPage;

use crate::domain::Projection;

/// The store failed.
#[derive(Debug, thiserror::Error)]
#[error("analytics store: {0}")]
pub struct AnalyticsStoreError(pub String);

impl From<sqlx::Error> for AnalyticsStoreError {
    fn from(e: sqlx::Error) -> Self {
        Self(e.to_string())
    }
}

/// What [`AnalyticsStore::apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Counted.
    New,
    /// Counted before (a redelivery): nothing changed.
    Duplicate,
    /// The projections were rebuilt since this consumer started: nothing changed, and
    /// the consumer must follow the new generation.
    Stale,
}

/// Summed counters and units per SKU since a bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    /// Counter name → sum.
    pub counters: BTreeMap<String, i64>,
    /// `(sku, units)`.
    pub products: Vec<(String, i64)>,
}

/// Where the projections live.
pub trait AnalyticsStore: Send + Sync + 'static {
    /// The current generation (1 until the first rebuild).
    fn generation(&self) -> BoxFuture<'_, Result<i64, AnalyticsStoreError>>;
    /// In one transaction: records `event_id` in the inbox of `consumer` and adds
    /// `projection` (if any), provided the projections are still of `generation`.
    fn apply<'a>(
        &'a self,
        generation: i64,
        consumer: &'a str,
        event_id: &'a str,
        projection: Option<&'a Projection>,
    ) -> BoxFuture<'a, Result<Applied, AnalyticsStoreError>>;
    /// The sums over buckets from `first_bucket` on.
    fn totals(&self, first_bucket: i64) -> BoxFuture<'_, Result<Totals, AnalyticsStoreError>>;
    /// Drops every projection and inbox entry and starts a new generation; returns it.
    fn rebuild(&self) -> BoxFuture<'_, Result<i64, AnalyticsStoreError>>;
    /// A page of the events `consumer` counted (its inbox), in event-id order: up to
    /// `limit` (1 to 1000) after the id `after`.
    fn inbox<'a>(
        &'a self,
        consumer: &'a str,
        after: Option<&'a str>,
        limit: u32,
    ) -> BoxFuture<'a, Result<InboxPage, AnalyticsStoreError>>;
    /// Checks the backend answers.
    fn ping(&self) -> BoxFuture<'_, Result<(), AnalyticsStoreError>>;
}

/// Opens the store a URL names (`sqlite://…` or `postgres://…`); every call but the
/// polled ones ([`AnalyticsStore::ping`], [`AnalyticsStore::generation`]) is a database
/// client span.
pub async fn open(url: &str, setting: &str) -> Result<Arc<dyn AnalyticsStore>, StoreError> {
    let db = Db::from_url(url);
    match kit::store::scheme(url) {
        "sqlite" => Ok(Arc::new(Traced {
            inner: sql::SqliteAnalytics::open(url, setting).await?,
            db,
        })),
        "postgres" | "postgresql" => Ok(Arc::new(Traced {
            inner: sql::PgAnalytics::open(url, setting).await?,
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

impl<S: AnalyticsStore> AnalyticsStore for Traced<S> {
    fn generation(&self) -> BoxFuture<'_, Result<i64, AnalyticsStoreError>> {
        // Polled on a timer (has a rebuild started?): no span per tick.
        self.inner.generation()
    }
    fn apply<'a>(
        &'a self,
        generation: i64,
        consumer: &'a str,
        event_id: &'a str,
        projection: Option<&'a Projection>,
    ) -> BoxFuture<'a, Result<Applied, AnalyticsStoreError>> {
        let call = self.inner.apply(generation, consumer, event_id, projection);
        Box::pin(self.db.run("UPSERT", "counters", call))
    }
    fn totals(&self, first_bucket: i64) -> BoxFuture<'_, Result<Totals, AnalyticsStoreError>> {
        Box::pin(
            self.db
                .run("SELECT", "counters", self.inner.totals(first_bucket)),
        )
    }
    fn rebuild(&self) -> BoxFuture<'_, Result<i64, AnalyticsStoreError>> {
        Box::pin(self.db.run("DELETE", "counters", self.inner.rebuild()))
    }
    fn inbox<'a>(
        &'a self,
        consumer: &'a str,
        after: Option<&'a str>,
        limit: u32,
    ) -> BoxFuture<'a, Result<InboxPage, AnalyticsStoreError>> {
        Box::pin(
            self.db
                .run("SELECT", "inbox", self.inner.inbox(consumer, after, limit)),
        )
    }
    fn ping(&self) -> BoxFuture<'_, Result<(), AnalyticsStoreError>> {
        self.inner.ping()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::metric;

    fn order(bucket: i64, cents: i64) -> Projection {
        Projection {
            bucket,
            counters: vec![
                (metric::EVENTS, 1),
                (metric::CONFIRMED, 1),
                (metric::REVENUE_CENTS, cents),
            ],
            products: vec![("A".into(), 2)],
        }
    }

    async fn conformance(store: Arc<dyn AnalyticsStore>) {
        assert_eq!(store.generation().await.unwrap(), 1);
        let g = "analytics-g1";
        assert_eq!(
            store
                .apply(1, g, "e1", Some(&order(10, 500)))
                .await
                .unwrap(),
            Applied::New
        );
        assert_eq!(
            store
                .apply(1, g, "e1", Some(&order(10, 500)))
                .await
                .unwrap(),
            Applied::Duplicate,
            "a redelivery counts once"
        );
        store
            .apply(1, g, "e2", Some(&order(10, 250)))
            .await
            .unwrap();
        store
            .apply(1, g, "e3", Some(&order(20, 100)))
            .await
            .unwrap();
        store.apply(1, g, "e4", None).await.unwrap();
        let all = store.totals(0).await.unwrap();
        assert_eq!(all.counters["confirmed"], 3);
        assert_eq!(all.counters["revenue_cents"], 850);
        assert_eq!(all.products, [("A".to_owned(), 6)]);
        let late = store.totals(11).await.unwrap();
        assert_eq!(late.counters["revenue_cents"], 100);
        let inbox = store.inbox(g, None, 1000).await.unwrap();
        let ids: Vec<&str> = inbox.events.iter().map(|e| e.event_id.as_str()).collect();
        assert_eq!(ids, ["e1", "e2", "e3", "e4"], "each counted event once");
        assert_eq!((inbox.group.as_str(), inbox.next), (g, None));
        let page = store.inbox(g, Some("e1"), 2).await.unwrap();
        assert_eq!(page.events.len(), 2);
        assert_eq!(page.next.as_deref(), Some("e3"));

        assert_eq!(store.rebuild().await.unwrap(), 2);
        assert_eq!(store.generation().await.unwrap(), 2);
        assert_eq!(store.totals(0).await.unwrap(), Totals::default());
        assert_eq!(
            store.apply(1, g, "e5", Some(&order(10, 1))).await.unwrap(),
            Applied::Stale,
            "the old generation writes nothing"
        );
        assert_eq!(store.totals(0).await.unwrap(), Totals::default());
        assert_eq!(
            store
                .apply(2, "analytics-g2", "e1", Some(&order(10, 500)))
                .await
                .unwrap(),
            Applied::New,
            "the replay counts again"
        );
        assert!(
            store.inbox(g, None, 10).await.unwrap().events.is_empty(),
            "a rebuild empties the inbox"
        );
        store.ping().await.unwrap();
    }

    #[tokio::test]
    async fn sqlite_conforms() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/analytics.db", dir.path().display());
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
        let Err(e) = open("mysql://x", "FLOTILLA_ANALYTICS__STORE").await else {
            panic!("mysql is not an analytics store");
        };
        assert!(e.to_string().contains("FLOTILLA_ANALYTICS__STORE"), "{e}");
    }
}
