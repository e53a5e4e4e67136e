//! Access-token verification: EdDSA (Ed25519) JWTs checked against the issuer's JWKS.
//!
//! What a token must be to pass [`Verifier::verify`], in the order it is checked (cheap
//! checks first, so garbage never costs a key lookup or a signature check):
//!
//! 1. at most [`JwtConfig::max_token_bytes`] long, three base64url parts, a signature;
//! 2. a header whose `alg` is exactly `EdDSA` — `none` in any casing, `HS256` (the
//!    "public key as HMAC secret" confusion), RSA and ECDSA are all refused — with no
//!    `crit` extensions; `jwk`, `jku`, `x5u` and `x5c` are never looked at, so a token
//!    cannot bring or point to its own key;
//! 3. a `kid` naming a key of the JWKS exactly (a map lookup: never a path, file or URL);
//! 4. a valid Ed25519 signature by that key;
//! 5. `iss` and `aud` as configured, `exp` present and not past, `nbf` and `iat` not in
//!    the future and a lifetime within [`JwtConfig::max_lifetime`], all with a leeway of
//!    at most [`MAX_LEEWAY`]; a `sub` that is a sane identifier.
//!
//! The key set ([`JwksCache`]) is fetched from a URL or from the `auth` service through
//! discovery, refreshed when it is older than [`JwtConfig::jwks_max_age`] or a token names
//! an unknown `kid` — but never more often than once per [`JwtConfig::jwks_refresh_floor`]
//! (once a second until a first set has arrived), so tokens with made-up `kid`s cannot
//! make the verifier hammer the issuer. A failed refresh keeps the last good key set.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tracing::Instrument;

use crate::config::ConfigError;
use crate::discovery::{Discovery, Endpoints};
use crate::security::Identity;

/// The issuer Flotilla's `auth` service writes in `iss`.
pub const ISSUER: &str = "flotilla-auth";
/// The audience Flotilla's access tokens are for (`aud`).
pub const AUDIENCE: &str = "flotilla";
/// Where the `auth` service publishes its keys.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";
/// Default cap on the size of a token.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// The largest clock leeway a verifier accepts.
pub const MAX_LEEWAY: Duration = Duration::from_secs(30);
/// Largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 64 * 1024;
/// Time allowed for one JWKS fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(2);
/// Refresh floor while no key set has been fetched yet.
const NO_KEYS_FLOOR: Duration = Duration::from_secs(1);
/// Longest `kid` repeated in an error message.
const KID_SHOWN: usize = 40;

/// Token verification settings (`[gateway.jwt]` in the gateway; any service may embed it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct JwtConfig {
    /// Where the key set comes from: `service://auth` (the `auth` service found through
    /// discovery, path [`JWKS_PATH`]), `service://name/path`, or an `http://` URL.
    pub jwks: String,
    /// Required `iss`.
    pub issuer: String,
    /// Required `aud` (one of the token's audiences).
    pub audience: String,
    /// Clock skew tolerated on `exp`, `nbf` and `iat` (at most [`MAX_LEEWAY`]).
    #[serde(with = "crate::config::duration")]
    pub leeway: Duration,
    /// Longest lifetime accepted (`exp - iat`, or `exp - now` without `iat`).
    #[serde(with = "crate::config::duration")]
    pub max_lifetime: Duration,
    /// Tokens longer than this many bytes are refused unread.
    pub max_token_bytes: usize,
    /// The key set is fetched at most once per this interval, whatever tokens arrive.
    #[serde(with = "crate::config::duration")]
    pub jwks_refresh_floor: Duration,
    /// A key set older than this is refreshed (so removed keys stop being accepted).
    #[serde(with = "crate::config::duration")]
    pub jwks_max_age: Duration,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            jwks: "service://auth".to_owned(),
            issuer: ISSUER.to_owned(),
            audience: AUDIENCE.to_owned(),
            leeway: Duration::from_secs(30),
            max_lifetime: Duration::from_secs(15 * 60),
            max_token_bytes: MAX_TOKEN_BYTES,
            jwks_refresh_floor: Duration::from_secs(10),
            jwks_max_age: Duration::from_secs(5 * 60),
        }
    }
}

impl JwtConfig {
    /// Checks the values; `prefix` is the settings' environment prefix
    /// (`FLOTILLA_GATEWAY__JWT`), used to name the one at fault.
    pub fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        let bad = |key: &str, message: &str| ConfigError::Setting {
            setting: format!("{prefix}__{}", key.to_uppercase()),
            message: message.to_owned(),
        };
        if self.leeway > MAX_LEEWAY {
            return Err(bad("leeway", "must be at most 30s"));
        }
        if self.max_token_bytes < 256 || self.max_token_bytes > 64 * 1024 {
            return Err(bad("max_token_bytes", "must be between 256 and 65536"));
        }
        if self.jwks_refresh_floor < Duration::from_millis(100) {
            return Err(bad("jwks_refresh_floor", "must be at least 100ms"));
        }
        if self.issuer.is_empty() || self.audience.is_empty() {
            return Err(bad("issuer", "issuer and audience must not be empty"));
        }
        if self.max_lifetime.is_zero() {
            return Err(bad("max_lifetime", "must be positive"));
        }
        JwksLocation::parse(&self.jwks).map_err(|m| bad("jwks", &m))?;
        Ok(())
    }
}

/// Why a token was refused (or could not be checked).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Longer than the configured cap.
    #[error("the token is longer than {0} bytes")]
    TooLarge(usize),
    /// Not three base64url parts with a signature, or a header that is not JSON.
    #[error("the token is not a signed JWT")]
    Malformed,
    /// An algorithm other than EdDSA.
    #[error("algorithm {0:?} is not accepted (only EdDSA)")]
    Algorithm(String),
    /// The header lists critical extensions, none of which are understood.
    #[error("the token header has critical extensions")]
    Critical,
    /// No `kid` in the header.
    #[error("the token header has no kid")]
    MissingKid,
    /// The `kid` names no key of the key set.
    #[error("no signing key {0:?}")]
    UnknownKey(String),
    /// The signature does not verify with the named key.
    #[error("the signature does not verify")]
    Signature,
    /// `exp` is past.
    #[error("the token has expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// `iat` is in the future.
    #[error("the token was issued in the future")]
    IssuedInFuture,
    /// The token lives longer than allowed.
    #[error("the token's lifetime exceeds {0:?}")]
    Lifetime(Duration),
    /// `iss` is not the configured issuer.
    #[error("the token is from another issuer")]
    Issuer,
    /// `aud` does not include the configured audience.
    #[error("the token is for another audience")]
    Audience,
    /// A required claim is absent.
    #[error("the token has no {0} claim")]
    MissingClaim(String),
    /// Claims of the wrong type or with unusable values.
    #[error("the token's claims are invalid: {0}")]
    Claims(&'static str),
    /// The key set could not be fetched and no earlier one is known.
    #[error("the signing keys are unavailable")]
    KeysUnavailable,
}

impl JwtError {
    /// Whether the fault is the verifier's (no keys yet), not the token's: answer `503`.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::KeysUnavailable)
    }
}

/// The claims of a verified access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    #[serde(default)]
    pub sub: String,
    /// The issuer.
    pub iss: String,
    /// Expiry, seconds since the epoch (required: a token without it is refused).
    #[serde(default)]
    pub exp: u64,
    /// Issue time, seconds since the epoch.
    #[serde(default)]
    pub iat: Option<u64>,
    /// Not-before time, seconds since the epoch.
    #[serde(default)]
    pub nbf: Option<u64>,
    /// Token id.
    #[serde(default)]
    pub jti: Option<String>,
    /// Space-separated scopes.
    #[serde(default)]
    pub scope: String,
    /// Roles.
    #[serde(default)]
    pub roles: Vec<String>,
}

impl Claims {
    /// The scopes, one per word of `scope`.
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.scope.split_whitespace()
    }

    /// The caller these claims describe, as services receive it.
    pub fn identity(&self) -> Identity {
        Identity {
            user_id: self.sub.clone(),
            roles: self.roles.clone(),
            scopes: self.scopes().map(str::to_owned).collect(),
        }
    }
}

/// The header fields the verifier reads; everything else (`jwk`, `jku`, `x5u`, `x5c`,
/// `typ`…) is ignored.
#[derive(Deserialize)]
struct Header {
    alg: Option<serde_json::Value>,
    kid: Option<serde_json::Value>,
    crit: Option<serde_json::Value>,
}

/// Checks everything that can be checked before a key is needed (size, shape, `alg`,
/// `crit`) and returns the header's `kid`.
pub fn precheck(token: &str, max_bytes: usize) -> Result<String, JwtError> {
    if token.len() > max_bytes {
        return Err(JwtError::TooLarge(max_bytes));
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    let b64url = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !b64url(header) || !b64url(payload) || !b64url(signature) {
        return Err(JwtError::Malformed);
    }
    let raw = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| JwtError::Malformed)?;
    let header: Header = serde_json::from_slice(&raw).map_err(|_| JwtError::Malformed)?;
    match header.alg {
        Some(serde_json::Value::String(a)) if a == "EdDSA" => {}
        Some(serde_json::Value::String(a)) => return Err(JwtError::Algorithm(shown(&a))),
        _ => return Err(JwtError::Algorithm(String::new())),
    }
    if header.crit.is_some() {
        return Err(JwtError::Critical);
    }
    match header.kid {
        Some(serde_json::Value::String(k)) if !k.is_empty() => Ok(k),
        _ => Err(JwtError::MissingKid),
    }
}

/// Verifies the signature of `token` with `key` and checks its claims against `config`
/// at `now` (seconds since the epoch). [`precheck`] must have passed.
pub fn verify_signed(
    token: &str,
    key: &DecodingKey,
    config: &JwtConfig,
    now: u64,
) -> Result<Claims, JwtError> {
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_issuer(&[config.issuer.as_str()]);
    validation.set_audience(&[config.audience.as_str()]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    // Times are checked below against `now`, with the same leeway for all of them.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    let claims = jsonwebtoken::decode::<Claims>(token, key, &validation)
        .map_err(|e| match e.into_kind() {
            ErrorKind::InvalidSignature => JwtError::Signature,
            ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
                JwtError::Algorithm(String::new())
            }
            ErrorKind::InvalidIssuer => JwtError::Issuer,
            ErrorKind::InvalidAudience => JwtError::Audience,
            ErrorKind::MissingRequiredClaim(c) => JwtError::MissingClaim(shown(&c)),
            ErrorKind::Json(_) => JwtError::Claims("a claim has the wrong type"),
            ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Utf8(_) => {
                JwtError::Malformed
            }
            _ => JwtError::Signature,
        })?
        .claims;
    check_times(&claims, config, now)?;
    check_values(&claims)?;
    Ok(claims)
}

fn check_times(c: &Claims, config: &JwtConfig, now: u64) -> Result<(), JwtError> {
    let leeway = config.leeway.as_secs();
    if now >= c.exp.saturating_add(leeway) {
        return Err(JwtError::Expired);
    }
    if c.nbf.is_some_and(|nbf| nbf > now.saturating_add(leeway)) {
        return Err(JwtError::NotYetValid);
    }
    if c.iat.is_some_and(|iat| iat > now.saturating_add(leeway)) {
        return Err(JwtError::IssuedInFuture);
    }
    let start = c.iat.unwrap_or(now);
    let longest = config.max_lifetime.as_secs().saturating_add(leeway);
    if c.exp.saturating_sub(start) > longest {
        return Err(JwtError::Lifetime(config.max_lifetime));
    }
    Ok(())
}

/// Whether `s` can be an identifier forwarded in a header: 1–128 visible ASCII bytes.
fn identifier(s: &str) -> bool {
    (1..=128).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic())
}

fn check_values(c: &Claims) -> Result<(), JwtError> {
    if !identifier(&c.sub) {
        return Err(JwtError::Claims("sub is not a usable identifier"));
    }
    if c.roles.len() > 32 || !c.roles.iter().all(|r| identifier(r)) {
        return Err(JwtError::Claims("roles are not usable identifiers"));
    }
    if c.scope.len() > 2048 || !c.scopes().all(identifier) {
        return Err(JwtError::Claims("scope is not a list of identifiers"));
    }
    Ok(())
}

/// The token of an `authorization: Bearer <token>` header value (`None` for another
/// scheme or an empty token). The scheme is case-insensitive (RFC 9110 §11.1).
pub fn bearer(value: &http::HeaderValue) -> Option<&str> {
    let v = value.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Seconds since the epoch now.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn shown(s: &str) -> String {
    s.chars()
        .take(KID_SHOWN)
        .filter(|c| !c.is_control())
        .collect()
}

/// A key set: Ed25519 verification keys by `kid`.
#[derive(Clone, Default)]
pub struct KeySet {
    keys: HashMap<String, DecodingKey>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("kids", &self.kids())
            .finish()
    }
}

/// Why a JWKS document or fetch was not usable.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// Not a JWKS document.
    #[error("not a JWKS document: {0}")]
    Document(String),
    /// No instance of the key service is known.
    #[error("no instance of {0} is known")]
    NoInstance(String),
    /// The fetch failed.
    #[error("fetching {url} failed: {reason}")]
    Fetch {
        /// What was fetched.
        url: String,
        /// Why it failed.
        reason: String,
    },
}

impl KeySet {
    /// Parses a JWKS document, keeping the Ed25519 signing keys (`kty: OKP`,
    /// `crv: Ed25519`, a `kid`, `alg` absent or `EdDSA`, `use` absent or `sig`). Other
    /// keys are skipped; a key that carries its private part (`d`) is skipped too.
    pub fn from_jwks(doc: &[u8]) -> Result<Self, JwksError> {
        #[derive(Deserialize)]
        struct Doc {
            keys: Vec<serde_json::Value>,
        }
        let doc: Doc =
            serde_json::from_slice(doc).map_err(|e| JwksError::Document(e.to_string()))?;
        let mut keys = HashMap::new();
        for k in &doc.keys {
            let field = |name: &str| k.get(name).and_then(serde_json::Value::as_str);
            let usable = field("kty") == Some("OKP")
                && field("crv") == Some("Ed25519")
                && field("alg").is_none_or(|a| a == "EdDSA")
                && field("use").is_none_or(|u| u == "sig")
                && k.get("d").is_none();
            let (Some(kid), Some(x)) = (field("kid"), field("x")) else {
                continue;
            };
            if !usable || kid.is_empty() || kid.len() > 256 {
                tracing::debug!(
                    kid,
                    "JWKS key skipped: not a usable Ed25519 verification key"
                );
                continue;
            }
            if URL_SAFE_NO_PAD.decode(x).map(|b| b.len()) != Ok(32) {
                tracing::warn!(kid, "JWKS key skipped: x is not a 32-byte Ed25519 key");
                continue;
            }
            let Ok(key) = DecodingKey::from_ed_components(x) else {
                continue;
            };
            if keys.contains_key(kid) {
                tracing::warn!(kid, "JWKS lists kid twice; the first key is kept");
                continue;
            }
            keys.insert(kid.to_owned(), key);
        }
        Ok(Self { keys })
    }

    /// A key set of raw Ed25519 public keys (32 bytes each) by `kid`.
    pub fn from_ed25519(keys: &[(&str, &[u8])]) -> Self {
        let keys = keys
            .iter()
            .filter_map(|(kid, public)| {
                let x = URL_SAFE_NO_PAD.encode(public);
                DecodingKey::from_ed_components(&x)
                    .ok()
                    .map(|k| ((*kid).to_owned(), k))
            })
            .collect();
        Self { keys }
    }

    /// The key named `kid`.
    pub fn get(&self, kid: &str) -> Option<&DecodingKey> {
        self.keys.get(kid)
    }

    /// The `kid`s, sorted.
    pub fn kids(&self) -> Vec<&str> {
        let mut k: Vec<&str> = self.keys.keys().map(String::as_str).collect();
        k.sort_unstable();
        k
    }

    /// Whether the set has no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Where a JWKS is fetched from, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
enum JwksLocation {
    Url(String),
    Service { name: String, path: String },
}

impl JwksLocation {
    fn parse(s: &str) -> Result<Self, String> {
        if let Some(rest) = s.strip_prefix("service://") {
            let (name, path) = match rest.split_once('/') {
                Some((n, p)) => (n, format!("/{p}")),
                None => (rest, JWKS_PATH.to_owned()),
            };
            if name.is_empty() {
                return Err(format!("{s:?} names no service"));
            }
            return Ok(Self::Service {
                name: name.to_owned(),
                path,
            });
        }
        if (s.starts_with("http://") || s.starts_with("https://")) && s.parse::<http::Uri>().is_ok()
        {
            return Ok(Self::Url(s.to_owned()));
        }
        Err(format!(
            "{s:?} is not `service://<name>[/path]` or an `http(s)://` URL"
        ))
    }
}

/// Where a [`JwksCache`] gets its keys.
enum Source {
    Url(String),
    Service { endpoints: Endpoints, path: String },
    Fixed,
}

/// What [`JwksCache::refresh`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    /// A new key set was fetched and is in use.
    Fetched,
    /// Nothing was fetched: the last attempt is more recent than the floor (or the
    /// keys are fixed).
    Skipped,
    /// The fetch failed; the last good key set stays in use.
    Failed,
}

/// The verification keys, fetched from their source and refreshed with a floor.
pub struct JwksCache {
    source: Source,
    http: reqwest::Client,
    keys: RwLock<Arc<KeySet>>,
    fetched_at: std::sync::Mutex<Option<Instant>>,
    last_attempt: tokio::sync::Mutex<Option<Instant>>,
    floor: Duration,
    max_age: Duration,
    fetches: AtomicU64,
    /// Bumped whenever a key set is installed.
    generation: AtomicU64,
}

impl std::fmt::Debug for JwksCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksCache")
            .field("keys", &*self.current())
            .field("floor", &self.floor)
            .finish()
    }
}

impl JwksCache {
    /// A cache for the source `config.jwks` names (`service://…` resolves through
    /// `discovery`). Nothing is fetched until [`JwksCache::prefetch`] or a token needs it.
    pub fn from_config(config: &JwtConfig, discovery: &Discovery) -> Result<Self, String> {
        let source = match JwksLocation::parse(&config.jwks)? {
            JwksLocation::Url(u) => Source::Url(u),
            JwksLocation::Service { name, path } => Source::Service {
                endpoints: discovery.endpoints(&name),
                path,
            },
        };
        Ok(Self::with_source(
            source,
            config.jwks_refresh_floor,
            config.jwks_max_age,
        ))
    }

    /// A cache that fetches `url`.
    pub fn from_url(url: &str, floor: Duration, max_age: Duration) -> Self {
        Self::with_source(Source::Url(url.to_owned()), floor, max_age)
    }

    /// A cache holding `keys` for good (never fetches).
    pub fn fixed(keys: KeySet) -> Self {
        let cache = Self::with_source(Source::Fixed, Duration::MAX, Duration::MAX);
        cache.install(keys);
        cache
    }

    fn with_source(source: Source, floor: Duration, max_age: Duration) -> Self {
        // A key set from a service comes over the internal transport (mTLS).
        let http = crate::security::mtls::reqwest_builder()
            .connect_timeout(Duration::from_secs(1))
            .redirect(reqwest::redirect::Policy::none())
            .https_only(false)
            .build()
            .unwrap_or_default();
        Self {
            source,
            http,
            keys: RwLock::default(),
            fetched_at: std::sync::Mutex::new(None),
            last_attempt: tokio::sync::Mutex::new(None),
            floor,
            max_age,
            fetches: AtomicU64::new(0),
            generation: AtomicU64::new(0),
        }
    }

    /// The key set in use.
    pub fn current(&self) -> Arc<KeySet> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// How many fetches went out to the source (successful or not).
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// Changes whenever a new key set is installed.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn install(&self, keys: KeySet) {
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
        self.generation.fetch_add(1, Ordering::AcqRel);
        *self.fetched_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    fn fetched_at(&self) -> Option<Instant> {
        *self.fetched_at.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a background fetch (at start-up, so the first request finds keys).
    pub fn prefetch(self: &Arc<Self>) {
        let this = self.clone();
        tokio::spawn(async move {
            this.refresh().await;
        });
    }

    /// Fetches the key set unless the last attempt is more recent than the floor.
    /// Concurrent callers wait for one fetch rather than starting their own.
    pub async fn refresh(&self) -> Refresh {
        if matches!(self.source, Source::Fixed) {
            return Refresh::Skipped;
        }
        let mut last = self.last_attempt.lock().await;
        // Until a first key set arrives every token fails anyway (the issuer may simply
        // have started after us), so retry sooner then — still at most once a second.
        let floor = if self.fetched_at().is_none() {
            self.floor.min(NO_KEYS_FLOOR)
        } else {
            self.floor
        };
        if last.is_some_and(|t| t.elapsed() < floor) {
            return Refresh::Skipped;
        }
        let fetched = self.fetch().await;
        // Only attempts that reached the source count against the floor: without a
        // known instance nothing was sent, and the next token may try again.
        if !matches!(fetched, Err(JwksError::NoInstance(_))) {
            *last = Some(Instant::now());
        }
        match fetched {
            Ok(keys) => {
                tracing::info!(kids = ?keys.kids(), "JWKS fetched");
                metrics::counter!("jwks_fetches_total", "outcome" => "ok").increment(1);
                self.install(keys);
                Refresh::Fetched
            }
            Err(e) => {
                tracing::warn!(error = %e, "JWKS refresh failed; keeping the last good key set");
                metrics::counter!("jwks_fetches_total", "outcome" => "failed").increment(1);
                Refresh::Failed
            }
        }
    }

    async fn fetch(&self) -> Result<KeySet, JwksError> {
        let url = match &self.source {
            Source::Fixed => return Ok(KeySet::clone(&self.current())),
            Source::Url(u) => u.clone(),
            Source::Service { endpoints, path } => {
                endpoints.wait_resolved(Duration::from_secs(1)).await;
                let picked = endpoints
                    .pick()
                    .ok_or_else(|| JwksError::NoInstance(endpoints.service().to_owned()))?;
                format!(
                    "{}://{}{path}",
                    crate::security::mtls::scheme(),
                    picked.instance.addr
                )
            }
        };
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let failed = |reason: String| JwksError::Fetch {
            url: url.clone(),
            reason,
        };
        let span = crate::telemetry::trace::http_client_span(&http::Method::GET, &url);
        let mut headers = http::HeaderMap::new();
        crate::telemetry::trace::inject(&span, &mut headers);
        let sent = self
            .http
            .get(&url)
            .headers(headers)
            .timeout(FETCH_TIMEOUT)
            .send()
            .instrument(span.clone())
            .await;
        let mut res = sent.map_err(|e| {
            crate::telemetry::trace::record_failure(
                &span,
                if e.is_timeout() {
                    "timeout"
                } else {
                    "transport"
                },
            );
            failed(e.to_string())
        })?;
        crate::telemetry::trace::record_http_status(&span, res.status());
        if !res.status().is_success() {
            return Err(failed(format!("status {}", res.status())));
        }
        let mut body = Vec::new();
        while let Some(chunk) = res.chunk().await.map_err(|e| failed(e.to_string()))? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(failed(format!("larger than {MAX_JWKS_BYTES} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        KeySet::from_jwks(&body)
    }

    /// The key named `kid`: from the current set, or after a refresh (within the floor)
    /// when the set is stale or does not have it.
    pub async fn key(&self, kid: &str) -> Result<DecodingKey, JwtError> {
        if self
            .fetched_at()
            .is_some_and(|t| t.elapsed() >= self.max_age)
        {
            self.refresh().await;
        }
        if let Some(k) = self.current().get(kid) {
            return Ok(k.clone());
        }
        self.refresh().await;
        if let Some(k) = self.current().get(kid) {
            return Ok(k.clone());
        }
        if self.fetched_at().is_none() {
            Err(JwtError::KeysUnavailable)
        } else {
            Err(JwtError::UnknownKey(shown(kid)))
        }
    }
}

/// Verifies access tokens: [`precheck`], the key from the [`JwksCache`], then
/// [`verify_signed`] — or, for a token verified in the last minute, its claims from a
/// small cache ([`Verified`]).
#[derive(Debug, Clone)]
pub struct Verifier {
    config: Arc<JwtConfig>,
    keys: Arc<JwksCache>,
    verified: Arc<Verified>,
}

/// How many verified tokens are remembered.
const VERIFIED_CAPACITY: usize = 10_000;
/// How long a verified token is taken on trust (at most until it expires).
const VERIFIED_FOR: u64 = 60;

/// Tokens verified recently, by the SHA-256 of the whole token. A client sends the same
/// access token with every request for its lifetime, and an Ed25519 verification costs
/// tens of microseconds, most of the gateway's time per request: a hit skips it. An
/// entry is used only while its token is unexpired (with the leeway), for at most
/// [`VERIFIED_FOR`] seconds, and only with the key set it was verified against — a new
/// key set (a rotation, a removed key) verifies every token afresh. Failures are not
/// remembered. When full, the cache starts over.
#[derive(Debug, Default)]
pub struct Verified {
    entries: std::sync::Mutex<HashMap<[u8; 32], VerifiedEntry>>,
}

#[derive(Debug, Clone)]
struct VerifiedEntry {
    claims: Claims,
    /// Unix seconds after which the entry is not used.
    until: u64,
    /// The [`JwksCache::generation`] it was verified under.
    keys: u64,
}

impl Verified {
    fn digest(token: &str) -> [u8; 32] {
        let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let mut out = [0; 32];
        out.copy_from_slice(d.as_ref());
        out
    }

    fn get(&self, digest: &[u8; 32], now: u64, keys: u64) -> Option<Claims> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(digest)
            .filter(|e| now <= e.until && e.keys == keys)
            .map(|e| e.claims.clone())
    }

    fn put(&self, digest: [u8; 32], entry: VerifiedEntry) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= VERIFIED_CAPACITY {
            entries.clear();
        }
        entries.insert(digest, entry);
    }

    /// Tokens remembered now.
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Verifier {
    /// A verifier with `config`'s rules over `keys`.
    pub fn new(config: JwtConfig, keys: Arc<JwksCache>) -> Self {
        Self {
            config: Arc::new(config),
            keys,
            verified: Arc::default(),
        }
    }

    /// The rules.
    pub fn config(&self) -> &JwtConfig {
        &self.config
    }

    /// The key cache.
    pub fn keys(&self) -> &Arc<JwksCache> {
        &self.keys
    }

    /// The tokens verified recently.
    pub fn verified(&self) -> &Verified {
        &self.verified
    }

    /// Verifies `token` now.
    pub async fn verify(&self, token: &str) -> Result<Claims, JwtError> {
        let now = now_secs();
        let digest = Verified::digest(token);
        // Read before the key is looked up: a set installed meanwhile makes the entry
        // stale at once rather than trusted under a set that did not verify it.
        let generation = self.keys.generation();
        if let Some(claims) = self.verified.get(&digest, now, generation) {
            return Ok(claims);
        }
        let kid = precheck(token, self.config.max_token_bytes)?;
        let key = self.keys.key(&kid).await?;
        let claims = verify_signed(token, &key, &self.config, now)?;
        let until = claims
            .exp
            .saturating_add(self.config.leeway.as_secs())
            .min(now + VERIFIED_FOR);
        self.verified.put(
            digest,
            VerifiedEntry {
                claims: claims.clone(),
                until,
                keys: generation,
            },
        );
        Ok(claims)
    }
}

/// Entry points shared by the fuzz targets (`fuzz/`) and the tests that replay their
/// corpus: they must never panic, whatever the input.
pub mod fuzzing {
    use super::*;

    /// A fixed, valid Ed25519 public key (RFC 8032 test 1) under kid `k1`.
    const PUBLIC: [u8; 32] = [
        0xd7, 0x5a, 0x98, 0x01, 0x82, 0xb1, 0x0a, 0xb7, 0xd5, 0x4b, 0xfe, 0xd3, 0xc9, 0x64, 0x07,
        0x3a, 0x0e, 0xe1, 0x72, 0xf3, 0xda, 0xa6, 0x23, 0x25, 0xaf, 0x02, 0x1a, 0x68, 0xf7, 0x07,
        0x51, 0x1a,
    ];

    /// Runs `data` (as a token) through the whole synchronous verification path.
    pub fn verify_token(data: &[u8]) -> Result<Claims, JwtError> {
        let token = String::from_utf8_lossy(data);
        let config = JwtConfig::default();
        let kid = precheck(&token, config.max_token_bytes)?;
        let keys = KeySet::from_ed25519(&[("k1", &PUBLIC)]);
        let key = keys
            .get(&kid)
            .ok_or_else(|| JwtError::UnknownKey(shown(&kid)))?;
        verify_signed(&token, key, &config, now_secs())
    }

    /// Runs `data` through the JWKS document parser.
    pub fn parse_jwks(data: &[u8]) -> Option<usize> {
        KeySet::from_jwks(data).ok().map(|k| k.kids().len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header as JwtHeader};
    use ring::signature::{Ed25519KeyPair, KeyPair};
    use serde_json::{Value, json};

    struct TestKey {
        kid: String,
        pkcs8: Vec<u8>,
        public: Vec<u8>,
    }

    fn test_key(kid: &str) -> TestKey {
        let rng = ring::rand::SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(doc.as_ref()).unwrap();
        TestKey {
            kid: kid.to_owned(),
            pkcs8: doc.as_ref().to_vec(),
            public: pair.public_key().as_ref().to_vec(),
        }
    }

    fn claims() -> Value {
        let now = now_secs();
        json!({
            "iss": ISSUER, "aud": AUDIENCE, "sub": "u-1", "exp": now + 600, "iat": now,
            "nbf": now, "jti": "j-1", "scope": "orders:read orders:write", "roles": ["customer"],
        })
    }

    fn sign(key: &TestKey, claims: &Value) -> String {
        let mut h = JwtHeader::new(Algorithm::EdDSA);
        h.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&h, claims, &EncodingKey::from_ed_der(&key.pkcs8)).unwrap()
    }

    fn b64(v: &impl Serialize) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    }

    /// A token with any header, signed (or not) with whatever `signature` says.
    fn forged(header: Value, claims: &Value, signature: &str) -> String {
        format!("{}.{}.{signature}", b64(&header), b64(claims))
    }

    fn jwks(keys: &[&TestKey]) -> Value {
        let keys: Vec<Value> = keys
            .iter()
            .map(|k| {
                json!({"kty": "OKP", "crv": "Ed25519", "kid": k.kid, "alg": "EdDSA",
                       "use": "sig", "x": URL_SAFE_NO_PAD.encode(&k.public)})
            })
            .collect();
        json!({ "keys": keys })
    }

    fn verify(key: &TestKey, token: &str) -> Result<Claims, JwtError> {
        let config = JwtConfig::default();
        let kid = precheck(token, config.max_token_bytes)?;
        let set = KeySet::from_ed25519(&[(key.kid.as_str(), &key.public)]);
        let k = set.get(&kid).ok_or(JwtError::UnknownKey(kid))?;
        verify_signed(token, k, &config, now_secs())
    }

    #[test]
    fn a_valid_token_gives_the_caller() {
        let k = test_key("k1");
        let c = verify(&k, &sign(&k, &claims())).unwrap();
        let id = c.identity();
        assert_eq!(id.user_id, "u-1");
        assert_eq!(id.roles, ["customer"]);
        assert_eq!(id.scopes, ["orders:read", "orders:write"]);
        // `aud` may be a list that includes ours.
        let mut c = claims();
        c["aud"] = json!(["other", AUDIENCE]);
        assert!(verify(&k, &sign(&k, &c)).is_ok());
    }

    #[test]
    fn only_eddsa_is_accepted() {
        let k = test_key("k1");
        let c = claims();
        for alg in [
            "none", "None", "NONE", "nOnE", "HS256", "RS256", "ES256", "eddsa", "",
        ] {
            let t = forged(json!({"alg": alg, "kid": "k1"}), &c, "c2ln");
            assert!(
                matches!(verify(&k, &t), Err(JwtError::Algorithm(_))),
                "{alg}"
            );
        }
        // alg none with an empty signature is not even a signed JWT.
        let t = forged(json!({"alg": "none"}), &c, "");
        assert_eq!(verify(&k, &t), Err(JwtError::Malformed));
        assert!(matches!(
            verify(&k, &forged(json!({"kid": "k1"}), &c, "c2ln")),
            Err(JwtError::Algorithm(_))
        ));
        // HS256 with the public key as the HMAC secret.
        let mut h = JwtHeader::new(Algorithm::HS256);
        h.kid = Some("k1".into());
        let t =
            jsonwebtoken::encode(&h, &c, &EncodingKey::from_secret(&k.public).unwrap()).unwrap();
        assert!(matches!(verify(&k, &t), Err(JwtError::Algorithm(_))));
    }

    #[test]
    fn signatures_must_be_by_the_named_key() {
        let k = test_key("k1");
        let mut attacker = test_key("k1");
        let t = sign(&attacker, &claims());
        assert_eq!(verify(&k, &t), Err(JwtError::Signature));
        // An embedded key or a key URL changes nothing.
        attacker.kid = "evil".into();
        let jwk = jwks(&[&attacker])["keys"][0].clone();
        let mut h = JwtHeader::new(Algorithm::EdDSA);
        h.kid = Some("k1".into());
        h.jku = Some("http://attacker.example/jwks.json".into());
        h.x5u = Some("http://attacker.example/cert.pem".into());
        h.jwk = serde_json::from_value(jwk).ok();
        let t = jsonwebtoken::encode(&h, &claims(), &EncodingKey::from_ed_der(&attacker.pkcs8))
            .unwrap();
        assert_eq!(verify(&k, &t), Err(JwtError::Signature));
        // Stripped signature.
        let good = sign(&k, &claims());
        let stripped = &good[..good.rfind('.').unwrap() + 1];
        assert_eq!(verify(&k, stripped), Err(JwtError::Malformed));
        // A flipped payload bit.
        let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
        let mut c = claims();
        c["roles"] = json!(["admin"]);
        parts[1] = b64(&c);
        assert_eq!(verify(&k, &parts.join(".")), Err(JwtError::Signature));
    }

    #[test]
    fn claims_are_checked() {
        let k = test_key("k1");
        let now = now_secs();
        let with = |key: &str, v: Value| {
            let mut c = claims();
            if v.is_null() {
                c.as_object_mut().unwrap().remove(key);
            } else {
                c[key] = v;
            }
            verify(&k, &sign(&k, &c))
        };
        assert_eq!(with("exp", json!(now - 60)), Err(JwtError::Expired));
        assert!(with("exp", json!(now - 10)).is_ok(), "within the leeway");
        assert_eq!(with("nbf", json!(now + 120)), Err(JwtError::NotYetValid));
        assert_eq!(with("iat", json!(now + 120)), Err(JwtError::IssuedInFuture));
        assert_eq!(with("iss", json!("someone")), Err(JwtError::Issuer));
        assert_eq!(with("aud", json!("other")), Err(JwtError::Audience));
        assert_eq!(
            with("exp", Value::Null),
            Err(JwtError::MissingClaim("exp".into()))
        );
        assert!(matches!(
            with("aud", Value::Null),
            Err(JwtError::MissingClaim(_))
        ));
        assert!(matches!(
            with("sub", Value::Null),
            Err(JwtError::MissingClaim(_))
        ));
        assert!(with("exp", json!("tomorrow")).is_err());
        assert!(matches!(
            with("exp", json!(now + 86_400)),
            Err(JwtError::Lifetime(_))
        ));
        assert!(matches!(
            with("sub", json!("a b")),
            Err(JwtError::Claims(_))
        ));
        assert!(matches!(
            with("roles", json!(["x\ny"])),
            Err(JwtError::Claims(_))
        ));
        assert!(
            with("crit", json!(1)).is_ok(),
            "crit in claims means nothing"
        );
        let t = forged(
            json!({"alg": "EdDSA", "kid": "k1", "crit": ["exp"]}),
            &claims(),
            "c2ln",
        );
        assert_eq!(verify(&k, &t), Err(JwtError::Critical));
    }

    #[test]
    fn garbage_is_malformed_and_large_tokens_are_not_read() {
        let k = test_key("k1");
        for t in [
            "",
            ".",
            "..",
            "a.b",
            "a.b.c.d",
            "!!!.???.***",
            "eyJ.eyJ.sig",
            "a b.c.d",
        ] {
            assert!(verify(&k, t).is_err(), "{t:?}");
        }
        let big = format!("{}.{}.sig", "a".repeat(100_000), "b");
        assert_eq!(verify(&k, &big), Err(JwtError::TooLarge(MAX_TOKEN_BYTES)));
        let t = forged(json!({"alg": "EdDSA"}), &claims(), "c2ln");
        assert_eq!(verify(&k, &t), Err(JwtError::MissingKid));
        let t = forged(json!({"alg": "EdDSA", "kid": 7}), &claims(), "c2ln");
        assert_eq!(verify(&k, &t), Err(JwtError::MissingKid));
    }

    #[test]
    fn bearer_headers() {
        let v = |s: &'static str| http::HeaderValue::from_static(s);
        assert_eq!(bearer(&v("Bearer abc")), Some("abc"));
        assert_eq!(bearer(&v("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(&v("Basic abc")), None);
        assert_eq!(bearer(&v("Bearer ")), None);
        assert_eq!(bearer(&v("Bearer")), None);
    }

    #[test]
    fn jwks_documents_keep_only_usable_ed25519_keys() {
        let (a, b) = (test_key("a"), test_key("b"));
        let mut doc = jwks(&[&a, &b]);
        let keys = doc["keys"].as_array_mut().unwrap();
        keys.push(json!({"kty": "RSA", "kid": "rsa", "n": "AQAB", "e": "AQAB"}));
        keys.push(json!({"kty": "OKP", "crv": "Ed25519", "kid": "short", "x": "AAAA"}));
        keys.push(json!({"kty": "OKP", "crv": "Ed25519", "kid": "hs", "alg": "HS256", "x": URL_SAFE_NO_PAD.encode(&a.public)}));
        keys.push(json!({"kty": "OKP", "crv": "Ed25519", "kid": "private", "d": "x", "x": URL_SAFE_NO_PAD.encode(&a.public)}));
        keys.push(json!({"kty": "OKP", "crv": "Ed25519", "kid": "a", "x": URL_SAFE_NO_PAD.encode(&b.public)}));
        let set = KeySet::from_jwks(&serde_json::to_vec(&doc).unwrap()).unwrap();
        assert_eq!(set.kids(), ["a", "b"]);
        let t = sign(&a, &claims());
        assert!(
            verify_signed(&t, set.get("a").unwrap(), &JwtConfig::default(), now_secs()).is_ok()
        );
        assert!(KeySet::from_jwks(b"{}").is_err());
        assert!(KeySet::from_jwks(b"not json").is_err());
    }

    #[test]
    fn config_validation_names_the_setting() {
        let mut c = JwtConfig::default();
        assert!(c.validate("FLOTILLA_GATEWAY__JWT").is_ok());
        c.leeway = Duration::from_secs(60);
        let e = c.validate("FLOTILLA_GATEWAY__JWT").unwrap_err().to_string();
        assert!(e.contains("FLOTILLA_GATEWAY__JWT__LEEWAY"), "{e}");
        c = JwtConfig {
            jwks: "file:///etc/passwd".into(),
            ..JwtConfig::default()
        };
        assert!(c.validate("P").unwrap_err().to_string().contains("P__JWKS"));
        for ok in [
            "service://auth",
            "service://keys/v1/jwks",
            "http://127.0.0.1:9/jwks.json",
        ] {
            assert!(JwksLocation::parse(ok).is_ok(), "{ok}");
        }
    }

    /// A JWKS server whose document can be swapped, counting the requests it gets.
    async fn jwks_server(doc: Value) -> (String, Arc<RwLock<Option<Value>>>, Arc<AtomicU64>) {
        let doc = Arc::new(RwLock::new(Some(doc)));
        let hits = Arc::new(AtomicU64::new(0));
        let (d, h) = (doc.clone(), hits.clone());
        let app = axum::Router::new().route(
            JWKS_PATH,
            axum::routing::get(move || {
                let (d, h) = (d.clone(), h.clone());
                async move {
                    h.fetch_add(1, Ordering::SeqCst);
                    match d.read().unwrap().clone() {
                        Some(v) => axum::Json(v).into_response(),
                        None => http::StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}{JWKS_PATH}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (url, doc, hits)
    }

    use axum::response::IntoResponse;

    #[tokio::test]
    async fn a_verified_token_is_trusted_only_under_the_key_set_that_verified_it() {
        let (k1, k2) = (test_key("k1"), test_key("k2"));
        let (url, doc, hits) = jwks_server(jwks(&[&k1])).await;
        let floor = Duration::from_millis(100);
        let cache = Arc::new(JwksCache::from_url(&url, floor, Duration::from_secs(300)));
        let v = Verifier::new(JwtConfig::default(), cache.clone());
        let token = sign(&k1, &claims());
        let first = v.verify(&token).await.unwrap();
        assert_eq!(v.verified().len(), 1);
        assert_eq!(
            v.verify(&token).await.unwrap(),
            first,
            "a hit gives the same claims"
        );

        // A forged copy (same claims, signature changed) is not the cached token.
        let mut forged = token.clone().into_bytes();
        let i = forged.len() - 10;
        forged[i] = if forged[i] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).unwrap();
        assert!(v.verify(&forged).await.is_err());
        assert_eq!(v.verified().len(), 1, "failures are not remembered");

        // k1 is withdrawn: a new key set makes the cached entry stale, and the token
        // is verified again, and refused.
        *doc.write().unwrap() = Some(jwks(&[&k2]));
        tokio::time::sleep(floor).await;
        assert_eq!(cache.refresh().await, Refresh::Fetched);
        assert!(matches!(
            v.verify(&token).await,
            Err(JwtError::UnknownKey(_))
        ));
        assert!(hits.load(Ordering::SeqCst) >= 2);
    }

    #[test]
    fn an_expired_entry_is_not_used() {
        let verified = Verified::default();
        let digest = Verified::digest("t");
        let entry = VerifiedEntry {
            claims: serde_json::from_value(serde_json::json!({
                "iss": "i", "aud": "a", "sub": "u", "exp": 100, "iat": 50,
                "jti": "j", "scope": "", "roles": []
            }))
            .unwrap(),
            until: 100,
            keys: 7,
        };
        verified.put(digest, entry);
        assert!(verified.get(&digest, 100, 7).is_some());
        assert!(verified.get(&digest, 101, 7).is_none(), "past its time");
        assert!(verified.get(&digest, 99, 8).is_none(), "another key set");
        assert!(verified.get(&Verified::digest("u"), 99, 7).is_none());
    }

    #[tokio::test]
    async fn unknown_kids_refresh_at_most_once_per_floor_and_failures_keep_the_keys() {
        let (k1, k2) = (test_key("k1"), test_key("k2"));
        let (url, doc, hits) = jwks_server(jwks(&[&k1])).await;
        let floor = Duration::from_millis(400);
        let cache = Arc::new(JwksCache::from_url(&url, floor, Duration::from_secs(300)));
        let v = Verifier::new(JwtConfig::default(), cache.clone());
        assert!(v.verify(&sign(&k1, &claims())).await.is_ok());
        assert_eq!(hits.load(Ordering::SeqCst), 1);

        // A burst of made-up kids, concurrently and one after another: no new fetch
        // within the floor.
        let forged: Vec<String> = (0..50)
            .map(|i| {
                sign(
                    &TestKey {
                        kid: format!("x{i}"),
                        ..test_key("")
                    },
                    &claims(),
                )
            })
            .collect();
        let results = futures_util::future::join_all(forged.iter().map(|t| v.verify(t))).await;
        assert!(
            results
                .iter()
                .all(|r| matches!(r, Err(JwtError::UnknownKey(_))))
        );
        assert_eq!(hits.load(Ordering::SeqCst), 1, "within the floor");

        // After the floor, one unknown kid brings the rotated set in.
        *doc.write().unwrap() = Some(jwks(&[&k1, &k2]));
        tokio::time::sleep(floor).await;
        let t2 = sign(&k2, &claims());
        let (a, b) = tokio::join!(v.verify(&t2), v.verify(&t2));
        assert!(a.is_ok() && b.is_ok(), "{a:?} {b:?}");
        assert_eq!(
            hits.load(Ordering::SeqCst),
            2,
            "one fetch for concurrent callers"
        );

        // The issuer fails: the last good set stays in use.
        *doc.write().unwrap() = None;
        tokio::time::sleep(floor).await;
        assert_eq!(cache.refresh().await, Refresh::Failed);
        assert!(v.verify(&t2).await.is_ok());
        assert_eq!(cache.current().kids(), ["k1", "k2"]);
        assert_eq!(cache.fetches(), 3);
    }

    #[tokio::test]
    async fn no_keys_yet_is_unavailable_not_invalid() {
        let k = test_key("k1");
        let cache = Arc::new(JwksCache::from_url(
            "http://127.0.0.1:9/jwks.json",
            Duration::from_secs(10),
            Duration::from_secs(300),
        ));
        let v = Verifier::new(JwtConfig::default(), cache);
        let e = v.verify(&sign(&k, &claims())).await.unwrap_err();
        assert!(e.is_unavailable(), "{e:?}");
        // Garbage is refused before any key is needed.
        assert_eq!(v.verify("x.y.z").await, Err(JwtError::Malformed));
    }

    #[tokio::test]
    async fn an_issuer_that_starts_late_is_picked_up_within_a_second() {
        let k = test_key("k1");
        // Reserve a port, fail a fetch on it, then serve the keys there.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let url = format!("http://{addr}{JWKS_PATH}");
        let cache = Arc::new(JwksCache::from_url(
            &url,
            Duration::from_secs(10),
            Duration::from_secs(300),
        ));
        assert_eq!(cache.refresh().await, Refresh::Failed);
        let doc = jwks(&[&k]);
        let app = axum::Router::new().route(
            JWKS_PATH,
            axum::routing::get(move || async move { axum::Json(doc) }),
        );
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let v = Verifier::new(JwtConfig::default(), cache.clone());
        assert!(
            v.verify(&sign(&k, &claims()))
                .await
                .unwrap_err()
                .is_unavailable()
        );
        tokio::time::sleep(NO_KEYS_FLOOR).await;
        assert!(v.verify(&sign(&k, &claims())).await.is_ok());
        assert_eq!(cache.fetches(), 2);
    }

    #[test]
    fn fuzz_entry_points_survive_odd_input() {
        for input in [
            &b""[..],
            b"\xff\xfe",
            b"a.b.c",
            b"{\"keys\":[{}]}",
            &[0u8; 9000],
        ] {
            assert!(fuzzing::verify_token(input).is_err());
            let _ = fuzzing::parse_jwks(input);
        }
    }
}
