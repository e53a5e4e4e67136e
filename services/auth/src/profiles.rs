//! Creating each new account's profile in users, without ever losing a registration.
//!
//! Registration writes the credential, a pending-profile row and `users.registered` in
//! one transaction, then asks users (CreateProfile over gRPC, idempotent by user id) at
//! once; when users is down or slow the row stays, and [`ProfileSync::run`] retries it
//! with exponential backoff until users has it. Sign-up therefore never depends on users
//! being up, and a retry can never create a second profile.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kit::discovery::Discovery;
use kit::resilience::{ClientStack, Policy, ResilienceConfig};
use proto::channel::ResilientChannel;
use proto::users::CreateProfileRequest;
use proto::users::users_client::UsersClient;
use tokio::sync::Notify;
use tonic::transport::Endpoint;

use crate::domain::duration_ms;
use crate::store::{AuthStore, PendingProfile};
use crate::tokens::now_ms;

/// The service auth creates profiles in.
pub const USERS: &str = "users";

/// First retry delay; doubles per attempt.
const MIN_BACKOFF: Duration = Duration::from_millis(500);
/// Longest retry delay.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// The delay before retry `attempts` (1 after the first failure).
pub fn backoff(attempts: i64) -> Duration {
    let doublings = u32::try_from(attempts.saturating_sub(1).clamp(0, 20)).unwrap_or(20);
    MIN_BACKOFF
        .saturating_mul(2u32.saturating_pow(doublings))
        .min(MAX_BACKOFF)
}

/// Talks to users and keeps pending profiles moving.
#[derive(Clone)]
pub struct ProfileSync {
    store: Arc<dyn AuthStore>,
    discovery: Discovery,
    timeout: Duration,
    policy: Policy,
    channels: Arc<Mutex<HashMap<String, ResilientChannel>>>,
    wake: Arc<Notify>,
}

impl std::fmt::Debug for ProfileSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProfileSync")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl ProfileSync {
    /// Resolves users through `discovery`; each call may take `timeout` and passes the
    /// kit's client stack under users' policy in `resilience`.
    pub fn new(
        store: Arc<dyn AuthStore>,
        discovery: Discovery,
        timeout: Duration,
        resilience: &ResilienceConfig,
    ) -> Self {
        Self {
            store,
            discovery,
            timeout,
            policy: Policy::new(USERS, resilience),
            channels: Arc::default(),
            wake: Arc::new(Notify::new()),
        }
    }

    async fn client(&self) -> Result<UsersClient<ResilientChannel>, String> {
        let endpoints = self.discovery.endpoints(USERS);
        if endpoints.current().is_empty() {
            endpoints.wait_resolved(Duration::from_secs(1)).await;
        }
        let picked = endpoints
            .pick()
            .ok_or_else(|| "users has no healthy instance".to_owned())?;
        let addr = picked
            .instance
            .metadata
            .get("grpc_addr")
            .cloned()
            .ok_or_else(|| {
                format!(
                    "users instance {} advertises no grpc_addr",
                    picked.instance.id
                )
            })?;
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = channels.get(&addr) {
            return Ok(UsersClient::new(c.clone()));
        }
        let channel = Endpoint::from_shared(format!("{}://{addr}", kit::security::mtls::scheme()))
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(2))
            .connect_with_connector_lazy(proto::channel::connector());
        // CreateProfile is idempotent by user id: the stack may retry it.
        let stack = ClientStack::new(&self.policy, self.timeout)
            .instance(&picked.instance.id)
            .idempotent();
        let channel = proto::channel::resilient(channel, &stack, &addr);
        channels.insert(addr, channel.clone());
        Ok(UsersClient::new(channel))
    }

    /// Asks users for the profile once; on success the pending row is gone.
    pub async fn create(&self, p: &PendingProfile) -> Result<(), String> {
        let mut client = self.client().await?;
        let call = client.create_profile(CreateProfileRequest {
            user_id: p.user_id.clone(),
            email: p.email.clone(),
            name: p.name.clone(),
        });
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(_)) => {}
            Ok(Err(status)) => return Err(format!("users answered {status}")),
            Err(_) => return Err(format!("users did not answer within {:?}", self.timeout)),
        }
        self.store
            .profile_created(p.user_id.clone())
            .await
            .map_err(|e| e.to_string())
    }

    /// Tries `p` now; on failure records it for the background retry and wakes it.
    pub async fn create_or_defer(&self, p: &PendingProfile) {
        if let Err(e) = self.create(p).await {
            tracing::warn!(user_id = %p.user_id, error = %e, "profile not created yet; will retry");
            self.failed(p, e).await;
        }
    }

    async fn failed(&self, p: &PendingProfile, error: String) {
        let attempts = p.attempts + 1;
        let next = now_ms().saturating_add(duration_ms(backoff(attempts)));
        if let Err(e) = self
            .store
            .profile_failed(p.user_id.clone(), attempts, next, error)
            .await
        {
            tracing::warn!(error = %e, "cannot record a failed profile creation");
        }
        self.wake.notify_one();
    }

    /// One round: every due pending profile, oldest first. Returns how many were created.
    pub async fn sync_once(&self) -> usize {
        let due = match self.store.due_profiles(now_ms(), 50).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read pending profiles");
                return 0;
            }
        };
        let mut created = 0;
        for p in due {
            match self.create(&p).await {
                Ok(()) => {
                    created += 1;
                    tracing::info!(user_id = %p.user_id, attempts = p.attempts + 1, "profile created");
                }
                Err(e) => {
                    tracing::warn!(user_id = %p.user_id, attempts = p.attempts + 1, error = %e, "profile creation failed");
                    self.failed(&p, e).await;
                }
            }
        }
        created
    }

    /// Runs forever: a round every second, or sooner when poked.
    pub async fn run(self) {
        loop {
            self.sync_once().await;
            let _ = tokio::time::timeout(Duration::from_secs(1), self.wake.notified()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(2), Duration::from_secs(1));
        assert_eq!(backoff(4), Duration::from_secs(4));
        assert_eq!(backoff(100), Duration::from_secs(300));
        assert_eq!(backoff(0), Duration::from_millis(500));
    }
}
