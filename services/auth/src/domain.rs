//! Auth's rules, pure and unit-tested: what a valid email, password and name are, which
//! roles grant which scopes, what an access token claims, how lockout backs off, and
//! what presenting a refresh token does in each state of its family.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The `iss` of every access token.
pub const ISSUER: &str = "flotilla-auth";
/// The `aud` of every access token.
pub const AUDIENCE: &str = "flotilla";
/// The longest an access token may live.
pub const MAX_ACCESS_TTL: Duration = Duration::from_secs(15 * 60);
/// Shortest accepted password, in characters.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Longest accepted password, in bytes (bounds the work a request can ask for).
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Longest display name, in characters.
pub const MAX_NAME_CHARS: usize = 100;
/// Longest email, in bytes.
pub const MAX_EMAIL_BYTES: usize = 254;

/// An email address, trimmed and lower-cased (so `Ada@X` and `ada@x` are one account).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    /// Parses an address: `local@domain`, no spaces or control characters, at most 254
    /// bytes, a dot in the domain.
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        let email = raw.trim().to_lowercase();
        if email.len() > MAX_EMAIL_BYTES {
            return Err("must be at most 254 characters");
        }
        let Some((local, domain)) = email.rsplit_once('@') else {
            return Err("must be an email address");
        };
        let plausible = !local.is_empty()
            && !domain.is_empty()
            && !local.contains('@')
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !email.chars().any(|c| c.is_whitespace() || c.is_control());
        if plausible {
            Ok(Self(email))
        } else {
            Err("must be an email address")
        }
    }

    /// The normalized address.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A password that meets the policy: at least 12 characters, at most 1024 bytes. Its
/// `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(***)")
    }
}

impl Password {
    /// Checks a new password against the policy.
    pub fn parse(raw: String) -> Result<Self, &'static str> {
        if raw.chars().count() < MIN_PASSWORD_CHARS {
            return Err("must be at least 12 characters");
        }
        if raw.len() > MAX_PASSWORD_BYTES {
            return Err("must be at most 1024 bytes");
        }
        Ok(Self(raw))
    }

    /// The password's bytes, for hashing.
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// A display name: 1–100 characters after trimming, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name(String);

impl Name {
    /// Parses a name, saying what is wrong with it.
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        let name = raw.trim();
        if name.is_empty() {
            return Err("must not be empty");
        }
        if name.chars().count() > MAX_NAME_CHARS {
            return Err("must be at most 100 characters");
        }
        if name.chars().any(char::is_control) {
            return Err("must not contain control characters");
        }
        Ok(Self(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What an account is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A shopper.
    Customer,
    /// An operator of the shop.
    Admin,
}

/// The scopes every signed-in user has.
pub const CUSTOMER_SCOPES: &[&str] = &[
    "orders:read",
    "orders:write",
    "users:read",
    "users:write",
    "payments:read",
    "notifications:read",
];

impl Role {
    /// Its name in tokens and in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Customer => "customer",
            Self::Admin => "admin",
        }
    }

    /// Parses a stored role.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "customer" => Some(Self::Customer),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }

    /// The space-separated `scope` claim of this role.
    pub fn scope(self) -> String {
        let mut scopes = CUSTOMER_SCOPES.to_vec();
        if self == Self::Admin {
            scopes.push("admin");
        }
        scopes.join(" ")
    }
}

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Always [`ISSUER`].
    pub iss: String,
    /// Always [`AUDIENCE`].
    pub aud: String,
    /// The user id (UUIDv7).
    pub sub: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
    /// Not before, seconds since the epoch (= `iat`).
    pub nbf: u64,
    /// Unique token id.
    pub jti: String,
    /// Space-separated scopes.
    pub scope: String,
    /// Roles (`["customer"]`, `["admin"]`).
    pub roles: Vec<String>,
}

impl Claims {
    /// The claims of a token for `user_id` with `role`, issued at `now_secs`, living `ttl`.
    pub fn new(user_id: &str, role: Role, now_secs: u64, ttl: Duration) -> Self {
        Self {
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
            sub: user_id.to_owned(),
            exp: now_secs + ttl.as_secs(),
            iat: now_secs,
            nbf: now_secs,
            jti: uuid::Uuid::now_v7().to_string(),
            scope: role.scope(),
            roles: vec![role.as_str().to_owned()],
        }
    }
}

/// Checks a configured access-token lifetime: more than a second, at most 15 minutes.
pub fn check_access_ttl(ttl: Duration) -> Result<(), &'static str> {
    if ttl < Duration::from_secs(1) {
        return Err("must be at least 1s");
    }
    if ttl > MAX_ACCESS_TTL {
        return Err("must be at most 15m");
    }
    Ok(())
}

/// Login throttling: after `threshold` consecutive failures a key (an account or a
/// client address) is locked for `base`, doubling with each further failure up to
/// `max`. Failures older than `window` are forgotten (the store counts them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// Failures allowed before the first lock.
    pub threshold: u32,
    /// The first lock.
    pub base: Duration,
    /// The longest lock.
    pub max: Duration,
    /// How long a failure is remembered without a new one.
    pub window: Duration,
}

impl LockoutPolicy {
    /// How long a key is locked after its `failures`-th consecutive failure (zero below
    /// the threshold).
    pub fn lock_for(&self, failures: u32) -> Duration {
        if failures < self.threshold {
            return Duration::ZERO;
        }
        let doublings = (failures - self.threshold).min(30);
        self.base
            .saturating_mul(2u32.saturating_pow(doublings))
            .min(self.max)
    }
}

/// Milliseconds of a duration, saturating.
pub fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The state of one refresh token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshState {
    /// Never presented, not expired, family intact.
    Active,
    /// Presented once and replaced by its successor.
    Rotated,
    /// Revoked (logout, or its family was revoked).
    Revoked,
    /// Past its expiry.
    Expired,
}

impl RefreshState {
    /// The state of a stored token at `now_ms`.
    pub fn of(rotated: bool, revoked: bool, expires_ms: i64, now_ms: i64) -> Self {
        if revoked {
            Self::Revoked
        } else if rotated {
            Self::Rotated
        } else if expires_ms <= now_ms {
            Self::Expired
        } else {
            Self::Active
        }
    }
}

/// What presenting a refresh token does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshDecision {
    /// Mark it rotated and issue a successor in the same family.
    Rotate,
    /// It was already rotated: someone replays it, so revoke the whole family.
    RevokeFamily,
    /// Refuse (`401`), change nothing.
    Reject,
}

/// Refresh-token rotation: an active token is exchanged once; presenting a rotated one
/// again means it leaked, and the family (every token descended from one login) is
/// revoked so neither the thief nor the victim keeps a session.
pub fn decide_refresh(state: RefreshState) -> RefreshDecision {
    match state {
        RefreshState::Active => RefreshDecision::Rotate,
        RefreshState::Rotated => RefreshDecision::RevokeFamily,
        RefreshState::Revoked | RefreshState::Expired => RefreshDecision::Reject,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_policy() {
        assert!(Password::parse("short".into()).is_err());
        assert!(Password::parse("elevenchars".into()).is_err());
        assert!(Password::parse("twelve chars".into()).is_ok());
        assert!(
            Password::parse("ééééééééééé".into()).is_err(),
            "counts characters"
        );
        assert!(Password::parse("x".repeat(1025)).is_err());
        assert_eq!(
            format!("{:?}", Password::parse("hunter2hunter2".into()).unwrap()),
            "Password(***)"
        );
    }

    #[test]
    fn emails_are_normalized() {
        assert_eq!(
            Email::parse(" Ada@Example.COM ").unwrap().as_str(),
            "ada@example.com"
        );
        for bad in [
            "",
            "ada",
            "@example.com",
            "ada@",
            "ada@example",
            "a b@c.d",
            "a@b@c.d",
            "a@.c",
            "a@c.",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Email::parse(&format!("{}@x.io", "a".repeat(250))).is_err());
    }

    #[test]
    fn names() {
        assert_eq!(Name::parse(" Ada ").unwrap().as_str(), "Ada");
        assert!(Name::parse("").is_err());
        assert!(Name::parse(&"n".repeat(101)).is_err());
        assert!(Name::parse("a\nb").is_err());
    }

    #[test]
    fn claims_carry_role_and_scopes() {
        let c = Claims::new("u1", Role::Customer, 1_000, Duration::from_secs(900));
        assert_eq!((c.iss.as_str(), c.aud.as_str()), (ISSUER, AUDIENCE));
        assert_eq!((c.iat, c.nbf, c.exp), (1_000, 1_000, 1_900));
        assert_eq!(c.roles, vec!["customer"]);
        assert_eq!(
            c.scope,
            "orders:read orders:write users:read users:write payments:read notifications:read"
        );
        assert!(!c.scope.split(' ').any(|s| s == "admin"));
        let a = Claims::new("u2", Role::Admin, 1_000, Duration::from_secs(60));
        assert_eq!(a.roles, vec!["admin"]);
        assert!(a.scope.ends_with(" admin"));
        assert!(a.scope.starts_with(&c.scope));
        assert_ne!(c.jti, a.jti);
        assert_eq!(Role::parse("admin"), Some(Role::Admin));
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn access_ttl_is_at_most_15_minutes() {
        assert!(check_access_ttl(Duration::from_secs(900)).is_ok());
        assert!(check_access_ttl(Duration::from_secs(901)).is_err());
        assert!(check_access_ttl(Duration::ZERO).is_err());
    }

    const POLICY: LockoutPolicy = LockoutPolicy {
        threshold: 5,
        base: Duration::from_secs(1),
        max: Duration::from_secs(900),
        window: Duration::from_secs(900),
    };

    #[test]
    fn lockout_backs_off_exponentially_and_caps() {
        assert_eq!(POLICY.lock_for(4), Duration::ZERO);
        assert_eq!(POLICY.lock_for(5), Duration::from_secs(1));
        assert_eq!(POLICY.lock_for(6), Duration::from_secs(2));
        assert_eq!(POLICY.lock_for(9), Duration::from_secs(16));
        assert_eq!(POLICY.lock_for(40), Duration::from_secs(900));
        assert_eq!(POLICY.lock_for(u32::MAX), Duration::from_secs(900));
    }

    #[test]
    fn refresh_decisions() {
        let now = 10;
        assert_eq!(
            decide_refresh(RefreshState::of(false, false, 11, now)),
            RefreshDecision::Rotate
        );
        assert_eq!(
            decide_refresh(RefreshState::of(true, false, 11, now)),
            RefreshDecision::RevokeFamily
        );
        assert_eq!(
            decide_refresh(RefreshState::of(true, true, 11, now)),
            RefreshDecision::Reject
        );
        assert_eq!(
            decide_refresh(RefreshState::of(false, false, 10, now)),
            RefreshDecision::Reject
        );
    }
}
