//! Signing keys: Ed25519, generated on first start and kept in auth's own store, and
//! rotatable (`flotilla auth rotate-key`). The newest unrotated key signs; a rotated key
//! stays in the JWKS until every token it signed has expired (it retires at rotation
//! time plus the access-token lifetime, the reload interval and a leeway). Running
//! instances reload the keys from the store at most every `key_reload`, so a rotation
//! made by another process is picked up without a restart.
//!
//! The private half is held in a [`secrecy::SecretBox`] and never printed: `Debug`
//! redacts it, and it is exposed only to build the signing key.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::EncodingKey;
use rand::Rng;
use secrecy::{ExposeSecret, SecretBox, SecretString};
use serde::Serialize;

use crate::domain::duration_ms;
use crate::store::{AuthStore, AuthStoreError, StoredKey};

/// Clock skew and propagation slack added before a rotated key leaves the JWKS.
pub const RETIRE_LEEWAY: Duration = Duration::from_secs(60);

/// PKCS #8 v1 prefix of an Ed25519 private key (RFC 8410): the DER before the 32-byte
/// seed. jsonwebtoken's EdDSA signer takes this encoding.
const PKCS8_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// A key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] AuthStoreError),
    /// A stored key is not a valid Ed25519 key.
    #[error("signing key {0} is corrupt")]
    Corrupt(String),
    /// There is no key to sign with.
    #[error("no active signing key")]
    NoActiveKey,
}

/// One Ed25519 signing key.
pub struct SigningKey {
    /// Key id (`kid`).
    pub kid: String,
    seed: SecretBox<[u8; 32]>,
    /// The public key.
    pub public: [u8; 32],
    /// When it was created (ms since the epoch).
    pub created_ms: i64,
    /// When a newer key replaced it.
    pub rotated_ms: Option<i64>,
    /// When it leaves the JWKS.
    pub retire_after_ms: Option<i64>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("seed", &"***")
            .field("public", &URL_SAFE_NO_PAD.encode(self.public))
            .field("created_ms", &self.created_ms)
            .field("rotated_ms", &self.rotated_ms)
            .finish()
    }
}

/// One public key of the JWKS (RFC 8037: `OKP`, `Ed25519`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Jwk {
    /// Always `OKP`.
    pub kty: String,
    /// Always `Ed25519`.
    pub crv: String,
    /// The public key, base64url.
    pub x: String,
    /// Key id, matching the token header's `kid`.
    pub kid: String,
    /// Always `EdDSA`.
    pub alg: String,
    /// Always `sig`.
    #[serde(rename = "use")]
    pub use_: String,
}

/// The JWKS document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Jwks {
    /// The published keys, active first.
    pub keys: Vec<Jwk>,
}

impl SigningKey {
    /// A fresh random key.
    pub fn generate(now_ms: i64) -> Self {
        let mut seed = [0u8; 32];
        rand::rng().fill_bytes(&mut seed);
        let public = ed25519_dalek::SigningKey::from_bytes(&seed)
            .verifying_key()
            .to_bytes();
        Self {
            kid: uuid::Uuid::now_v7().simple().to_string(),
            seed: SecretBox::new(Box::new(seed)),
            public,
            created_ms: now_ms,
            rotated_ms: None,
            retire_after_ms: None,
        }
    }

    /// A key from its stored form, checking the public half matches the private one.
    pub fn from_stored(k: &StoredKey) -> Result<Self, KeyError> {
        let corrupt = || KeyError::Corrupt(k.kid.clone());
        let seed: [u8; 32] = URL_SAFE_NO_PAD
            .decode(k.private_key.expose_secret())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(corrupt)?;
        let public = ed25519_dalek::SigningKey::from_bytes(&seed)
            .verifying_key()
            .to_bytes();
        if URL_SAFE_NO_PAD.encode(public) != k.public_key {
            return Err(corrupt());
        }
        Ok(Self {
            kid: k.kid.clone(),
            seed: SecretBox::new(Box::new(seed)),
            public,
            created_ms: k.created_ms,
            rotated_ms: k.rotated_ms,
            retire_after_ms: k.retire_after_ms,
        })
    }

    /// Its stored form.
    pub fn to_stored(&self) -> StoredKey {
        StoredKey {
            kid: self.kid.clone(),
            private_key: SecretString::from(URL_SAFE_NO_PAD.encode(self.seed.expose_secret())),
            public_key: URL_SAFE_NO_PAD.encode(self.public),
            created_ms: self.created_ms,
            rotated_ms: self.rotated_ms,
            retire_after_ms: self.retire_after_ms,
        }
    }

    /// The key jsonwebtoken signs with.
    pub fn encoding_key(&self) -> EncodingKey {
        let mut der = Vec::with_capacity(48);
        der.extend_from_slice(&PKCS8_ED25519_PREFIX);
        der.extend_from_slice(self.seed.expose_secret());
        EncodingKey::from_ed_der(&der)
    }

    /// Its public JWK.
    pub fn jwk(&self) -> Jwk {
        Jwk {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            x: URL_SAFE_NO_PAD.encode(self.public),
            kid: self.kid.clone(),
            alg: "EdDSA".into(),
            use_: "sig".into(),
        }
    }

    /// Whether it is still published at `now_ms`.
    pub fn published(&self, now_ms: i64) -> bool {
        self.retire_after_ms.is_none_or(|t| t > now_ms)
    }
}

/// The keys as loaded at one moment.
pub struct KeySet {
    /// The key that signs.
    pub active: Arc<SigningKey>,
    /// Its jsonwebtoken form.
    pub encoding: EncodingKey,
    /// Every key still published, active first.
    pub jwks: Jwks,
}

/// A loaded key set and when it was loaded.
type Cached = (Instant, Arc<KeySet>);

/// The keys of a running instance, reloaded from the store at most every `reload`.
#[derive(Clone)]
pub struct KeyRing {
    store: Arc<dyn AuthStore>,
    reload: Duration,
    cached: Arc<Mutex<Option<Cached>>>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("reload", &self.reload)
            .finish_non_exhaustive()
    }
}

/// When keys rotated at `rotated_ms` leave the JWKS.
pub fn retire_after(rotated_ms: i64, access_ttl: Duration, reload: Duration) -> i64 {
    rotated_ms
        .saturating_add(duration_ms(access_ttl))
        .saturating_add(duration_ms(reload))
        .saturating_add(duration_ms(RETIRE_LEEWAY))
}

/// Adds a new active key; the current one keeps verifying until it retires. Returns the
/// new key's id. This is what `flotilla auth rotate-key` runs.
pub async fn rotate(
    store: &dyn AuthStore,
    access_ttl: Duration,
    reload: Duration,
    now_ms: i64,
) -> Result<String, KeyError> {
    let key = SigningKey::generate(now_ms);
    store
        .add_key(key.to_stored(), retire_after(now_ms, access_ttl, reload))
        .await?;
    Ok(key.kid)
}

impl KeyRing {
    /// A ring over `store`; makes sure a key exists (generating the first one).
    pub async fn open(
        store: Arc<dyn AuthStore>,
        reload: Duration,
        now_ms: i64,
    ) -> Result<Self, KeyError> {
        let has_active = store.keys().await?.iter().any(|k| k.rotated_ms.is_none());
        if !has_active {
            let key = SigningKey::generate(now_ms);
            store.add_key(key.to_stored(), now_ms).await?;
            tracing::info!(kid = %key.kid, "generated the first signing key");
        }
        let ring = Self {
            store,
            reload,
            cached: Arc::default(),
        };
        ring.current(now_ms).await?;
        Ok(ring)
    }

    /// The keys, from the cache when it is fresh.
    pub async fn current(&self, now_ms: i64) -> Result<Arc<KeySet>, KeyError> {
        if let Some((at, set)) = self
            .cached
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            && at.elapsed() < self.reload
        {
            return Ok(set.clone());
        }
        let set = Arc::new(self.load(now_ms).await?);
        *self.cached.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now(), set.clone()));
        Ok(set)
    }

    async fn load(&self, now_ms: i64) -> Result<KeySet, KeyError> {
        let stored = self.store.keys().await?;
        let mut keys = Vec::with_capacity(stored.len());
        for k in &stored {
            if k.rotated_ms.is_none() || k.retire_after_ms.is_none_or(|t| t > now_ms) {
                keys.push(Arc::new(SigningKey::from_stored(k)?));
            }
        }
        // Newest unrotated key signs (two instances generating a first key at once both
        // stay published; the newer one wins).
        let active = keys
            .iter()
            .find(|k| k.rotated_ms.is_none())
            .cloned()
            .ok_or(KeyError::NoActiveKey)?;
        let mut jwks = vec![active.jwk()];
        jwks.extend(
            keys.iter()
                .filter(|k| k.kid != active.kid && k.published(now_ms))
                .map(|k| k.jwk()),
        );
        Ok(KeySet {
            encoding: active.encoding_key(),
            active,
            jwks: Jwks { keys: jwks },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_private_key_never_shows_in_debug_output() {
        let key = SigningKey::generate(0);
        let stored = key.to_stored();
        let seed = stored.private_key.expose_secret().to_owned();
        for printed in [
            format!("{key:?}"),
            format!("{stored:?}"),
            format!("{:?}", stored.private_key),
        ] {
            assert!(!printed.contains(&seed), "{printed}");
        }
        assert!(format!("{key:?}").contains(&key.kid));
    }

    #[test]
    fn stored_keys_round_trip_and_corruption_is_caught() {
        let key = SigningKey::generate(7);
        let back = SigningKey::from_stored(&key.to_stored()).unwrap();
        assert_eq!(back.public, key.public);
        let mut bad = key.to_stored();
        bad.public_key = URL_SAFE_NO_PAD.encode([0u8; 32]);
        assert!(matches!(
            SigningKey::from_stored(&bad),
            Err(KeyError::Corrupt(_))
        ));
    }

    #[test]
    fn jwk_is_okp_ed25519() {
        let jwk = SigningKey::generate(0).jwk();
        let v = serde_json::to_value(&jwk).unwrap();
        assert_eq!(v["kty"], "OKP");
        assert_eq!(v["crv"], "Ed25519");
        assert_eq!(v["alg"], "EdDSA");
        assert_eq!(v["use"], "sig");
        assert_eq!(URL_SAFE_NO_PAD.decode(jwk.x).unwrap().len(), 32);
    }

    #[test]
    fn retirement_waits_for_every_token_signed() {
        let t = retire_after(1_000, Duration::from_secs(900), Duration::from_secs(10));
        assert_eq!(t, 1_000 + 900_000 + 10_000 + 60_000);
    }
}
