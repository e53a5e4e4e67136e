//! Auth's public HTTP API: register, login, refresh, logout, and the JWKS.
//!
//! Every answer carries `cache-control: no-store`. Sign-in failures are throttled per
//! account and per client address (the last hop of `x-forwarded-for`, which the gateway
//! appends, else the connection's peer): past the threshold a key is locked with
//! exponential backoff and answered `429` with `Retry-After`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use kit::Problem;
use kit::extract::Json as Validated;
use serde::{Deserialize, Serialize};

use crate::accounts::{RegisterError, register as create_account};
use crate::domain::{Email, LockoutPolicy, Name, Password, Role, duration_ms};
use crate::keys::{Jwks, KeyRing};
use crate::password::Hasher;
use crate::profiles::ProfileSync;
use crate::store::{AuthStore, AuthStoreError, RefreshRecord, Rotation};
use crate::tokens::{TokenPair, access_token, new_refresh_token, now_ms, refresh_hash};

/// Everything the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The store.
    pub store: Arc<dyn AuthStore>,
    /// Password hashing.
    pub hasher: Hasher,
    /// The signing keys.
    pub keys: KeyRing,
    /// Profile creation in users.
    pub profiles: ProfileSync,
    /// Access-token lifetime (≤ 15 min).
    pub access_ttl: Duration,
    /// Refresh-token lifetime.
    pub refresh_ttl: Duration,
    /// Throttling per account.
    pub account_lockout: LockoutPolicy,
    /// Throttling per client address.
    pub address_lockout: LockoutPolicy,
}

/// The public routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/auth/register", post(register))
        .route("/api/auth/login", post(login))
        .route("/api/auth/refresh", post(refresh))
        .route("/api/auth/logout", post(logout))
        .route("/.well-known/jwks.json", get(jwks))
        .with_state(state)
        .layer(axum::middleware::map_response(no_store))
}

async fn no_store(mut res: Response) -> Response {
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// The OpenAPI description of these routes, served on the admin listener at
/// `/openapi.json` and merged into the gateway's.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "auth", description = "Accounts, sign-in and tokens."),
    paths(register, login, refresh, logout, jwks),
    components(schemas(
        RegisterBody,
        Registered,
        LoginBody,
        RefreshBody,
        TokenPair,
        Jwks,
        crate::keys::Jwk
    ))
)]
pub struct ApiDoc;

fn check<T>(r: Result<T, &'static str>) -> garde::Result {
    r.map(|_| ()).map_err(garde::Error::new)
}

fn valid_email(v: &str, _: &()) -> garde::Result {
    check(Email::parse(v))
}

fn valid_password(v: &str, _: &()) -> garde::Result {
    check(Password::parse(v.to_owned()))
}

fn valid_name(v: &str, _: &()) -> garde::Result {
    check(Name::parse(v))
}

/// `POST /api/auth/register`.
#[derive(Deserialize, garde::Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterBody {
    /// The account's email (case does not matter).
    #[garde(custom(valid_email))]
    #[schema(format = Email, max_length = 254)]
    pub email: String,
    /// At least 12 characters, at most 1024 bytes.
    #[garde(custom(valid_password))]
    #[schema(min_length = 12, max_length = 1024)]
    pub password: String,
    /// The display name, 1–100 characters.
    #[garde(custom(valid_name))]
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
}

impl std::fmt::Debug for RegisterBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegisterBody")
            .field("email", &self.email)
            .field("password", &"***")
            .field("name", &self.name)
            .finish()
    }
}

/// What registration answers.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Registered {
    /// The new account's user id (UUIDv7).
    pub user_id: String,
}

/// `POST /api/auth/login`.
#[derive(Deserialize, garde::Validate, utoipa::ToSchema)]
pub struct LoginBody {
    /// The account's email.
    #[garde(length(max = 1024))]
    #[schema(max_length = 1024)]
    pub email: String,
    /// Its password.
    #[garde(length(max = 4096))]
    #[schema(max_length = 4096)]
    pub password: String,
}

impl std::fmt::Debug for LoginBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginBody")
            .field("email", &self.email)
            .field("password", &"***")
            .finish()
    }
}

/// `POST /api/auth/refresh` and `POST /api/auth/logout`.
#[derive(Deserialize, garde::Validate, utoipa::ToSchema)]
pub struct RefreshBody {
    /// The refresh token from login or the last refresh.
    #[garde(length(min = 1, max = 256))]
    #[schema(min_length = 1, max_length = 256)]
    pub refresh_token: String,
}

impl std::fmt::Debug for RefreshBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RefreshBody { refresh_token: *** }")
    }
}

fn store_failed(e: AuthStoreError) -> Problem {
    tracing::error!(error = %e, "auth store failed");
    Problem::unavailable("the auth store is unavailable", Duration::from_secs(1))
}

fn internal(e: impl std::fmt::Display) -> Problem {
    tracing::error!(error = %e, "auth failed");
    Problem::internal("the request failed unexpectedly")
}

fn bad_credentials() -> Problem {
    Problem::unauthorized("the email or the password is wrong")
}

fn bad_refresh() -> Problem {
    Problem::unauthorized("the refresh token is invalid, expired or revoked")
}

/// Creates an account.
#[utoipa::path(post, path = "/api/auth/register", tag = "auth",
    request_body = RegisterBody,
    responses(
        (status = 201, description = "The account exists; its profile is created in users", body = Registered),
        (status = 409, description = "The email belongs to an account (problem document)"),
        (status = 422, description = "An invalid field, named in `errors` (problem document)"),
    ))]
async fn register(
    State(app): State<AppState>,
    Validated(body): Validated<RegisterBody>,
) -> Result<(StatusCode, Json<Registered>), Problem> {
    let invalid = |field: &str, why: &str| Problem::invalid_field(field, why);
    let email = Email::parse(&body.email).map_err(|w| invalid("email", w))?;
    let password = Password::parse(body.password).map_err(|w| invalid("password", w))?;
    let name = Name::parse(&body.name).map_err(|w| invalid("name", w))?;
    match create_account(
        app.store.as_ref(),
        &app.hasher,
        &app.profiles,
        email,
        password,
        name,
        Role::Customer,
    )
    .await
    {
        Ok(user_id) => Ok((StatusCode::CREATED, Json(Registered { user_id }))),
        Err(RegisterError::EmailTaken) => {
            Err(Problem::conflict("an account with this email exists"))
        }
        Err(RegisterError::Store(e)) => Err(store_failed(e)),
        Err(RegisterError::Hash(e)) => Err(internal(e)),
    }
}

/// The client's address: the last `x-forwarded-for` hop (the one the gateway appended:
/// whatever the client itself put in the header comes before it), else the peer.
pub fn client_address(headers: &HeaderMap, peer: Option<SocketAddr>) -> String {
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|hop| hop.trim().parse::<IpAddr>().ok())
        .next_back();
    match (forwarded, peer) {
        (Some(ip), _) => ip.to_string(),
        (None, Some(peer)) => peer.ip().to_string(),
        (None, None) => "unknown".to_owned(),
    }
}

fn throttle_keys(email: &str, address: &str) -> (String, String) {
    (
        format!("account:{}", email.trim().to_lowercase()),
        format!("address:{address}"),
    )
}

/// Signs in.
#[utoipa::path(post, path = "/api/auth/login", tag = "auth",
    request_body = LoginBody,
    responses(
        (status = 200, description = "An access token and a refresh token", body = TokenPair),
        (status = 401, description = "Wrong email or password, the same answer for both (problem document)"),
        (status = 429, description = "Too many failed sign-ins; `Retry-After` says when to try again (problem document)"),
    ))]
async fn login(
    State(app): State<AppState>,
    headers: HeaderMap,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    Validated(body): Validated<LoginBody>,
) -> Result<Json<TokenPair>, Problem> {
    let now = now_ms();
    let address = client_address(&headers, peer.map(|Extension(ConnectInfo(p))| p));
    let (account_key, address_key) = throttle_keys(&body.email, &address);
    if let Some(until) = app
        .store
        .locked_until(vec![account_key.clone(), address_key.clone()], now)
        .await
        .map_err(store_failed)?
    {
        let wait = Duration::from_millis(until.saturating_sub(now).unsigned_abs());
        return Err(Problem::too_many_requests(wait)
            .with_detail("too many failed sign-ins; try again after Retry-After seconds"));
    }
    let account = match Email::parse(&body.email) {
        Ok(email) => app
            .store
            .account_by_email(email.as_str().to_owned())
            .await
            .map_err(store_failed)?,
        Err(_) => None,
    };
    let matched = app
        .hasher
        .verify(
            body.password.as_bytes(),
            account.as_ref().map(|a| a.password_hash.as_str()),
        )
        .await
        .map_err(internal)?;
    let Some(account) = account.filter(|_| matched) else {
        for (key, policy) in [
            (account_key, app.account_lockout),
            (address_key, app.address_lockout),
        ] {
            let failures = app
                .store
                .record_failure(key.clone(), now, duration_ms(policy.window))
                .await
                .map_err(store_failed)?;
            let lock = policy.lock_for(failures);
            if !lock.is_zero() {
                tracing::warn!(key = %key, failures, lock = ?lock, "sign-ins locked");
                app.store
                    .lock(key, now.saturating_add(duration_ms(lock)))
                    .await
                    .map_err(store_failed)?;
            }
        }
        return Err(bad_credentials());
    };
    app.store
        .clear_failures(account_key)
        .await
        .map_err(store_failed)?;
    let refresh_token = new_refresh_token();
    app.store
        .issue_refresh(RefreshRecord {
            token_hash: refresh_hash(&refresh_token),
            family_id: uuid::Uuid::now_v7().to_string(),
            user_id: account.id.clone(),
            issued_ms: now,
            expires_ms: now.saturating_add(duration_ms(app.refresh_ttl)),
        })
        .await
        .map_err(store_failed)?;
    Ok(Json(
        pair(&app, &account.id, account.role, refresh_token, now).await?,
    ))
}

async fn pair(
    app: &AppState,
    user_id: &str,
    role: Role,
    refresh_token: String,
    now: i64,
) -> Result<TokenPair, Problem> {
    let keys = app.keys.current(now).await.map_err(internal)?;
    let access_token = access_token(&keys, user_id, role, app.access_ttl).map_err(internal)?;
    Ok(TokenPair {
        access_token,
        refresh_token,
        token_type: "Bearer".to_owned(),
        expires_in: app.access_ttl.as_secs(),
    })
}

/// Exchanges a refresh token for a new pair; the presented token is spent.
#[utoipa::path(post, path = "/api/auth/refresh", tag = "auth",
    request_body = RefreshBody,
    responses(
        (status = 200, description = "A new access token and refresh token", body = TokenPair),
        (status = 401, description = "Unknown, expired or revoked; presenting a spent token revokes every token of its sign-in (problem document)"),
    ))]
async fn refresh(
    State(app): State<AppState>,
    Validated(body): Validated<RefreshBody>,
) -> Result<Json<TokenPair>, Problem> {
    let now = now_ms();
    let successor = new_refresh_token();
    let rotation = app
        .store
        .rotate_refresh(
            refresh_hash(&body.refresh_token),
            RefreshRecord {
                token_hash: refresh_hash(&successor),
                family_id: String::new(),
                user_id: String::new(),
                issued_ms: now,
                expires_ms: now.saturating_add(duration_ms(app.refresh_ttl)),
            },
            now,
        )
        .await
        .map_err(store_failed)?;
    match rotation {
        Rotation::Rotated { user_id } => {
            let account = app
                .store
                .account_by_id(user_id)
                .await
                .map_err(store_failed)?
                .ok_or_else(bad_refresh)?;
            Ok(Json(
                pair(&app, &account.id, account.role, successor, now).await?,
            ))
        }
        Rotation::Reused => {
            tracing::warn!("a spent refresh token was presented again; its family is revoked");
            Err(bad_refresh())
        }
        Rotation::Rejected => Err(bad_refresh()),
    }
}

/// Signs out: revokes the refresh token and every token of its sign-in.
#[utoipa::path(post, path = "/api/auth/logout", tag = "auth",
    request_body = RefreshBody,
    responses(
        (status = 204, description = "Signed out (also for a token that is unknown or already revoked)"),
    ))]
async fn logout(
    State(app): State<AppState>,
    Validated(body): Validated<RefreshBody>,
) -> Result<StatusCode, Problem> {
    app.store
        .revoke_family(refresh_hash(&body.refresh_token), now_ms())
        .await
        .map_err(store_failed)?;
    Ok(StatusCode::NO_CONTENT)
}

/// The public keys that verify access tokens.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "auth",
    responses((status = 200, description = "The JWKS: Ed25519 keys (`OKP`), active first", body = Jwks)))]
async fn jwks(State(app): State<AppState>) -> Result<Response, Problem> {
    let keys = app.keys.current(now_ms()).await.map_err(internal)?;
    Ok(Json(keys.jwks.clone()).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_is_the_last_forwarded_hop() {
        let mut h = HeaderMap::new();
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        assert_eq!(client_address(&h, Some(peer)), "127.0.0.1");
        h.insert("x-forwarded-for", "6.6.6.6, 10.0.0.7".parse().unwrap());
        assert_eq!(client_address(&h, Some(peer)), "10.0.0.7");
        h.insert("x-forwarded-for", "10.0.0.7, not-an-ip".parse().unwrap());
        assert_eq!(client_address(&h, Some(peer)), "10.0.0.7");
        assert_eq!(client_address(&HeaderMap::new(), None), "unknown");
    }

    #[test]
    fn request_bodies_hide_secrets_in_debug_output() {
        let r = RegisterBody {
            email: "a@b.co".into(),
            password: "super secret pw".into(),
            name: "A".into(),
        };
        let l = LoginBody {
            email: "a@b.co".into(),
            password: "super secret pw".into(),
        };
        let t = RefreshBody {
            refresh_token: "super secret token".into(),
        };
        for printed in [format!("{r:?}"), format!("{l:?}"), format!("{t:?}")] {
            assert!(!printed.contains("secret"), "{printed}");
        }
    }
}
