//! Password hashing: Argon2id with the OWASP parameters (m = 19 MiB, t = 2, p = 1),
//! stored as a PHC string (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`), so hashes made
//! with other parameters keep verifying after a change. Verification compares in
//! constant time. Hashing is deliberately slow, so it runs on the blocking pool and at
//! most a few at a time (each takes 19 MiB).

use std::sync::Arc;

use argon2::password_hash::phc::PasswordHash;
use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version};
use rand::Rng;
use tokio::sync::Semaphore;

/// Memory cost in KiB (OWASP: 19 MiB).
pub const MEMORY_KIB: u32 = 19_456;
/// Iterations (OWASP: 2).
pub const ITERATIONS: u32 = 2;
/// Lanes (OWASP: 1).
pub const PARALLELISM: u32 = 1;

/// Hashing failed (never a wrong password: that is `Ok(false)`).
#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

/// Hashes and verifies passwords.
#[derive(Clone)]
pub struct Hasher {
    permits: Arc<Semaphore>,
    /// A hash of a random password, verified against when the email is unknown so an
    /// unknown email takes as long as a wrong password.
    dummy: Arc<String>,
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hasher").finish_non_exhaustive()
    }
}

fn argon2() -> Argon2<'static> {
    let params = Params::new(MEMORY_KIB, ITERATIONS, PARALLELISM, None)
        .expect("the OWASP parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

fn hash_blocking(password: &[u8]) -> Result<String, HashError> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    argon2()
        .hash_password_with_salt(password, &salt)
        .map(|h| h.to_string())
        .map_err(|e| HashError(e.to_string()))
}

fn verify_blocking(password: &[u8], phc: &str) -> Result<bool, HashError> {
    let parsed = PasswordHash::new(phc).map_err(|e| HashError(e.to_string()))?;
    match argon2().verify_password(password, &parsed) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::PasswordInvalid) => Ok(false),
        Err(e) => Err(HashError(e.to_string())),
    }
}

impl Hasher {
    /// A hasher running at most as many hashes at once as there are cores.
    pub async fn new() -> Result<Self, HashError> {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        let mut random = [0u8; 32];
        rand::rng().fill_bytes(&mut random);
        let dummy = tokio::task::spawn_blocking(move || hash_blocking(&random))
            .await
            .map_err(|e| HashError(e.to_string()))??;
        Ok(Self {
            permits: Arc::new(Semaphore::new(cores.max(1))),
            dummy: Arc::new(dummy),
        })
    }

    /// The PHC string of `password` with a fresh random salt.
    pub async fn hash(&self, password: &[u8]) -> Result<String, HashError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| HashError(e.to_string()))?;
        let password = password.to_vec();
        tokio::task::spawn_blocking(move || hash_blocking(&password))
            .await
            .map_err(|e| HashError(e.to_string()))?
    }

    /// Whether `password` matches the stored hash; with `None` (unknown account) it
    /// verifies against a dummy hash and answers `false`, taking the same time.
    pub async fn verify(&self, password: &[u8], phc: Option<&str>) -> Result<bool, HashError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| HashError(e.to_string()))?;
        let known = phc.is_some();
        let phc = phc.map_or_else(|| self.dummy.as_str().to_owned(), str::to_owned);
        let password = password.to_vec();
        let matched = tokio::task::spawn_blocking(move || verify_blocking(&password, &phc))
            .await
            .map_err(|e| HashError(e.to_string()))??;
        Ok(known && matched)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_with_argon2id_owasp_parameters_and_verifies() {
        let h = Hasher::new().await.unwrap();
        let phc = h.hash(b"correct horse battery").await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(
            h.verify(b"correct horse battery", Some(&phc))
                .await
                .unwrap()
        );
        assert!(!h.verify(b"wrong horse battery", Some(&phc)).await.unwrap());
        assert!(!h.verify(b"correct horse battery", None).await.unwrap());
        let again = h.hash(b"correct horse battery").await.unwrap();
        assert_ne!(phc, again, "salted");
    }
}
