//! One conformance suite, run against every backend: SQLite always, MariaDB when a
//! server is reachable (`FLOTILLA_TEST_MYSQL`, default `mysql://root@127.0.0.1:3306`,
//! a fresh database per test). Without one the MariaDB half is skipped loudly, unless
//! `FLOTILLA_REQUIRE_INFRA=1` makes it fail.

use std::sync::Arc;

use super::*;
use crate::domain::{Card, Money, Operation, Status};
use crate::ledger::{AuthorizeInput, PaymentError, Payments};
use crate::provider::{SimulatedProvider, test_cards};

fn input(order: &str, number: &str, cents: i64) -> AuthorizeInput {
    AuthorizeInput {
        order_id: order.into(),
        user_id: "u-1".into(),
        amount: Money::parse(cents, "EUR").unwrap(),
        card: Card::parse(number, 12, 2099, "123", (2026, 1)).unwrap(),
        idempotency_key: format!("auth-{order}"),
    }
}

fn eur(cents: i64) -> Operation {
    Operation::Refund(Money::parse(cents, "EUR").unwrap())
}

/// The simulated provider's records in a SQLite file of their own.
async fn provider_in(dir: &std::path::Path) -> SimulatedProvider {
    let url = format!("sqlite://{}/provider.db", dir.display());
    SimulatedProvider::open(
        &url,
        "FLOTILLA_PAYMENTS__PROVIDER_STORE",
        Default::default(),
    )
    .await
    .unwrap()
}

/// Every rule of the ledger, through the operations the gRPC API runs.
async fn conformance(ledger: Arc<dyn Ledger>) {
    ledger.ping().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pay = Payments::new(ledger.clone(), Arc::new(provider_in(dir.path()).await));

    // Authorize once per order.
    let a = pay
        .authorize(input("o1", test_cards::APPROVE, 1000))
        .await
        .unwrap();
    assert_eq!(
        (a.status, a.card_last4.as_str()),
        (Status::Authorized, "4242")
    );
    let again = pay
        .authorize(input("o1", test_cards::APPROVE, 1000))
        .await
        .unwrap();
    assert_eq!(a, again);
    assert!(matches!(
        pay.authorize(input("o1", test_cards::APPROVE, 999)).await,
        Err(PaymentError::OrderMismatch(_))
    ));
    assert_eq!(ledger.get(a.id.clone()).await.unwrap().unwrap(), a);

    // Declines are recorded; provider errors are not, so a retry starts afresh.
    let d = pay
        .authorize(input("o2", test_cards::DECLINE, 1000))
        .await
        .unwrap();
    assert_eq!(
        (d.status, d.decline_reason.as_deref()),
        (Status::Declined, Some("card_declined"))
    );
    let f = pay
        .authorize(input("o3", test_cards::INSUFFICIENT_FUNDS, 10))
        .await
        .unwrap();
    assert_eq!(f.decline_reason.as_deref(), Some("insufficient_funds"));
    assert!(matches!(
        pay.authorize(input("o4", test_cards::PROVIDER_ERROR, 10))
            .await,
        Err(PaymentError::Provider(_))
    ));
    let retried = pay
        .authorize(input("o4", test_cards::APPROVE, 10))
        .await
        .unwrap();
    assert_eq!(retried.status, Status::Authorized);

    // Capture twice: one capture. Refunds once per key, up to the amount.
    let c1 = pay
        .operate(&a.id, "k-cap", Operation::Capture)
        .await
        .unwrap();
    let c2 = pay
        .operate(&a.id, "k-cap2", Operation::Capture)
        .await
        .unwrap();
    assert_eq!(c1, c2);
    assert_eq!(c1.status, Status::Captured);
    let r1 = pay.operate(&a.id, "k-r1", eur(300)).await.unwrap();
    let r1b = pay.operate(&a.id, "k-r1", eur(300)).await.unwrap();
    assert_eq!((r1.refunded_cents, r1b.refunded_cents), (300, 300));
    assert!(matches!(
        pay.operate(&a.id, "k-r2", eur(701)).await,
        Err(PaymentError::Refused(_))
    ));
    assert!(matches!(
        pay.operate(
            &a.id,
            "k-usd",
            Operation::Refund(Money::parse(5, "USD").unwrap())
        )
        .await,
        Err(PaymentError::Refused(_))
    ));
    let full = pay.operate(&a.id, "k-r3", eur(700)).await.unwrap();
    assert_eq!((full.status, full.refunded_cents), (Status::Refunded, 1000));
    assert!(matches!(
        pay.operate(&a.id, "k-void", Operation::Void).await,
        Err(PaymentError::Refused(_))
    ));

    // Void: only from authorized; capture after void refused.
    let v = pay
        .operate(&retried.id, "k-v", Operation::Void)
        .await
        .unwrap();
    assert_eq!(v.status, Status::Voided);
    assert_eq!(
        pay.operate(&retried.id, "k-v2", Operation::Void)
            .await
            .unwrap(),
        v
    );
    assert!(matches!(
        pay.operate(&retried.id, "k-c", Operation::Capture).await,
        Err(PaymentError::Refused(_))
    ));
    assert!(matches!(
        pay.operate(&d.id, "k-c", Operation::Capture).await,
        Err(PaymentError::Refused(_))
    ));
    assert!(matches!(
        pay.operate(
            "0190d1c4-0000-7000-8000-000000000000",
            "k",
            Operation::Capture
        )
        .await,
        Err(PaymentError::NotFound(_))
    ));

    // Racing refunds under distinct keys never refund more than was captured.
    let big = pay
        .authorize(input("o5", test_cards::APPROVE, 1000))
        .await
        .unwrap();
    pay.operate(&big.id, "cap", Operation::Capture)
        .await
        .unwrap();
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let pay = pay.clone();
            let id = big.id.clone();
            tokio::spawn(async move { pay.operate(&id, &format!("race-{i}"), eur(100)).await })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        if t.await.unwrap().is_ok() {
            ok += 1;
        }
    }
    // Each success refunded exactly once; losers were refused or told to retry.
    let end = ledger.get(big.id.clone()).await.unwrap().unwrap();
    assert_eq!(end.refunded_cents, 100 * ok, "{ok} refunds succeeded");
    assert!((1..=10).contains(&ok), "{ok}");
    assert_eq!(end.status == Status::Refunded, ok == 10);

    // Every change wrote its event in its own transaction, and nothing else did.
    let (outbox, _) = ledger.outbox();
    let rows = outbox.due(1000).await.unwrap();
    let count = |subject: &str| rows.iter().filter(|r| r.subject == subject).count() as i64;
    assert_eq!(
        count("payments.authorized"),
        3,
        "o1, o4 after its retry, o5"
    );
    assert_eq!(count("payments.declined"), 2);
    assert_eq!(
        count("payments.captured"),
        2,
        "a repeated capture publishes nothing"
    );
    assert_eq!(count("payments.voided"), 1);
    assert_eq!(
        count("payments.refunded"),
        2 + ok,
        "one per refund that happened"
    );
    assert_eq!(rows.len() as i64, 10 + ok);
    let first: kit_events::Event = serde_json::from_str(&rows[0].payload).unwrap();
    assert_eq!(first.data["orderId"], "o1");
    assert_eq!(first.source, "payments");

    // The admin listing: every payment once, in id order, with its captures.
    let lines = ledger.lines(None, 100).await.unwrap();
    assert_eq!(lines.iter().map(|l| l.captures).sum::<i64>(), 2);
    assert!(lines.windows(2).all(|w| w[0].id < w[1].id));
    let page = ledger.lines(None, 1).await.unwrap();
    let rest = ledger.lines(Some(page[0].id.clone()), 100).await.unwrap();
    assert_eq!(page.len() + rest.len(), lines.len());
}

#[tokio::test]
async fn sqlite_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/payments.db", dir.path().display());
    conformance(open(&url, "FLOTILLA_PAYMENTS__STORE").await.unwrap()).await;
}

#[tokio::test]
async fn mariadb_conformance() {
    use kit::store::testing::{Server, TestDatabase};
    let Some(db) = TestDatabase::create(Server::MySql).await else {
        return;
    };
    conformance(open(&db.url, "FLOTILLA_TEST_MYSQL").await.unwrap()).await;
    db.drop_database().await;
}

#[tokio::test]
async fn unknown_store_scheme_names_the_setting() {
    let err = open("postgres://x", "FLOTILLA_PAYMENTS__STORE")
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("FLOTILLA_PAYMENTS__STORE"), "{err}");
}
