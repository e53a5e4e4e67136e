//! Auth's store: credentials, pending profiles, refresh tokens, signing keys, login
//! throttling and the outbox — one trait, one implementation per SQL backend. SQLite is
//! the embedded default; PostgreSQL (`FLOTILLA_AUTH__STORE=postgres://…`) the production
//! engine. Both run the same SQL (written with `?`, numbered for PostgreSQL) and pass the
//! same tests (`tests.rs`).

pub mod sql;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use kit::discovery::BoxFuture;
use kit::store::StoreError;
use kit::telemetry::db::Db;
use secrecy::SecretString;

use crate::domain::Role;

/// The store failed.
#[derive(Debug, thiserror::Error)]
#[error("auth store: {0}")]
pub struct AuthStoreError(pub String);

impl From<sqlx::Error> for AuthStoreError {
    fn from(e: sqlx::Error) -> Self {
        Self(e.to_string())
    }
}

/// One account's credential.
#[derive(Clone)]
pub struct Account {
    /// The user id (UUIDv7).
    pub id: String,
    /// The normalized email.
    pub email: String,
    /// The Argon2id PHC string.
    pub password_hash: String,
    /// Its role.
    pub role: Role,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("id", &self.id)
            .field("email", &self.email)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// A new account, with the profile users must create for it.
#[derive(Debug, Clone)]
pub struct NewAccount {
    /// The account.
    pub account: Account,
    /// The display name (for the profile).
    pub name: String,
    /// Now, ms since the epoch.
    pub created_ms: i64,
}

/// What registering did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registered {
    /// The credential, its pending profile and `users.registered` were stored.
    New,
    /// The email belongs to another account: nothing was stored.
    EmailTaken,
}

/// A profile users has not confirmed yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingProfile {
    /// The user id.
    pub user_id: String,
    /// The email.
    pub email: String,
    /// The name.
    pub name: String,
    /// Failed attempts so far.
    pub attempts: i64,
}

/// A refresh token as stored (its hash, never the token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshRecord {
    /// SHA-256 of the token, hex.
    pub token_hash: String,
    /// The sign-in it descends from.
    pub family_id: String,
    /// Whose it is.
    pub user_id: String,
    /// Issued, ms since the epoch.
    pub issued_ms: i64,
    /// Expires, ms since the epoch.
    pub expires_ms: i64,
}

/// What presenting a refresh token did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// It was active: it is now rotated and the successor is stored.
    Rotated {
        /// Whose it was.
        user_id: String,
    },
    /// It had been rotated already: its family is now revoked.
    Reused,
    /// Unknown, expired or revoked: nothing changed.
    Rejected,
}

/// A signing key as stored.
#[derive(Clone)]
pub struct StoredKey {
    /// Key id (the JWT header's `kid`).
    pub kid: String,
    /// The Ed25519 seed, base64url.
    pub private_key: SecretString,
    /// The Ed25519 public key, base64url.
    pub public_key: String,
    /// Created, ms since the epoch.
    pub created_ms: i64,
    /// When a newer key replaced it.
    pub rotated_ms: Option<i64>,
    /// When it leaves the JWKS.
    pub retire_after_ms: Option<i64>,
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey")
            .field("kid", &self.kid)
            .field("private_key", &"***")
            .field("public_key", &self.public_key)
            .field("created_ms", &self.created_ms)
            .field("rotated_ms", &self.rotated_ms)
            .field("retire_after_ms", &self.retire_after_ms)
            .finish()
    }
}

/// Where auth keeps its state.
pub trait AuthStore: Send + Sync + 'static {
    /// Stores a new account, its pending profile and `event` (for `subject`) in one
    /// transaction.
    fn register(
        &self,
        account: NewAccount,
        subject: &'static str,
        event: kit_events::Event,
    ) -> BoxFuture<'_, Result<Registered, AuthStoreError>>;
    /// The account with this normalized email.
    fn account_by_email(
        &self,
        email: String,
    ) -> BoxFuture<'_, Result<Option<Account>, AuthStoreError>>;
    /// The account with this id.
    fn account_by_id(&self, id: String) -> BoxFuture<'_, Result<Option<Account>, AuthStoreError>>;
    /// Whether any administrator account exists.
    fn admin_exists(&self) -> BoxFuture<'_, Result<bool, AuthStoreError>>;

    /// Up to `limit` pending profiles due at `now_ms`, oldest first.
    fn due_profiles(
        &self,
        now_ms: i64,
        limit: i64,
    ) -> BoxFuture<'_, Result<Vec<PendingProfile>, AuthStoreError>>;
    /// Forgets a pending profile: users has it.
    fn profile_created(&self, user_id: String) -> BoxFuture<'_, Result<(), AuthStoreError>>;
    /// Records a failed attempt and when to try again.
    fn profile_failed(
        &self,
        user_id: String,
        attempts: i64,
        next_attempt_ms: i64,
        error: String,
    ) -> BoxFuture<'_, Result<(), AuthStoreError>>;

    /// Stores a refresh token (a new sign-in's first).
    fn issue_refresh(&self, record: RefreshRecord) -> BoxFuture<'_, Result<(), AuthStoreError>>;
    /// Presents the token hashed as `token_hash` at `now_ms`: rotates it to `successor`
    /// (whose family and user are taken from the presented token), revokes its family if
    /// it was rotated before, or rejects it.
    fn rotate_refresh(
        &self,
        token_hash: String,
        successor: RefreshRecord,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<Rotation, AuthStoreError>>;
    /// Revokes the family of the token hashed as `token_hash` (logout); `false` if there
    /// is no such token.
    fn revoke_family(
        &self,
        token_hash: String,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<bool, AuthStoreError>>;
    /// Deletes refresh tokens that expired before `cutoff_ms`.
    fn purge_refresh(&self, cutoff_ms: i64) -> BoxFuture<'_, Result<u64, AuthStoreError>>;

    /// Every signing key, newest first.
    fn keys(&self) -> BoxFuture<'_, Result<Vec<StoredKey>, AuthStoreError>>;
    /// Adds `key` as the active key; the previously active ones are marked rotated at
    /// `key.created_ms` and retire at `retire_previous_ms`.
    fn add_key(
        &self,
        key: StoredKey,
        retire_previous_ms: i64,
    ) -> BoxFuture<'_, Result<(), AuthStoreError>>;

    /// The latest lock among `keys` (ms since the epoch), if any is locked at `now_ms`.
    fn locked_until(
        &self,
        keys: Vec<String>,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<Option<i64>, AuthStoreError>>;
    /// Counts a failed sign-in for `key` (forgetting failures older than `window_ms`)
    /// and returns the consecutive failures.
    fn record_failure(
        &self,
        key: String,
        now_ms: i64,
        window_ms: i64,
    ) -> BoxFuture<'_, Result<u32, AuthStoreError>>;
    /// Locks `key` until `until_ms`.
    fn lock(&self, key: String, until_ms: i64) -> BoxFuture<'_, Result<(), AuthStoreError>>;
    /// Forgets the failures of `key` (a successful sign-in).
    fn clear_failures(&self, key: String) -> BoxFuture<'_, Result<(), AuthStoreError>>;

    /// The outbox in the store's database, and the notifier poked after each commit that
    /// wrote to it (for the relay).
    fn outbox(
        &self,
    ) -> (
        Arc<dyn kit_events::outbox::OutboxStore>,
        Arc<tokio::sync::Notify>,
    );
    /// Checks the backend answers.
    fn ping(&self) -> BoxFuture<'_, Result<(), AuthStoreError>>;
}

/// Opens the store a URL names (`sqlite://…` or `postgres://…`). Every call made for
/// a request is a database client span; the background loops' `due_profiles` and
/// `purge_refresh`, and the probes' `ping`, are not.
pub async fn open(url: &str, setting: &str) -> Result<Arc<dyn AuthStore>, StoreError> {
    let db = Db::from_url(url);
    match kit::store::scheme(url) {
        "sqlite" => Ok(Arc::new(Traced {
            inner: sql::SqliteAuthStore::open(url, setting).await?,
            db,
        })),
        "postgres" | "postgresql" => Ok(Arc::new(Traced {
            inner: sql::PgAuthStore::open(url, setting).await?,
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

impl<S: AuthStore> AuthStore for Traced<S> {
    fn register(
        &self,
        account: NewAccount,
        subject: &'static str,
        event: kit_events::Event,
    ) -> BoxFuture<'_, Result<Registered, AuthStoreError>> {
        let call = self.inner.register(account, subject, event);
        Box::pin(self.db.run("INSERT", "credentials", call))
    }
    fn account_by_email(
        &self,
        email: String,
    ) -> BoxFuture<'_, Result<Option<Account>, AuthStoreError>> {
        Box::pin(
            self.db
                .run("SELECT", "credentials", self.inner.account_by_email(email)),
        )
    }
    fn account_by_id(&self, id: String) -> BoxFuture<'_, Result<Option<Account>, AuthStoreError>> {
        Box::pin(
            self.db
                .run("SELECT", "credentials", self.inner.account_by_id(id)),
        )
    }
    fn admin_exists(&self) -> BoxFuture<'_, Result<bool, AuthStoreError>> {
        Box::pin(
            self.db
                .run("SELECT", "credentials", self.inner.admin_exists()),
        )
    }
    fn due_profiles(
        &self,
        now_ms: i64,
        limit: i64,
    ) -> BoxFuture<'_, Result<Vec<PendingProfile>, AuthStoreError>> {
        self.inner.due_profiles(now_ms, limit)
    }
    fn profile_created(&self, user_id: String) -> BoxFuture<'_, Result<(), AuthStoreError>> {
        Box::pin(self.db.run(
            "DELETE",
            "pending_profiles",
            self.inner.profile_created(user_id),
        ))
    }
    fn profile_failed(
        &self,
        user_id: String,
        attempts: i64,
        next_attempt_ms: i64,
        error: String,
    ) -> BoxFuture<'_, Result<(), AuthStoreError>> {
        let call = self
            .inner
            .profile_failed(user_id, attempts, next_attempt_ms, error);
        Box::pin(self.db.run("UPDATE", "pending_profiles", call))
    }
    fn issue_refresh(&self, record: RefreshRecord) -> BoxFuture<'_, Result<(), AuthStoreError>> {
        Box::pin(
            self.db
                .run("INSERT", "refresh_tokens", self.inner.issue_refresh(record)),
        )
    }
    fn rotate_refresh(
        &self,
        token_hash: String,
        successor: RefreshRecord,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<Rotation, AuthStoreError>> {
        let call = self.inner.rotate_refresh(token_hash, successor, now_ms);
        Box::pin(self.db.run("UPDATE", "refresh_tokens", call))
    }
    fn revoke_family(
        &self,
        token_hash: String,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<bool, AuthStoreError>> {
        let call = self.inner.revoke_family(token_hash, now_ms);
        Box::pin(self.db.run("UPDATE", "refresh_tokens", call))
    }
    fn purge_refresh(&self, cutoff_ms: i64) -> BoxFuture<'_, Result<u64, AuthStoreError>> {
        self.inner.purge_refresh(cutoff_ms)
    }
    fn keys(&self) -> BoxFuture<'_, Result<Vec<StoredKey>, AuthStoreError>> {
        Box::pin(self.db.run("SELECT", "signing_keys", self.inner.keys()))
    }
    fn add_key(
        &self,
        key: StoredKey,
        retire_previous_ms: i64,
    ) -> BoxFuture<'_, Result<(), AuthStoreError>> {
        let call = self.inner.add_key(key, retire_previous_ms);
        Box::pin(self.db.run("INSERT", "signing_keys", call))
    }
    fn locked_until(
        &self,
        keys: Vec<String>,
        now_ms: i64,
    ) -> BoxFuture<'_, Result<Option<i64>, AuthStoreError>> {
        let call = self.inner.locked_until(keys, now_ms);
        Box::pin(self.db.run("SELECT", "login_throttle", call))
    }
    fn record_failure(
        &self,
        key: String,
        now_ms: i64,
        window_ms: i64,
    ) -> BoxFuture<'_, Result<u32, AuthStoreError>> {
        let call = self.inner.record_failure(key, now_ms, window_ms);
        Box::pin(self.db.run("UPSERT", "login_throttle", call))
    }
    fn lock(&self, key: String, until_ms: i64) -> BoxFuture<'_, Result<(), AuthStoreError>> {
        Box::pin(
            self.db
                .run("UPDATE", "login_throttle", self.inner.lock(key, until_ms)),
        )
    }
    fn clear_failures(&self, key: String) -> BoxFuture<'_, Result<(), AuthStoreError>> {
        Box::pin(
            self.db
                .run("DELETE", "login_throttle", self.inner.clear_failures(key)),
        )
    }
    fn outbox(
        &self,
    ) -> (
        Arc<dyn kit_events::outbox::OutboxStore>,
        Arc<tokio::sync::Notify>,
    ) {
        self.inner.outbox()
    }
    fn ping(&self) -> BoxFuture<'_, Result<(), AuthStoreError>> {
        self.inner.ping()
    }
}
