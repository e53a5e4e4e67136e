//! The same suite against each backend: SQLite in a temporary directory, and a fresh
//! PostgreSQL database on the server the environment names (skipped loudly without
//! one, unless `FLOTILLA_REQUIRE_INFRA=1`).

use kit::store::testing::{Server, TestDatabase};
use kit_events::outbox::OutboxStore;
use saga::{SagaStatus, SagaStore, Transition};

use super::*;
use crate::domain::{OrderItem, saga_data, saga_definition};

fn order(user: &str) -> Order {
    let now = now_ms();
    Order {
        id: uuid::Uuid::now_v7().to_string(),
        user_id: user.to_owned(),
        items: vec![OrderItem {
            sku: "FLT-BOAT-001".into(),
            quantity: 2,
            unit_price_cents: 1_250,
        }],
        total_cents: 2_500,
        currency: "EUR".into(),
        status: OrderStatus::Pending,
        reason: None,
        created_at: rfc3339_ms(now),
        updated_at: rfc3339_ms(now),
    }
}

fn saga_of(o: &Order) -> SagaState {
    let def = saga_definition(Duration::from_secs(30));
    SagaState::new(&def, &o.id, saga_data(o), now_ms())
}

fn record(user: &str, key: &str, body: &str) -> IdempotencyRecord {
    IdempotencyRecord {
        user_id: user.into(),
        key: key.into(),
        request_hash: "h1".into(),
        status: 202,
        body: body.into(),
    }
}

/// The next saved version of `s`, with `status`.
fn next(s: &SagaState, status: SagaStatus) -> SagaState {
    let mut n = s.clone();
    n.version += 1;
    n.status = status;
    n.updated_ms = now_ms();
    n
}

async fn outbox_subjects(store: &OrderStore) -> Vec<String> {
    let rows = match store.pool() {
        Pool::Sqlite(p) => p.due(100).await,
        Pool::Postgres(p) => p.due(100).await,
    };
    rows.unwrap().into_iter().map(|r| r.subject).collect()
}

async fn suite(store: OrderStore) {
    store.ping().await.unwrap();

    // Create, read back, list newest first with a cursor.
    let a = order("u1");
    let sa = saga_of(&a);
    assert_eq!(store.create(&a, &sa, None).await.unwrap(), Created::New);
    let b = order("u1");
    store.create(&b, &saga_of(&b), None).await.unwrap();
    let other = order("u2");
    store.create(&other, &saga_of(&other), None).await.unwrap();
    let (got, state) = store.get(&a.id).await.unwrap().unwrap();
    assert_eq!(got, a);
    assert_eq!(state, sa);
    assert!(store.get("no-such-order").await.unwrap().is_none());
    let listed: Vec<String> = store
        .list("u1", 10, None)
        .await
        .unwrap()
        .into_iter()
        .map(|(o, _)| o.id)
        .collect();
    assert_eq!(
        listed,
        vec![b.id.clone(), a.id.clone()],
        "newest first, u1 only"
    );
    let page2 = store.list("u1", 10, Some(&b.id)).await.unwrap();
    assert_eq!(page2.len(), 1);
    assert_eq!(page2[0].0.id, a.id);
    assert_eq!(store.list("u1", 1, None).await.unwrap().len(), 1);
    assert_eq!(
        outbox_subjects(&store).await,
        vec!["orders.created"; 3],
        "one orders.created per order, in the same transaction"
    );

    // An idempotency key stores its first answer; a repeat stores nothing.
    let c = order("u3");
    let first = store
        .create(
            &c,
            &saga_of(&c),
            Some(record("u3", "k1", "{\"order_id\":1}")),
        )
        .await
        .unwrap();
    assert_eq!(first, Created::New);
    let again = order("u3");
    let Created::Existing(answer) = store
        .create(&again, &saga_of(&again), Some(record("u3", "k1", "{}")))
        .await
        .unwrap()
    else {
        panic!("the repeat must find the first answer");
    };
    assert_eq!(answer.body, "{\"order_id\":1}");
    assert_eq!(answer.status, 202);
    assert!(store.get(&again.id).await.unwrap().is_none());
    assert_eq!(store.answer("u3", "k1").await.unwrap(), Some(answer));
    assert_eq!(
        store.answer("u4", "k1").await.unwrap(),
        None,
        "keys are per user"
    );

    // Saves are compare-and-set on the version.
    let running = next(&sa, SagaStatus::Running);
    let step = Transition::StepStarted {
        step: steps::RESERVE_STOCK.into(),
        attempt: 1,
    };
    assert!(store.save(&running, &step).await.unwrap());
    assert!(
        !store.save(&running, &step).await.unwrap(),
        "a second writer of the same version loses"
    );
    assert_eq!(store.load(&a.id).await.unwrap(), Some(running.clone()));
    let in_flight = store.in_flight().await.unwrap();
    assert!(in_flight.contains(&a.id));

    // Confirming rewrites the document and emits orders.confirmed.
    let confirmed = next(&running, SagaStatus::Completed);
    let done = Transition::StepDone {
        step: steps::CONFIRM_ORDER.into(),
    };
    assert!(store.save(&confirmed, &done).await.unwrap());
    let (doc, _) = store.get(&a.id).await.unwrap().unwrap();
    assert_eq!(doc.status, OrderStatus::Confirmed);
    assert_eq!(doc.items, a.items, "the rest of the document is kept");
    assert!(!store.in_flight().await.unwrap().contains(&a.id));

    // Aborting cancels with the reason and emits orders.cancelled.
    let sb = store.load(&b.id).await.unwrap().unwrap();
    let aborted = next(&sb, SagaStatus::Compensated);
    let why = Transition::Aborted {
        reason: "card declined".into(),
    };
    assert!(store.save(&aborted, &why).await.unwrap());
    let (doc, _) = store.get(&b.id).await.unwrap().unwrap();
    assert_eq!(doc.status, OrderStatus::Cancelled);
    assert_eq!(doc.reason.as_deref(), Some("card declined"));
    let subjects = outbox_subjects(&store).await;
    assert_eq!(
        &subjects[subjects.len() - 2..],
        ["orders.confirmed", "orders.cancelled"]
    );

    // Operators see the in-flight sagas first, then the ended ones, newest first.
    let recent: Vec<(String, SagaStatus)> = store
        .recent_sagas(10)
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.id, s.status))
        .collect();
    assert_eq!(recent.len(), 4, "{recent:?}");
    assert!(
        recent[..2]
            .iter()
            .all(|(_, s)| matches!(s, SagaStatus::Running)),
        "{recent:?}"
    );
    assert_eq!(
        recent[2..].to_vec(),
        vec![
            (b.id.clone(), SagaStatus::Compensated),
            (a.id.clone(), SagaStatus::Completed)
        ],
        "ended: the latest update first"
    );
    assert_eq!(store.recent_sagas(1).await.unwrap().len(), 1);

    // Old answers are purged; fresh ones kept.
    assert_eq!(
        store
            .purge_answers(Duration::from_secs(3600))
            .await
            .unwrap(),
        0
    );
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(store.purge_answers(Duration::ZERO).await.unwrap(), 1);
    assert_eq!(store.answer("u3", "k1").await.unwrap(), None);
}

#[tokio::test]
async fn sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("orders.db").display());
    suite(OrderStore::open(&url, "orders.store").await.unwrap()).await;
}

#[tokio::test]
async fn postgres() {
    let Some(db) = TestDatabase::create(Server::Postgres).await else {
        return;
    };
    suite(OrderStore::open(&db.url, "orders.store").await.unwrap()).await;
    db.drop_database().await;
}

#[tokio::test]
async fn an_unknown_scheme_is_refused_with_the_setting_named() {
    let e = OrderStore::open("mysql://root@127.0.0.1/orders", "orders.store")
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("orders.store") && msg.contains("postgres://"),
        "{msg}"
    );
}
