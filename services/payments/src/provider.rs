//! The payment provider behind a trait, so a real one (a card processor's API) can
//! replace the simulated one without touching the rest.

use std::time::Duration;

use kit::discovery::BoxFuture;

use crate::domain::{Card, Money};

/// What the provider said to an authorization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authorization {
    /// Funds held; the provider's reference for later calls.
    Approved(String),
    /// Refused for good (`card_declined`, `insufficient_funds`).
    Declined(String),
}

/// The provider failed in a way worth retrying (timeouts, its own outage).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("payment provider unavailable: {0}")]
pub struct ProviderUnavailable(pub String);

/// A card processor.
pub trait PaymentProvider: Send + Sync + 'static {
    /// Holds `amount` on `card`.
    fn authorize<'a>(
        &'a self,
        card: &'a Card,
        amount: &'a Money,
    ) -> BoxFuture<'a, Result<Authorization, ProviderUnavailable>>;
    /// Takes held funds.
    fn capture<'a>(&'a self, reference: &'a str) -> BoxFuture<'a, Result<(), ProviderUnavailable>>;
    /// Cancels a hold.
    fn void<'a>(&'a self, reference: &'a str) -> BoxFuture<'a, Result<(), ProviderUnavailable>>;
    /// Gives back captured money.
    fn refund<'a>(
        &'a self,
        reference: &'a str,
        amount: &'a Money,
    ) -> BoxFuture<'a, Result<(), ProviderUnavailable>>;
}

/// API.md's test cards.
pub mod test_cards {
    /// Approves.
    pub const APPROVE: &str = "4242424242424242";
    /// Declines.
    pub const DECLINE: &str = "4000000000000002";
    /// Declines for insufficient funds.
    pub const INSUFFICIENT_FUNDS: &str = "4000000000009995";
    /// Fails with a retryable provider error.
    pub const PROVIDER_ERROR: &str = "4000000000000119";
}

/// A provider simulated in-process: the test cards behave as API.md says, any other
/// valid card approves; every call takes `latency`.
#[derive(Debug, Clone, Default)]
pub struct SimulatedProvider {
    /// Time each call takes.
    pub latency: Duration,
}

impl SimulatedProvider {
    async fn delay(&self) {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
    }
}

impl PaymentProvider for SimulatedProvider {
    fn authorize<'a>(
        &'a self,
        card: &'a Card,
        _amount: &'a Money,
    ) -> BoxFuture<'a, Result<Authorization, ProviderUnavailable>> {
        Box::pin(async move {
            self.delay().await;
            match card.number() {
                test_cards::DECLINE => Ok(Authorization::Declined("card_declined".into())),
                test_cards::INSUFFICIENT_FUNDS => {
                    Ok(Authorization::Declined("insufficient_funds".into()))
                }
                test_cards::PROVIDER_ERROR => {
                    Err(ProviderUnavailable("simulated provider error".into()))
                }
                _ => Ok(Authorization::Approved(format!(
                    "sim_{}",
                    uuid::Uuid::now_v7().simple()
                ))),
            }
        })
    }

    fn capture<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<(), ProviderUnavailable>> {
        Box::pin(async move {
            self.delay().await;
            Ok(())
        })
    }

    fn void<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<(), ProviderUnavailable>> {
        Box::pin(async move {
            self.delay().await;
            Ok(())
        })
    }

    fn refund<'a>(
        &'a self,
        _: &'a str,
        _: &'a Money,
    ) -> BoxFuture<'a, Result<(), ProviderUnavailable>> {
        Box::pin(async move {
            self.delay().await;
            Ok(())
        })
    }
}
