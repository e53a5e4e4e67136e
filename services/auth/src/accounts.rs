//! Creating accounts (a public registration or the seeded administrator): hash the
//! password, store the credential, its pending profile and `users.registered` in one
//! transaction, then have users create the profile.

use serde_json::json;

use crate::domain::{Email, Name, Password, Role};
use crate::password::{HashError, Hasher};
use crate::profiles::ProfileSync;
use crate::store::{Account, AuthStore, AuthStoreError, NewAccount, PendingProfile, Registered};
use crate::tokens::now_ms;

/// The `source` of every event auth publishes.
pub const SOURCE: &str = "auth";
/// Published once per new account.
pub const REGISTERED: &str = "users.registered";

/// Why an account was not created.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// Another account has this email.
    #[error("an account with this email exists")]
    EmailTaken,
    /// Hashing failed.
    #[error(transparent)]
    Hash(#[from] HashError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] AuthStoreError),
}

/// The `users.registered` event: `{userId, email, name, timestamp}`.
pub fn registered_event(user_id: &str, email: &str, name: &str) -> kit_events::Event {
    kit_events::Event::new(
        SOURCE,
        REGISTERED,
        json!({
            "userId": user_id,
            "email": email,
            "name": name,
            "timestamp": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
        }),
    )
}

/// Creates an account and returns its user id (UUIDv7). The profile is created in users
/// before this returns when users answers, and in the background otherwise.
pub async fn register(
    store: &dyn AuthStore,
    hasher: &Hasher,
    profiles: &ProfileSync,
    email: Email,
    password: Password,
    name: Name,
    role: Role,
) -> Result<String, RegisterError> {
    let password_hash = hasher.hash(password.expose()).await?;
    let id = uuid::Uuid::now_v7().to_string();
    let event = registered_event(&id, email.as_str(), name.as_str());
    let outcome = store
        .register(
            NewAccount {
                account: Account {
                    id: id.clone(),
                    email: email.as_str().to_owned(),
                    password_hash,
                    role,
                },
                name: name.as_str().to_owned(),
                created_ms: now_ms(),
            },
            REGISTERED,
            event,
        )
        .await?;
    if outcome == Registered::EmailTaken {
        return Err(RegisterError::EmailTaken);
    }
    profiles
        .create_or_defer(&PendingProfile {
            user_id: id.clone(),
            email: email.as_str().to_owned(),
            name: name.as_str().to_owned(),
            attempts: 0,
        })
        .await;
    Ok(id)
}
