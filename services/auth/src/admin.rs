//! The seeded administrator: on first start, when no administrator exists, auth creates
//! one with a random password and writes `<data dir>/admin-credentials.json` (mode
//! 0600, created with that mode, never widened) — the only place the password ever
//! appears. Logs say that the file was written, never what is in it.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};

use crate::accounts::{RegisterError, register};
use crate::domain::{Email, Name, Password, Role};
use crate::password::Hasher;
use crate::profiles::ProfileSync;
use crate::store::AuthStore;

/// The file the seeded credentials are written to, in the data directory.
pub const CREDENTIALS_FILE: &str = "admin-credentials.json";

/// Seeding failed.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// The configured email is not acceptable.
    #[error("the administrator email {0:?} is not valid: {1}")]
    Email(String, &'static str),
    /// The generated password or the name failed their own policy (a bug).
    #[error("the seeded administrator is invalid: {0}")]
    Invalid(&'static str),
    /// The credentials file could not be written.
    #[error("cannot write {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Registering failed.
    #[error(transparent)]
    Register(#[from] RegisterError),
}

/// A random password: 24 bytes, base64url (32 characters, 192 bits).
pub fn random_password() -> SecretString {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    SecretString::from(URL_SAFE_NO_PAD.encode(bytes))
}

/// Writes the credentials file, readable by the owner only.
pub fn write_credentials(path: &Path, email: &str, password: &SecretString) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // A file left from an earlier store is replaced, never reused: its mode might be wider.
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    let body = serde_json::json!({"email": email, "password": password.expose_secret()});
    file.write_all(body.to_string().as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

/// Creates the administrator unless one exists; returns the credentials file when it
/// was written by this call.
pub async fn seed(
    store: &dyn AuthStore,
    hasher: &Hasher,
    profiles: &ProfileSync,
    data_dir: &Path,
    email: &str,
) -> Result<Option<PathBuf>, SeedError> {
    if store
        .admin_exists()
        .await
        .map_err(|e| SeedError::Register(e.into()))?
    {
        return Ok(None);
    }
    let parsed = Email::parse(email).map_err(|why| SeedError::Email(email.to_owned(), why))?;
    let password = random_password();
    let path = data_dir.join(CREDENTIALS_FILE);
    // The file first: a crash after it leaves an unused file that the next start
    // replaces; the other order could leave an administrator nobody can sign in as.
    write_credentials(&path, parsed.as_str(), &password).map_err(|source| SeedError::File {
        path: path.clone(),
        source,
    })?;
    let policy_ok =
        Password::parse(password.expose_secret().to_owned()).map_err(SeedError::Invalid)?;
    let name = Name::parse("Administrator").map_err(SeedError::Invalid)?;
    match register(
        store,
        hasher,
        profiles,
        parsed,
        policy_ok,
        name,
        Role::Admin,
    )
    .await
    {
        Ok(user_id) => {
            tracing::info!(%user_id, file = %path.display(), "seeded the administrator account; its credentials are in the file (mode 0600)");
            Ok(Some(path))
        }
        Err(RegisterError::EmailTaken) => {
            // A customer registered the administrator's address first: refuse loudly
            // rather than promote them.
            let _ = std::fs::remove_file(&path);
            Err(SeedError::Email(
                email.to_owned(),
                "an account that is not an administrator already uses it",
            ))
        }
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            Err(e.into())
        }
    }
}
