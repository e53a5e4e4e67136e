//! Reconciliation of authorizations cut short by a crash.
//!
//! [`Payments::authorize`] claims a payment (`pending`) before it calls the provider and
//! records the provider's answer after. A process that dies in between leaves the claim
//! pending: without reconciliation every retried `Authorize` for the order would get
//! `ABORTED` forever, and a hold the provider placed would never be captured or voided.
//!
//! Every claim older than the stale age (`FLOTILLA_PAYMENTS__RECONCILE_STALE_AFTER`) is
//! resolved by asking the provider what it knows under the payment's id, the idempotency
//! key the authorization was sent with ([`resolve`]):
//!
//! - the provider answered it (a hold, or a decline): the answer is recorded, with the
//!   `payments.authorized` / `payments.declined` event through the outbox, exactly as if
//!   the authorization had finished;
//! - the provider has no record: the request never reached it, nothing was held, and the
//!   claim is released (deleted), as the ledger does when the provider fails retryably,
//!   so the saga's next `Authorize` starts afresh. Re-driving the authorization instead
//!   is not possible here: the card is never stored, so only a retried `Authorize`
//!   (which carries it) could, and releasing lets that retry do exactly this;
//! - the provider cannot be asked: the claim stays for the next sweep.
//!
//! A request still in flight when its claim is released can still reach the provider
//! and place a hold; whoever then holds that answer finds the claim gone and voids the
//! hold ([`settle`]), so no money stays held for a payment the ledger does not have.
//!
//! Each change is compare-and-set on `pending` ([`crate::store::Ledger::complete`],
//! [`crate::store::Ledger::abandon`]): any number of instances may sweep the same
//! ledger, and a retried `Authorize` may resolve the same claim inline, and one outcome
//! (one event) is recorded. Correctness does not rest on the stale age or on clocks
//! agreeing; a short stale age only costs lookups (and, for a slow provider, a voided
//! hold).
//!
//! Metrics: `payments_reconciled_total{outcome}` (`authorized`, `declined`, `released`,
//! `already_resolved`, `unreachable`) and the gauge `payments_pending_stale` (stale
//! claims left pending by the last sweep).

use std::time::{Duration, SystemTime};

use crate::domain::{Payment, Status};
use crate::ledger::Payments;
use crate::provider::{Authorization, Lookup, ProviderUnavailable};
use crate::store::{Completed, LedgerError};

/// The default stale age: well above any provider call, well below the saga's step
/// deadline (30 s), so a retried `Authorize` resolves a crashed claim before the order
/// gives up.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(10);

/// The default time between sweeps.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

/// Claims resolved per sweep at most (the rest wait for the next).
pub const BATCH: u32 = 100;

/// The idempotency key of the void that cancels a hold whose claim was released.
pub const ORPHAN_VOID_KEY: &str = "flotilla-reconcile-orphaned-hold";

/// How one pending claim was resolved (the `outcome` label of
/// `payments_reconciled_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The provider held the funds: recorded as authorized.
    Authorized,
    /// The provider declined: recorded as declined.
    Declined,
    /// The provider has no record: the claim was released.
    Released,
    /// Another caller resolved it first; nothing recorded by this one.
    AlreadyResolved,
    /// The provider could not be asked: left pending.
    Unreachable,
}

impl Outcome {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Authorized => "authorized",
            Self::Declined => "declined",
            Self::Released => "released",
            Self::AlreadyResolved => "already_resolved",
            Self::Unreachable => "unreachable",
        }
    }
}

/// What resolving a pending claim left.
#[derive(Debug)]
pub enum Resolved {
    /// The payment is authorized or declined (by this call or another).
    Settled(Box<Payment>),
    /// The claim is gone: the order has no payment, a retry starts afresh.
    Released,
    /// The provider could not be asked; the claim is still pending.
    Unreachable(ProviderUnavailable),
}

/// Whether the pending claim `p` is older than `stale_after` (an unreadable time counts
/// as stale: a claim nobody can date is one nobody is finishing).
pub fn is_stale(p: &Payment, stale_after: Duration) -> bool {
    humantime::parse_rfc3339(&p.created_at)
        .ok()
        .and_then(|created| SystemTime::now().duration_since(created).ok())
        .is_none_or(|age| age >= stale_after)
}

/// Records the provider's `answer` for the claim `id` if it is still pending. Returns
/// what the ledger now says and whether this call recorded it. If the claim was
/// released meanwhile, a hold in `answer` belongs to no payment and is voided here
/// (a void that fails is logged: the provider lets an uncaptured hold lapse).
pub async fn settle(
    payments: &Payments,
    id: &str,
    answer: Authorization,
) -> Result<(Resolved, bool), LedgerError> {
    let (status, reference, reason) = match &answer {
        Authorization::Approved(r) => (Status::Authorized, Some(r.clone()), None),
        Authorization::Declined(why) => (Status::Declined, None, Some(why.clone())),
    };
    match payments
        .ledger()
        .complete(id.to_owned(), status, reference, reason)
        .await?
    {
        Completed::Recorded(p) => Ok((Resolved::Settled(p), true)),
        Completed::Lost(Some(p)) => Ok((Resolved::Settled(p), false)),
        Completed::Lost(None) => {
            if let Authorization::Approved(reference) = &answer {
                match payments.provider().void(reference, ORPHAN_VOID_KEY).await {
                    Ok(()) => tracing::warn!(
                        payment_id = id,
                        "voided a hold whose pending claim had been released"
                    ),
                    Err(e) => tracing::error!(
                        payment_id = id,
                        error = %e,
                        "could not void a hold whose pending claim had been released"
                    ),
                }
            }
            Ok((Resolved::Released, false))
        }
    }
}

/// Resolves the pending claim `p` by asking the provider under its key (see the module
/// documentation), counting the outcome in `payments_reconciled_total`.
pub async fn resolve(payments: &Payments, p: &Payment) -> Result<(Outcome, Resolved), LedgerError> {
    let (outcome, resolved) = match payments.provider().lookup(&p.id).await {
        Err(e) => (Outcome::Unreachable, Resolved::Unreachable(e)),
        Ok(Lookup::Unknown) => {
            if payments.ledger().abandon(p.id.clone()).await? {
                (Outcome::Released, Resolved::Released)
            } else {
                match payments.ledger().get(p.id.clone()).await? {
                    Some(now) if now.status != Status::Pending => {
                        (Outcome::AlreadyResolved, Resolved::Settled(Box::new(now)))
                    }
                    _ => (Outcome::AlreadyResolved, Resolved::Released),
                }
            }
        }
        Ok(Lookup::Answered(answer)) => match settle(payments, &p.id, answer).await? {
            (Resolved::Settled(now), true) => {
                let outcome = if now.status == Status::Authorized {
                    Outcome::Authorized
                } else {
                    Outcome::Declined
                };
                (outcome, Resolved::Settled(now))
            }
            (resolved, _) => (Outcome::AlreadyResolved, resolved),
        },
    };
    tracing::info!(
        payment_id = %p.id,
        order_id = %p.order_id,
        outcome = outcome.as_str(),
        "reconciled a pending authorization"
    );
    metrics::counter!("payments_reconciled_total", "outcome" => outcome.as_str()).increment(1);
    Ok((outcome, resolved))
}

/// What one sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sweep {
    /// Claims recorded as authorized.
    pub authorized: u32,
    /// Claims recorded as declined.
    pub declined: u32,
    /// Claims released (the provider had no record).
    pub released: u32,
    /// Claims another caller resolved first.
    pub already_resolved: u32,
    /// Stale claims still pending (the provider could not be asked).
    pub left_pending: u32,
}

/// The reconciliation sweeper: resolves stale pending claims every interval.
#[derive(Clone)]
pub struct Reconciler {
    payments: Payments,
}

impl Reconciler {
    /// A sweeper over `payments` (its ledger, provider and stale age).
    pub fn new(payments: Payments) -> Self {
        Self { payments }
    }

    /// One sweep: up to [`BATCH`] claims older than the stale age, oldest first. The
    /// first that the provider cannot answer ends it (the provider is down: the rest
    /// wait for the next sweep). Sets the gauge `payments_pending_stale`.
    pub async fn sweep(&self) -> Result<Sweep, LedgerError> {
        let before = SystemTime::now()
            .checked_sub(self.payments.stale_after())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let before = humantime::format_rfc3339_millis(before).to_string();
        let stale = self.payments.ledger().stale_pending(before, BATCH).await?;
        let mut sweep = Sweep::default();
        for (i, p) in stale.iter().enumerate() {
            match resolve(&self.payments, p).await? {
                (_, Resolved::Unreachable(e)) => {
                    sweep.left_pending = u32::try_from(stale.len() - i).unwrap_or(u32::MAX);
                    tracing::warn!(
                        error = %e,
                        pending = sweep.left_pending,
                        "the provider cannot be asked; stale pending payments wait for the next sweep"
                    );
                    break;
                }
                (Outcome::Authorized, _) => sweep.authorized += 1,
                (Outcome::Declined, _) => sweep.declined += 1,
                (Outcome::Released, _) => sweep.released += 1,
                (Outcome::AlreadyResolved | Outcome::Unreachable, _) => sweep.already_resolved += 1,
            }
        }
        metrics::gauge!("payments_pending_stale").set(f64::from(sweep.left_pending));
        Ok(sweep)
    }

    /// Sweeps every `interval` for as long as the process runs (the first at once).
    pub async fn run(self, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.sweep().await {
                tracing::warn!(error = %e, "reconciling pending payments failed");
            }
        }
    }
}

#[cfg(test)]
mod tests;
