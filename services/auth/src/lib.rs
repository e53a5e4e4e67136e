//! Auth: accounts, sign-in and tokens.
//!
//! Auth owns credentials (Argon2id hashes), refresh tokens (SHA-256 hashes, rotated on
//! every use, a reused one revoking its family), the Ed25519 signing keys (generated on
//! first start, rotatable, published as a JWKS) and login throttling. Access tokens are
//! EdDSA JWTs the gateway verifies against the JWKS. Registering writes the credential,
//! a pending profile and `users.registered` in one transaction; [`profiles`] has users
//! create the profile, retrying until it has. On first start an administrator is
//! seeded ([`admin`]).
//!
//! Data flows one way: [`api`] parses and throttles, [`domain`] decides, [`store`]
//! persists (SQLite by default, PostgreSQL in production).
#![forbid(unsafe_code)]

pub mod accounts;
pub mod admin;
pub mod api;
pub mod domain;
pub mod keys;
pub mod password;
pub mod profiles;
pub mod store;
pub mod tokens;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kit::config::{Config, ConfigError};
use kit::discovery::Discovery;
use kit::service::{Context, Service, StartError};
use serde::Deserialize;

/// The `[auth]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct AuthConfig {
    /// Public listener (`FLOTILLA_AUTH__LISTEN`).
    pub listen: SocketAddr,
    /// Admin listener (`FLOTILLA_AUTH__ADMIN_LISTEN`).
    pub admin_listen: SocketAddr,
    /// Store URL (`FLOTILLA_AUTH__STORE`): `sqlite://…` (default
    /// `<data dir>/auth/auth.db`) or `postgres://user:pass@host:5432/auth`.
    pub store: Option<String>,
    /// Access-token lifetime, at most 15 minutes (`FLOTILLA_AUTH__ACCESS_TTL`).
    #[serde(with = "kit::config::duration")]
    pub access_ttl: Duration,
    /// Refresh-token lifetime (`FLOTILLA_AUTH__REFRESH_TTL`).
    #[serde(with = "kit::config::duration")]
    pub refresh_ttl: Duration,
    /// How often signing keys are reloaded from the store, so a rotation made by
    /// `flotilla auth rotate-key` is picked up (`FLOTILLA_AUTH__KEY_RELOAD`).
    #[serde(with = "kit::config::duration")]
    pub key_reload: Duration,
    /// Whether to create an administrator when there is none (`FLOTILLA_AUTH__SEED_ADMIN`).
    pub seed_admin: bool,
    /// The seeded administrator's email (`FLOTILLA_AUTH__ADMIN_EMAIL`).
    pub admin_email: String,
    /// Time allowed for one call to users (`FLOTILLA_AUTH__CALL_TIMEOUT`).
    #[serde(with = "kit::config::duration")]
    pub call_timeout: Duration,
    /// Sign-in throttling (`FLOTILLA_AUTH__LOCKOUT__*`).
    pub lockout: LockoutConfig,
}

/// The `[auth.lockout]` section: consecutive failed sign-ins before a lock, and how the
/// lock grows.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct LockoutConfig {
    /// Failures per account before it is locked (`FLOTILLA_AUTH__LOCKOUT__ACCOUNT_THRESHOLD`).
    pub account_threshold: u32,
    /// Failures per client address before it is locked
    /// (`FLOTILLA_AUTH__LOCKOUT__ADDRESS_THRESHOLD`).
    pub address_threshold: u32,
    /// The first lock; doubles with each further failure (`FLOTILLA_AUTH__LOCKOUT__BASE`).
    #[serde(with = "kit::config::duration")]
    pub base: Duration,
    /// The longest lock (`FLOTILLA_AUTH__LOCKOUT__MAX`).
    #[serde(with = "kit::config::duration")]
    pub max: Duration,
    /// How long a failure counts without a new one (`FLOTILLA_AUTH__LOCKOUT__WINDOW`).
    #[serde(with = "kit::config::duration")]
    pub window: Duration,
}

impl Default for LockoutConfig {
    fn default() -> Self {
        Self {
            account_threshold: 5,
            address_threshold: 20,
            base: Duration::from_secs(5),
            max: Duration::from_secs(15 * 60),
            window: Duration::from_secs(15 * 60),
        }
    }
}

impl LockoutConfig {
    fn policy(&self, threshold: u32) -> domain::LockoutPolicy {
        domain::LockoutPolicy {
            threshold: threshold.max(1),
            base: self.base,
            max: self.max.max(self.base),
            window: self.window,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            listen: ([127, 0, 0, 1], 0).into(),
            admin_listen: ([127, 0, 0, 1], 0).into(),
            store: None,
            access_ttl: domain::MAX_ACCESS_TTL,
            refresh_ttl: Duration::from_secs(14 * 24 * 3600),
            key_reload: Duration::from_secs(10),
            seed_admin: true,
            admin_email: "admin@flotilla.local".to_owned(),
            call_timeout: Duration::from_secs(2),
            lockout: LockoutConfig::default(),
        }
    }
}

/// The `[auth]` section, checked, and the store URL it names.
fn settings(
    config: &Config,
    ctx_setting: impl Fn(&str) -> String,
) -> Result<(AuthConfig, String), ConfigError> {
    let cfg: AuthConfig = config.section("auth")?;
    domain::check_access_ttl(cfg.access_ttl).map_err(|why| ConfigError::Setting {
        setting: ctx_setting("access_ttl"),
        message: why.to_owned(),
    })?;
    if cfg.refresh_ttl < cfg.access_ttl {
        return Err(ConfigError::Setting {
            setting: ctx_setting("refresh_ttl"),
            message: "must be at least the access-token lifetime".to_owned(),
        });
    }
    let url = match &cfg.store {
        Some(url) => url.clone(),
        None => format!(
            "sqlite://{}",
            config
                .common()?
                .data_dir
                .join("auth")
                .join("auth.db")
                .display()
        ),
    };
    Ok((cfg, url))
}

/// Runs auth until SIGINT/SIGTERM.
pub async fn run(ctx: Context) -> Result<(), StartError> {
    build(ctx).await?.run_until_stopped().await
}

/// Opens the store, makes sure a signing key and an administrator exist, starts the
/// outbox relay and the profile retries, binds the listeners.
pub async fn build(ctx: Context) -> Result<Service, StartError> {
    let (cfg, url) = settings(&ctx.config, |k| ctx.setting(k))?;
    let store = store::open(&url, &ctx.setting("store")).await?;
    let now = tokens::now_ms();
    let keys = keys::KeyRing::open(store.clone(), cfg.key_reload, now)
        .await
        .map_err(|e| StartError::Other(e.to_string()))?;
    let hasher = password::Hasher::new()
        .await
        .map_err(|e| StartError::Other(e.to_string()))?;

    let (outbox, wake) = store.outbox();
    let bus = kit_events::for_producer(&kit_events::url_from_config(&ctx.config), "FLOTILLA_BUS")
        .await
        .map_err(|e| StartError::Other(e.to_string()))?;
    kit_events::outbox::Relay::shared(outbox, bus, Default::default())
        .with_notifier(wake)
        .spawn();

    let discovery = Discovery::from_url(&ctx.common.discovery)?;
    let resilience: kit::resilience::ResilienceConfig = ctx.config.section("resilience")?;
    let profiles =
        profiles::ProfileSync::new(store.clone(), discovery, cfg.call_timeout, &resilience);
    tokio::spawn(profiles.clone().run());
    tokio::spawn(purge_refresh_tokens(store.clone()));

    if cfg.seed_admin {
        admin::seed(
            store.as_ref(),
            &hasher,
            &profiles,
            &ctx.common.data_dir,
            &cfg.admin_email,
        )
        .await
        .map_err(|e| StartError::Other(e.to_string()))?;
    }

    let state = api::AppState {
        store: store.clone(),
        hasher,
        keys,
        profiles,
        access_ttl: cfg.access_ttl,
        refresh_ttl: cfg.refresh_ttl,
        account_lockout: cfg.lockout.policy(cfg.lockout.account_threshold),
        address_lockout: cfg.lockout.policy(cfg.lockout.address_threshold),
    };
    let ready = store.clone();
    Ok(Service::bind(&ctx, cfg.listen, cfg.admin_listen)
        .await?
        .router(api::router(state))
        .admin_routes(kit::service::openapi_route::<api::ApiDoc>())
        .readiness(
            "store",
            Arc::new(move || {
                let s = ready.clone();
                Box::pin(async move { s.ping().await.map_err(|e| e.to_string()) })
            }),
        ))
}

/// Adds a new active signing key to auth's store (what `flotilla auth rotate-key` runs);
/// the old key stays published until every token it signed has expired. Running
/// instances pick the new key up within `FLOTILLA_AUTH__KEY_RELOAD`. Returns the new
/// key id.
pub async fn rotate_key(config: &Config) -> Result<String, StartError> {
    let (cfg, url) = settings(config, |k| kit::config::env_name(Some("auth"), k))?;
    let store = store::open(&url, "FLOTILLA_AUTH__STORE").await?;
    keys::rotate(
        store.as_ref(),
        cfg.access_ttl,
        cfg.key_reload,
        tokens::now_ms(),
    )
    .await
    .map_err(|e| StartError::Other(e.to_string()))
}

/// Deletes expired refresh tokens, hourly (a day after expiry, so a late reuse is still
/// recognised as one for a while).
async fn purge_refresh_tokens(store: Arc<dyn store::AuthStore>) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tick.tick().await;
        let cutoff = tokens::now_ms() - domain::duration_ms(Duration::from_secs(24 * 3600));
        match store.purge_refresh(cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(purged = n, "forgot expired refresh tokens"),
            Err(e) => tracing::warn!(error = %e, "purging refresh tokens failed"),
        }
    }
}
