//! Issuing tokens: EdDSA access tokens signed with the active key (header `kid`), and
//! opaque refresh tokens — 256 random bits, given to the client once and stored only as
//! their SHA-256 hash.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, Header};
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::domain::{Claims, Role};
use crate::keys::KeySet;

/// Signing failed (a corrupt key; never the client's fault).
#[derive(Debug, thiserror::Error)]
#[error("signing the access token failed: {0}")]
pub struct SignError(String);

/// Seconds since the epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A signed access token for `user_id` with `role`, living `ttl`.
pub fn access_token(
    keys: &KeySet,
    user_id: &str,
    role: Role,
    ttl: Duration,
) -> Result<String, SignError> {
    let claims = Claims::new(user_id, role, now_secs(), ttl);
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(keys.active.kid.clone());
    jsonwebtoken::encode(&header, &claims, &keys.encoding).map_err(|e| SignError(e.to_string()))
}

/// A new refresh token: 32 random bytes, base64url.
pub fn new_refresh_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// How a refresh token is stored: SHA-256, hex. (A fast hash is right here: the token
/// has 256 bits of entropy, so there is nothing to brute-force.)
pub fn refresh_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What login and refresh answer.
#[derive(Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenPair {
    /// The EdDSA JWT to send as `authorization: Bearer …`.
    pub access_token: String,
    /// The single-use token for `POST /api/auth/refresh`.
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
}

impl std::fmt::Debug for TokenPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenPair")
            .field("access_token", &"***")
            .field("refresh_token", &"***")
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AUDIENCE, ISSUER};
    use crate::keys::SigningKey;

    fn keyset() -> KeySet {
        let key = std::sync::Arc::new(SigningKey::generate(0));
        KeySet {
            encoding: key.encoding_key(),
            jwks: crate::keys::Jwks {
                keys: vec![key.jwk()],
            },
            active: key,
        }
    }

    #[test]
    fn access_tokens_verify_with_the_published_key() {
        let keys = keyset();
        let token = access_token(&keys, "u1", Role::Customer, Duration::from_secs(900)).unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, Algorithm::EdDSA);
        assert_eq!(header.kid.as_deref(), Some(keys.active.kid.as_str()));
        let decoding = jsonwebtoken::DecodingKey::from_ed_components(&keys.jwks.keys[0].x).unwrap();
        let mut validation = jsonwebtoken::Validation::new(Algorithm::EdDSA);
        validation.set_audience(&[AUDIENCE]);
        validation.set_issuer(&[ISSUER]);
        let data = jsonwebtoken::decode::<Claims>(&token, &decoding, &validation).unwrap();
        assert_eq!(data.claims.sub, "u1");
        assert_eq!(data.claims.exp - data.claims.iat, 900);

        let other = keyset();
        let wrong = jsonwebtoken::DecodingKey::from_ed_components(&other.jwks.keys[0].x).unwrap();
        assert!(jsonwebtoken::decode::<Claims>(&token, &wrong, &validation).is_err());
    }

    #[test]
    fn refresh_tokens_are_256_bits_and_stored_hashed() {
        let t = new_refresh_token();
        assert_eq!(URL_SAFE_NO_PAD.decode(&t).unwrap().len(), 32);
        assert_ne!(t, new_refresh_token());
        let h = refresh_hash(&t);
        assert_eq!(h.len(), 64);
        assert!(!h.contains(&t));
        assert_eq!(h, refresh_hash(&t));
    }

    #[test]
    fn token_pairs_hide_their_tokens_in_debug_output() {
        let pair = TokenPair {
            access_token: "eyJsecret".into(),
            refresh_token: "refresh-secret".into(),
            token_type: "Bearer".into(),
            expires_in: 900,
        };
        let printed = format!("{pair:?}");
        assert!(!printed.contains("secret"), "{printed}");
    }
}
