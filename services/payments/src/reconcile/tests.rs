//! Reconciliation against real stores: SQLite always, MariaDB when a server is reachable
//! (the ledger and the simulated provider's records each in a fresh database; skipped
//! loudly without one unless `FLOTILLA_REQUIRE_INFRA=1`). A crash is a dropped task and
//! stores opened again from the same URLs: what the next process would find.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kit::discovery::BoxFuture;
use tokio::sync::Notify;

use super::*;
use crate::domain::{Card, Money};
use crate::ledger::{AuthorizeInput, PaymentError};
use crate::provider::{PaymentProvider, SimulatedAttempt, SimulatedProvider, test_cards};
use crate::store::{self, Begin, Ledger};

/// Where a test's ledger and provider records live; opening them again is a restart.
struct Stores {
    ledger_url: String,
    provider_url: String,
}

impl Stores {
    async fn ledger(&self) -> Arc<dyn Ledger> {
        store::open(&self.ledger_url, "FLOTILLA_PAYMENTS__STORE")
            .await
            .unwrap()
    }

    async fn provider(&self) -> Arc<SimulatedProvider> {
        Arc::new(
            SimulatedProvider::open(
                &self.provider_url,
                "FLOTILLA_PAYMENTS__PROVIDER_STORE",
                Duration::ZERO,
            )
            .await
            .unwrap(),
        )
    }
}

fn input(order: &str, number: &str) -> AuthorizeInput {
    AuthorizeInput {
        order_id: order.into(),
        user_id: "u-1".into(),
        amount: Money::parse(1500, "EUR").unwrap(),
        card: Card::parse(number, 12, 2099, "123", (2026, 1)).unwrap(),
        idempotency_key: format!("auth-{order}"),
    }
}

/// A provider with faults: down (every call fails), a request that waits in transit
/// until let through, or a process that dies right after the provider answered.
#[derive(Default)]
struct Faulty {
    inner: Option<Arc<SimulatedProvider>>,
    down: AtomicBool,
    /// `(entered, let_through)`: told when `authorize` is entered, waits for the other.
    in_transit: Option<(Arc<Notify>, Arc<Notify>)>,
    /// Told once the provider answered; the call then never returns.
    dies_after_answer: Option<Arc<Notify>>,
}

impl Faulty {
    fn over(inner: &Arc<SimulatedProvider>) -> Self {
        Self {
            inner: Some(inner.clone()),
            ..Self::default()
        }
    }

    fn inner(&self) -> Result<&SimulatedProvider, ProviderUnavailable> {
        if self.down.load(Ordering::SeqCst) {
            return Err(ProviderUnavailable("connection refused".into()));
        }
        Ok(self.inner.as_deref().expect("a provider behind the faults"))
    }
}

impl PaymentProvider for Faulty {
    fn authorize<'a>(
        &'a self,
        key: &'a str,
        card: &'a Card,
        amount: &'a Money,
    ) -> BoxFuture<'a, Result<Authorization, ProviderUnavailable>> {
        Box::pin(async move {
            if let Some((entered, let_through)) = &self.in_transit {
                entered.notify_one();
                let_through.notified().await;
            }
            let answer = self.inner()?.authorize(key, card, amount).await;
            if let Some(answered) = &self.dies_after_answer {
                answered.notify_one();
                return std::future::pending().await;
            }
            answer
        })
    }

    fn lookup<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Lookup, ProviderUnavailable>> {
        Box::pin(async move { self.inner()?.lookup(key).await })
    }

    fn capture<'a>(
        &'a self,
        reference: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderUnavailable>> {
        Box::pin(async move { self.inner()?.capture(reference, key).await })
    }

    fn void<'a>(
        &'a self,
        reference: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderUnavailable>> {
        Box::pin(async move { self.inner()?.void(reference, key).await })
    }

    fn refund<'a>(
        &'a self,
        reference: &'a str,
        key: &'a str,
        amount: &'a Money,
    ) -> BoxFuture<'a, Result<(), ProviderUnavailable>> {
        Box::pin(async move { self.inner()?.refund(reference, key, amount).await })
    }
}

/// Claims a payment for `order` as `authorize` does before calling the provider, and
/// returns its id: the state a process that died at that point leaves.
async fn claim(ledger: &Arc<dyn Ledger>, order: &str) -> String {
    let input = input(order, test_cards::APPROVE);
    let p = input.claim();
    let id = p.id.clone();
    assert_eq!(
        ledger.begin(p, input.idempotency_key).await.unwrap(),
        Begin::Started
    );
    id
}

/// Claims and places the hold, then "dies": the provider holds funds the ledger has
/// not recorded.
async fn claim_and_hold(
    ledger: &Arc<dyn Ledger>,
    sim: &SimulatedProvider,
    order: &str,
    number: &str,
) -> String {
    let id = claim(ledger, order).await;
    let i = input(order, number);
    sim.authorize(&id, &i.card, &i.amount).await.unwrap();
    id
}

async fn attempts_for(sim: &SimulatedProvider, key: &str) -> Vec<SimulatedAttempt> {
    let all = sim.attempts().await.unwrap();
    all.into_iter()
        .filter(|a| a.idempotency_key == key)
        .collect()
}

/// Events in the outbox with `subject` for orders whose id starts with `prefix`.
async fn events(ledger: &Arc<dyn Ledger>, subject: &str, prefix: &str) -> usize {
    let (outbox, _) = ledger.outbox();
    outbox
        .due(10_000)
        .await
        .unwrap()
        .iter()
        .filter(|r| r.subject == subject)
        .filter(|r| {
            let e: kit_events::Event = serde_json::from_str(&r.payload).unwrap();
            e.data["orderId"].as_str().unwrap().starts_with(prefix)
        })
        .count()
}

fn immediate(ledger: &Arc<dyn Ledger>, provider: Arc<dyn PaymentProvider>) -> Payments {
    Payments::new(ledger.clone(), provider).with_stale_after(Duration::ZERO)
}

/// The process dies after the provider placed the hold and before the ledger heard of
/// it; the next process's sweep records the hold, once.
async fn a_crash_after_the_hold_is_resolved_by_a_sweep(stores: &Stores) {
    let (ledger, sim) = (stores.ledger().await, stores.provider().await);
    let holds_before = sim.attempts().await.unwrap().len();
    let answered = Arc::new(Notify::new());
    let dying = Payments::new(
        ledger.clone(),
        Arc::new(Faulty {
            dies_after_answer: Some(answered.clone()),
            ..Faulty::over(&sim)
        }),
    );
    let task =
        tokio::spawn(async move { dying.authorize(input("crash-1", test_cards::APPROVE)).await });
    answered.notified().await;
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    drop((ledger, sim));

    // The next process: the claim is there, the hold is at the provider.
    let (ledger, sim) = (stores.ledger().await, stores.provider().await);
    let young =
        Payments::new(ledger.clone(), sim.clone()).with_stale_after(Duration::from_secs(3600));
    assert!(matches!(
        young.authorize(input("crash-1", test_cards::APPROVE)).await,
        Err(PaymentError::InProgress(_))
    ));
    assert_eq!(
        Reconciler::new(young).sweep().await.unwrap(),
        Sweep::default(),
        "a claim younger than the stale age is left to its caller"
    );
    let payments = immediate(&ledger, sim.clone());
    let sweep = Reconciler::new(payments.clone()).sweep().await.unwrap();
    assert_eq!(
        sweep,
        Sweep {
            authorized: 1,
            ..Sweep::default()
        }
    );
    let lines = ledger.lines(None, 1000).await.unwrap();
    let line = lines.iter().find(|l| l.order_id == "crash-1").unwrap();
    let p = ledger.get(line.id.clone()).await.unwrap().unwrap();
    let hold = attempts_for(&sim, &p.id).await;
    assert_eq!(hold.len(), 1);
    assert_eq!(p.status, Status::Authorized);
    assert_eq!(p.provider_ref, hold[0].reference);
    assert_eq!(hold[0].state, "held");
    assert_eq!(events(&ledger, "payments.authorized", "crash-1").await, 1);

    // The saga's retry gets the same payment; nothing new at the provider.
    let retried = payments
        .authorize(input("crash-1", test_cards::APPROVE))
        .await
        .unwrap();
    assert_eq!(retried, p);
    assert_eq!(sim.attempts().await.unwrap().len(), holds_before + 1);
    assert_eq!(
        Reconciler::new(payments).sweep().await.unwrap(),
        Sweep::default()
    );
}

/// The process dies between the claim and the provider call: the provider has no
/// record, the claim is released, and the retry authorizes afresh. A decline the ledger
/// never heard of is recorded as one.
async fn a_claim_the_provider_never_saw_is_released(stores: &Stores) {
    let (ledger, sim) = (stores.ledger().await, stores.provider().await);
    let lost = claim(&ledger, "lost-1").await;
    let declined = claim_and_hold(&ledger, &sim, "lost-2", test_cards::DECLINE).await;
    let payments = immediate(&ledger, sim.clone());
    let sweep = Reconciler::new(payments.clone()).sweep().await.unwrap();
    assert_eq!(
        sweep,
        Sweep {
            declined: 1,
            released: 1,
            ..Sweep::default()
        }
    );
    assert_eq!(ledger.get(lost.clone()).await.unwrap(), None);
    assert_eq!(sim.lookup(&lost).await.unwrap(), Lookup::Unknown);
    let d = ledger.get(declined).await.unwrap().unwrap();
    assert_eq!(
        (d.status, d.decline_reason.as_deref()),
        (Status::Declined, Some("card_declined"))
    );
    assert_eq!(events(&ledger, "payments.declined", "lost-2").await, 1);

    let retried = payments
        .authorize(input("lost-1", test_cards::APPROVE))
        .await
        .unwrap();
    assert_ne!(retried.id, lost);
    assert_eq!(retried.status, Status::Authorized);
    assert_eq!(attempts_for(&sim, &retried.id).await.len(), 1);
    assert_eq!(
        payments
            .authorize(input("lost-1", test_cards::APPROVE))
            .await
            .unwrap(),
        retried
    );
}

/// While the provider cannot be asked, stale claims stay pending (and a retry is told
/// to come back); once it answers, the next sweep resolves them.
async fn an_unreachable_provider_leaves_claims_pending(stores: &Stores) {
    let (ledger, sim) = (stores.ledger().await, stores.provider().await);
    let first = claim_and_hold(&ledger, &sim, "down-1", test_cards::APPROVE).await;
    let second = claim(&ledger, "down-2").await;
    let faulty = Arc::new(Faulty::over(&sim));
    faulty.down.store(true, Ordering::SeqCst);
    let payments = immediate(&ledger, faulty.clone());
    let reconciler = Reconciler::new(payments.clone());
    assert_eq!(
        reconciler.sweep().await.unwrap(),
        Sweep {
            left_pending: 2,
            ..Sweep::default()
        }
    );
    for id in [&first, &second] {
        let p = ledger.get(id.clone()).await.unwrap().unwrap();
        assert_eq!(p.status, Status::Pending);
    }
    assert!(matches!(
        payments
            .authorize(input("down-1", test_cards::APPROVE))
            .await,
        Err(PaymentError::Provider(_))
    ));
    let metrics = kit::telemetry::metrics::render();
    assert!(metrics.contains("payments_pending_stale"), "{metrics}");
    assert!(
        metrics.contains("payments_reconciled_total{outcome=\"unreachable\"}"),
        "{metrics}"
    );

    faulty.down.store(false, Ordering::SeqCst);
    assert_eq!(
        reconciler.sweep().await.unwrap(),
        Sweep {
            authorized: 1,
            released: 1,
            ..Sweep::default()
        }
    );
    let p = payments
        .authorize(input("down-1", test_cards::APPROVE))
        .await
        .unwrap();
    assert_eq!(
        (p.id.as_str(), p.status),
        (first.as_str(), Status::Authorized)
    );
}

/// Two instances sweeping the same ledger over ten crashed authorizations record each
/// once; then two sweepers and the saga's retries all at once, over ten more: one
/// outcome and one event per payment.
async fn concurrent_resolvers_record_one_outcome(stores: &Stores) {
    let (ledger, sim) = (stores.ledger().await, stores.provider().await);
    let (a, b) = (stores.ledger().await, stores.ledger().await);
    let (a, b) = (immediate(&a, sim.clone()), immediate(&b, sim.clone()));
    let (ra, rb) = (Reconciler::new(a.clone()), Reconciler::new(b.clone()));
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(claim_and_hold(&ledger, &sim, &format!("race-{i}"), test_cards::APPROVE).await);
    }
    let (sa, sb) = tokio::join!(ra.sweep(), rb.sweep());
    let (sa, sb) = (sa.unwrap(), sb.unwrap());
    assert_eq!(sa.authorized + sb.authorized, 10, "{sa:?} {sb:?}");
    assert_eq!(sa.left_pending + sb.left_pending, 0);
    assert_eq!(events(&ledger, "payments.authorized", "race-").await, 10);

    for i in 10..20 {
        ids.push(claim_and_hold(&ledger, &sim, &format!("race-{i}"), test_cards::APPROVE).await);
    }
    let retries: Vec<_> = (10..20)
        .map(|i| {
            let payments = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                payments
                    .authorize(input(&format!("race-{i}"), test_cards::APPROVE))
                    .await
            })
        })
        .collect();
    let (sa, sb) = tokio::join!(ra.sweep(), rb.sweep());
    let (sa, sb) = (sa.unwrap(), sb.unwrap());
    assert!(sa.authorized + sb.authorized <= 10, "{sa:?} {sb:?}");
    assert_eq!(sa.left_pending + sb.left_pending, 0);
    for (i, retry) in retries.into_iter().enumerate() {
        let p = retry.await.unwrap().unwrap();
        assert_eq!(
            (p.id.as_str(), p.status),
            (ids[10 + i].as_str(), Status::Authorized)
        );
    }
    for id in &ids {
        let p = ledger.get(id.clone()).await.unwrap().unwrap();
        let hold = attempts_for(&sim, id).await;
        assert_eq!(hold.len(), 1);
        assert_eq!(
            (p.status, &p.provider_ref),
            (Status::Authorized, &hold[0].reference)
        );
    }
    assert_eq!(events(&ledger, "payments.authorized", "race-").await, 20);
}

/// A request still in transit when a sweeper released its claim places its hold late:
/// the caller finds the claim gone and voids the hold; the retry authorizes afresh.
async fn a_hold_placed_after_its_claim_was_released_is_voided(stores: &Stores) {
    let (ledger, sim) = (stores.ledger().await, stores.provider().await);
    let (entered, let_through) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let slow = immediate(
        &ledger,
        Arc::new(Faulty {
            in_transit: Some((entered.clone(), let_through.clone())),
            ..Faulty::over(&sim)
        }),
    );
    let call =
        tokio::spawn(async move { slow.authorize(input("late-1", test_cards::APPROVE)).await });
    entered.notified().await;
    let payments = immediate(&ledger, sim.clone());
    let sweep = Reconciler::new(payments.clone()).sweep().await.unwrap();
    assert_eq!(sweep.released, 1, "{sweep:?}");
    let_through.notify_one();
    assert!(matches!(
        call.await.unwrap(),
        Err(PaymentError::InProgress(_))
    ));
    let orphan: Vec<_> = sim
        .attempts()
        .await
        .unwrap()
        .into_iter()
        .filter(|a| a.state == "voided")
        .collect();
    assert_eq!(orphan.len(), 1, "{orphan:?}");
    assert_eq!(
        ledger.get(orphan[0].idempotency_key.clone()).await.unwrap(),
        None
    );

    let p = payments
        .authorize(input("late-1", test_cards::APPROVE))
        .await
        .unwrap();
    assert_eq!(p.status, Status::Authorized);
    assert_eq!(attempts_for(&sim, &p.id).await[0].state, "held");
    assert_eq!(events(&ledger, "payments.authorized", "late-1").await, 1);
}

async fn suite(stores: Stores) {
    a_crash_after_the_hold_is_resolved_by_a_sweep(&stores).await;
    a_claim_the_provider_never_saw_is_released(&stores).await;
    an_unreachable_provider_leaves_claims_pending(&stores).await;
    concurrent_resolvers_record_one_outcome(&stores).await;
    a_hold_placed_after_its_claim_was_released_is_voided(&stores).await;
}

#[tokio::test]
async fn sqlite_reconciliation() {
    kit::telemetry::metrics::install_recorder();
    let dir = tempfile::tempdir().unwrap();
    suite(Stores {
        ledger_url: format!("sqlite://{}/payments.db", dir.path().display()),
        provider_url: format!("sqlite://{}/provider.db", dir.path().display()),
    })
    .await;
}

#[tokio::test]
async fn mariadb_reconciliation() {
    use kit::store::testing::{Server, TestDatabase};
    kit::telemetry::metrics::install_recorder();
    let Some(ledger) = TestDatabase::create(Server::MySql).await else {
        return;
    };
    let Some(provider) = TestDatabase::create(Server::MySql).await else {
        return;
    };
    suite(Stores {
        ledger_url: ledger.url.clone(),
        provider_url: provider.url.clone(),
    })
    .await;
    ledger.drop_database().await;
    provider.drop_database().await;
}

#[test]
fn a_claim_is_stale_once_older_than_the_stale_age() {
    let mut p = input("o", test_cards::APPROVE).claim();
    assert!(!is_stale(&p, Duration::from_secs(60)));
    assert!(is_stale(&p, Duration::ZERO));
    p.created_at =
        humantime::format_rfc3339_millis(SystemTime::now() - Duration::from_secs(61)).to_string();
    assert!(is_stale(&p, Duration::from_secs(60)));
    p.created_at = "not a time".into();
    assert!(is_stale(&p, Duration::from_secs(60)));
}
