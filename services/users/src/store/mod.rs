//! Where profiles are kept: one trait, one implementation per SQL backend. SQLite is the
//! embedded default; PostgreSQL (`FLOTILLA_USERS__STORE=postgres://…`) is the
//! production engine. Both run the same SQL (written with `?` placeholders, numbered for
//! PostgreSQL) and pass the same tests.

pub mod sql;

use std::sync::Arc;

use kit::discovery::BoxFuture;
use kit::store::StoreError;
use kit::telemetry::db::Db;

use crate::domain::Profile;

/// The profile store failed.
#[derive(Debug, thiserror::Error)]
#[error("users store: {0}")]
pub struct ProfileStoreError(pub String);

impl From<sqlx::Error> for ProfileStoreError {
    fn from(e: sqlx::Error) -> Self {
        Self(e.to_string())
    }
}

/// What [`ProfileStore::create`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// The profile was stored.
    New(Profile),
    /// A profile with this id existed already; it is returned unchanged.
    Existing(Profile),
}

impl Created {
    /// The profile, new or existing.
    pub fn profile(self) -> Profile {
        match self {
            Self::New(p) | Self::Existing(p) => p,
        }
    }
}

/// Where profiles are kept.
pub trait ProfileStore: Send + Sync + 'static {
    /// Stores `profile` unless one with its id exists (idempotent by id).
    fn create(&self, profile: Profile) -> BoxFuture<'_, Result<Created, ProfileStoreError>>;
    /// One profile.
    fn get(&self, id: String) -> BoxFuture<'_, Result<Option<Profile>, ProfileStoreError>>;
    /// Sets the name; `None` if there is no such profile.
    fn rename(
        &self,
        id: String,
        name: String,
        at: String,
    ) -> BoxFuture<'_, Result<Option<Profile>, ProfileStoreError>>;
    /// Checks the backend answers.
    fn ping(&self) -> BoxFuture<'_, Result<(), ProfileStoreError>>;
}

/// Opens the store a URL names (`sqlite://…` or `postgres://…`); every call but
/// [`ProfileStore::ping`] (probed every few seconds) is a database client span.
pub async fn open(url: &str, setting: &str) -> Result<Arc<dyn ProfileStore>, StoreError> {
    let db = Db::from_url(url);
    match kit::store::scheme(url) {
        "sqlite" => Ok(Arc::new(Traced {
            inner: sql::SqliteProfiles::open(url, setting).await?,
            db,
        })),
        "postgres" | "postgresql" => Ok(Arc::new(Traced {
            inner: sql::PgProfiles::open(url, setting).await?,
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

impl<S: ProfileStore> ProfileStore for Traced<S> {
    fn create(&self, profile: Profile) -> BoxFuture<'_, Result<Created, ProfileStoreError>> {
        Box::pin(
            self.db
                .run("INSERT", "profiles", self.inner.create(profile)),
        )
    }
    fn get(&self, id: String) -> BoxFuture<'_, Result<Option<Profile>, ProfileStoreError>> {
        Box::pin(self.db.run("SELECT", "profiles", self.inner.get(id)))
    }
    fn rename(
        &self,
        id: String,
        name: String,
        at: String,
    ) -> BoxFuture<'_, Result<Option<Profile>, ProfileStoreError>> {
        Box::pin(
            self.db
                .run("UPDATE", "profiles", self.inner.rename(id, name, at)),
        )
    }
    fn ping(&self) -> BoxFuture<'_, Result<(), ProfileStoreError>> {
        self.inner.ping()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(id: &str, name: &str) -> Profile {
        Profile {
            id: id.into(),
            email: format!("{id}@example.com"),
            name: name.into(),
            created_at: "2026-01-01T00:00:00.000Z".into(),
            updated_at: "2026-01-01T00:00:00.000Z".into(),
        }
    }

    async fn conformance(store: Arc<dyn ProfileStore>) {
        let first = store.create(profile("u1", "Ada")).await.unwrap();
        assert!(matches!(first, Created::New(_)));
        let again = store.create(profile("u1", "Other")).await.unwrap();
        assert_eq!(
            again,
            Created::Existing(profile("u1", "Ada")),
            "idempotent by id"
        );
        assert_eq!(store.get("u1".into()).await.unwrap().unwrap().name, "Ada");
        assert!(store.get("u2".into()).await.unwrap().is_none());
        let renamed = store
            .rename(
                "u1".into(),
                "Grace".into(),
                "2026-02-01T00:00:00.000Z".into(),
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(renamed.name, "Grace");
        assert_eq!(renamed.updated_at, "2026-02-01T00:00:00.000Z");
        assert_eq!(renamed.created_at, "2026-01-01T00:00:00.000Z");
        assert!(
            store
                .rename("u2".into(), "X".into(), "t".into())
                .await
                .unwrap()
                .is_none()
        );
        store.ping().await.unwrap();
    }

    #[tokio::test]
    async fn sqlite_conforms() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/users.db", dir.path().display());
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
        let Err(e) = open("redis://x", "FLOTILLA_USERS__STORE").await else {
            panic!("redis is not a profile store");
        };
        assert!(e.to_string().contains("FLOTILLA_USERS__STORE"), "{e}");
    }
}
