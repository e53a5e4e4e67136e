//! Database client spans: one span per store call, named `<operation> <collection>`
//! (`SELECT orders`), with the attributes OpenTelemetry's database conventions name:
//! `db.system.name`, `db.operation.name`, `db.collection.name` and, where the store knows
//! it, `db.namespace`. No statement text is captured, so no parameter can leak and a
//! call costs one span.
//!
//! ```ignore
//! let db = kit::telemetry::db::Db::from_url(&url);
//! let rows = db.run("SELECT", "orders", sqlx::query(SQL).fetch_all(&pool)).await?;
//! ```

use std::future::Future;
use std::sync::Arc;

use tracing::Instrument;

/// `db.system.name` of the stores Flotilla services use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    /// An embedded SQLite file.
    Sqlite,
    /// PostgreSQL.
    Postgresql,
    /// MySQL or MariaDB.
    Mysql,
    /// Redis.
    Redis,
}

impl System {
    /// The attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgresql => "postgresql",
            Self::Mysql => "mysql",
            Self::Redis => "redis",
        }
    }

    /// The system a store URL names by its scheme (`postgres://`, `mysql://`,
    /// `mariadb://`, `redis://`, `rediss://`, `sqlite:`), if it is one of these.
    pub fn from_url(url: &str) -> Option<Self> {
        let scheme = url.split(':').next()?.to_ascii_lowercase();
        match scheme.as_str() {
            "sqlite" => Some(Self::Sqlite),
            "postgres" | "postgresql" => Some(Self::Postgresql),
            "mysql" | "mariadb" => Some(Self::Mysql),
            "redis" | "rediss" => Some(Self::Redis),
            _ => None,
        }
    }
}

/// The database of one store: what its spans say about it.
#[derive(Debug, Clone)]
pub struct Db {
    system: System,
    namespace: Option<Arc<str>>,
}

impl Db {
    /// A store of `system` without a namespace.
    pub fn new(system: System) -> Self {
        Self {
            system,
            namespace: None,
        }
    }

    /// The same store in `namespace` (the database name; for Redis, the database index).
    pub fn with_namespace(mut self, namespace: &str) -> Self {
        self.namespace = Some(Arc::from(namespace));
        self
    }

    /// The store a URL names: its system from the scheme, its namespace from the path
    /// (`postgres://u:p@h/orders` → `orders`; `redis://h/2` → `2`; none for SQLite, whose
    /// path is a file). A URL of an unknown scheme counts as SQLite, the embedded default.
    pub fn from_url(url: &str) -> Self {
        let system = System::from_url(url).unwrap_or(System::Sqlite);
        let db = Self::new(system);
        if system == System::Sqlite {
            return db;
        }
        match namespace_of(url) {
            Some(ns) => db.with_namespace(ns),
            None => db,
        }
    }

    /// The system.
    pub fn system(&self) -> System {
        self.system
    }

    /// A client span for one `operation` (`SELECT`, `INSERT`, `EVALSHA`…) on
    /// `collection` (a table, or a Redis key family).
    pub fn span(&self, operation: &str, collection: &str) -> tracing::Span {
        span_in(
            self.system,
            self.namespace.as_deref(),
            operation,
            collection,
        )
    }

    /// Runs `call` inside [`Db::span`], marking the span failed when it fails.
    pub async fn run<T, E, F>(&self, operation: &str, collection: &str, call: F) -> Result<T, E>
    where
        F: Future<Output = Result<T, E>>,
        E: std::fmt::Display,
    {
        let span = self.span(operation, collection);
        let result = call.instrument(span.clone()).await;
        if let Err(e) = &result {
            record_error(&span, e);
        }
        result
    }
}

/// A database client span (see the module docs); `namespace` is the database name.
pub fn span_in(
    system: System,
    namespace: Option<&str>,
    operation: &str,
    collection: &str,
) -> tracing::Span {
    tracing::info_span!(
        "db",
        otel.name = %format_args!("{operation} {collection}"),
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        db.system.name = system.as_str(),
        db.operation.name = operation,
        db.collection.name = collection,
        db.namespace = namespace,
        error.type = tracing::field::Empty,
    )
}

/// A client span without a namespace: `span(System::Sqlite, "SELECT", "outbox")`.
pub fn span(system: System, operation: &str, collection: &str) -> tracing::Span {
    span_in(system, None, operation, collection)
}

/// Marks a database span failed, with the error's text as `error.type`.
pub fn record_error(span: &tracing::Span, error: &dyn std::fmt::Display) {
    span.record("otel.status_code", "ERROR");
    span.record("error.type", tracing::field::display(error));
}

/// The path of a server URL, without query: the database name.
fn namespace_of(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let path = &rest[rest.find('/')? + 1..];
    let name = path.split(['?', '#']).next()?;
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systems_and_namespaces_come_from_the_url() {
        let pg = Db::from_url(
            "postgres://flotilla_orders:pw@127.0.0.1:5432/flotilla_orders?sslmode=disable",
        );
        assert_eq!(pg.system(), System::Postgresql);
        assert_eq!(pg.namespace.as_deref(), Some("flotilla_orders"));
        let redis = Db::from_url("redis://u:p@127.0.0.1:6379/0");
        assert_eq!(redis.system(), System::Redis);
        assert_eq!(redis.namespace.as_deref(), Some("0"));
        assert_eq!(Db::from_url("mariadb://h/pay").system(), System::Mysql);
        let lite = Db::from_url("sqlite:///data/orders.db");
        assert_eq!(lite.system(), System::Sqlite);
        assert_eq!(lite.namespace, None, "a file path is no database name");
        assert_eq!(Db::from_url("mysql://h:3306").namespace, None);
        assert_eq!(System::from_url("nats://x"), None);
    }

    #[tokio::test]
    async fn a_failed_call_is_passed_through() {
        let db = Db::new(System::Sqlite);
        let ok: Result<u8, String> = db.run("SELECT", "orders", async { Ok(1) }).await;
        assert_eq!(ok, Ok(1));
        let err: Result<u8, String> = db
            .run("INSERT", "orders", async { Err("locked".to_owned()) })
            .await;
        assert_eq!(err, Err("locked".to_owned()));
    }
}
