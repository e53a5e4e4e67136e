//! One conformance suite, run against every backend: SQLite always, Redis when a server
//! is reachable (`FLOTILLA_TEST_REDIS`, default `redis://127.0.0.1:6379`). Without one
//! the Redis half is skipped loudly, unless `FLOTILLA_REQUIRE_INFRA=1` makes it fail.
//! Redis keys stay under `flotilla:inventory:test:<random>:`, so the suite also runs as
//! the service's ACL user (`redis://flotilla_inventory:…@…`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kit_events::outbox::{Relay, RelayConfig};
use kit_events::{BusError, Event, EventBus, Group, Published, Subscriber};
use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::domain::{ReservationStatus, demo_catalog, normalize_request};

fn product(sku: &str, stock: i64) -> Product {
    Product {
        sku: Sku::parse(sku).unwrap(),
        name: format!("name {sku}"),
        description: "d".into(),
        price_cents: 1234,
        currency: "EUR".into(),
        stock,
        reserved: 0,
        sold: 0,
    }
}

fn lines(items: &[(&str, i64)]) -> Vec<Line> {
    normalize_request(
        "check",
        items.iter().map(|(s, q)| ((*s).to_owned(), *q)).collect(),
    )
    .unwrap()
}

async fn stock_of(store: &dyn CatalogStore, sku: &str) -> (i64, i64, i64) {
    let p = store.get(Sku::parse(sku).unwrap()).await.unwrap().unwrap();
    (p.available(), p.reserved, p.sold)
}

const FAR: i64 = i64::MAX / 2;

/// Products, stock administration and every reservation rule, on any backend.
async fn reservation_conformance(store: Arc<dyn CatalogStore>) {
    let s = store.as_ref();
    s.create(product("T-A", 5)).await.unwrap();
    s.create(product("T-B", 1)).await.unwrap();
    assert!(matches!(
        s.create(product("T-A", 9)).await,
        Err(CatalogError::Exists(_))
    ));
    assert!(matches!(
        s.set_stock(Sku::parse("T-NONE").unwrap(), 3).await,
        Err(CatalogError::NotFound(_))
    ));

    // All or nothing: B lacks stock, so A is not held either.
    let err = s
        .reserve("o-all".into(), lines(&[("T-A", 2), ("T-B", 2)]), FAR)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        ReservationError::Insufficient(Sku::parse("T-B").unwrap())
    );
    assert_eq!(stock_of(s, "T-A").await, (5, 0, 0));
    let err = s
        .reserve("o-unk".into(), lines(&[("T-A", 1), ("T-NONE", 1)]), FAR)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        ReservationError::UnknownSku(Sku::parse("T-NONE").unwrap())
    );
    assert_eq!(stock_of(s, "T-A").await, (5, 0, 0));

    // Reserve is idempotent by order id.
    let order = lines(&[("T-A", 2), ("T-B", 1)]);
    let r1 = s.reserve("o1".into(), order.clone(), FAR).await.unwrap();
    let r2 = s.reserve("o1".into(), order.clone(), FAR).await.unwrap();
    assert_eq!(r1, r2);
    assert_eq!(r1.status, ReservationStatus::Reserved);
    assert_eq!(stock_of(s, "T-A").await, (3, 2, 0));
    assert_eq!(
        s.reserve("o1".into(), lines(&[("T-A", 1)]), FAR).await,
        Err(ReservationError::Mismatch("o1".into()))
    );
    assert!(matches!(
        s.set_stock(Sku::parse("T-A").unwrap(), 1).await,
        Err(CatalogError::BelowReserved { reserved: 2, .. })
    ));

    // Commit sells; repeating it is a no-op; releasing it is refused.
    let c1 = s
        .finish("o1".into(), Action::Commit, 0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c1.status, ReservationStatus::Committed);
    let c2 = s
        .finish("o1".into(), Action::Commit, 0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c1, c2);
    assert_eq!(stock_of(s, "T-A").await, (3, 0, 2));
    assert_eq!(stock_of(s, "T-B").await, (0, 0, 1));
    assert_eq!(
        s.finish("o1".into(), Action::Release, 0).await,
        Err(ReservationError::Committed("o1".into()))
    );
    assert_eq!(
        s.finish("nobody".into(), Action::Commit, 0).await,
        Err(ReservationError::NotFound("nobody".into()))
    );

    // Release returns the stock; repeating it is a no-op; committing it is refused.
    s.reserve("o2".into(), lines(&[("T-A", 3)]), FAR)
        .await
        .unwrap();
    assert_eq!(stock_of(s, "T-A").await, (0, 3, 2));
    let rel = s
        .finish("o2".into(), Action::Release, 0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rel.status, ReservationStatus::Released);
    assert_eq!(
        s.finish("o2".into(), Action::Release, 0)
            .await
            .unwrap()
            .unwrap(),
        rel
    );
    assert_eq!(stock_of(s, "T-A").await, (3, 0, 2));
    assert!(matches!(
        s.finish("o2".into(), Action::Commit, 0).await,
        Err(ReservationError::NotHeld {
            status: ReservationStatus::Released,
            ..
        })
    ));

    // A release that arrives before its reserve leaves the late reserve holding nothing.
    let t = s
        .finish("o3".into(), Action::Release, 0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(t.status, ReservationStatus::Released);
    let late = s
        .reserve("o3".into(), lines(&[("T-A", 1)]), FAR)
        .await
        .unwrap();
    assert_eq!(late.status, ReservationStatus::Released);
    assert_eq!(stock_of(s, "T-A").await, (3, 0, 2));

    // Expiry returns the stock, through the sweeper or at a late commit.
    s.reserve("o4".into(), lines(&[("T-A", 1)]), 1_000)
        .await
        .unwrap();
    s.reserve("o5".into(), lines(&[("T-A", 1)]), 1_000)
        .await
        .unwrap();
    assert_eq!(stock_of(s, "T-A").await, (1, 2, 2));
    assert!(matches!(
        s.finish("o4".into(), Action::Commit, 1_000).await,
        Err(ReservationError::NotHeld {
            status: ReservationStatus::Expired,
            ..
        })
    ));
    assert_eq!(s.due(999, 10).await.unwrap(), Vec::<String>::new());
    assert_eq!(s.due(2_000, 10).await.unwrap(), vec!["o5".to_owned()]);
    assert_eq!(expire_due(s, 2_000).await.unwrap(), 1);
    assert_eq!(
        s.reservation("o5".into()).await.unwrap().unwrap().status,
        ReservationStatus::Expired
    );
    assert_eq!(stock_of(s, "T-A").await, (3, 0, 2));

    // Stock administration.
    let p = s.set_stock(Sku::parse("T-A").unwrap(), 10).await.unwrap();
    assert_eq!((p.available(), p.sold), (10, 2));
}

/// 50 clients race for 10 units: exactly 10 are held, the rest refused.
async fn no_overselling(store: Arc<dyn CatalogStore>) {
    store.create(product("T-HOT", 10)).await.unwrap();
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let s = store.clone();
            tokio::spawn(async move {
                s.reserve(format!("race-{i}"), lines(&[("T-HOT", 1)]), FAR)
                    .await
            })
        })
        .collect();
    let mut won = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => won += 1,
            Err(ReservationError::Insufficient(_)) => {}
            Err(e) => panic!("unexpected: {e}"),
        }
    }
    assert_eq!(won, 10);
    assert_eq!(stock_of(store.as_ref(), "T-HOT").await, (0, 10, 0));
}

/// One step of a random reservation history.
#[derive(Debug, Clone)]
enum Op {
    Reserve(u8, Vec<(u8, i64)>),
    Commit(u8),
    Release(u8),
    Expire(i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..6, prop::collection::vec((0u8..3, 1i64..6), 1..3))
            .prop_map(|(o, l)| Op::Reserve(o, l)),
        (0u8..6).prop_map(Op::Commit),
        (0u8..6).prop_map(Op::Release),
        (0i64..4).prop_map(Op::Expire),
    ]
}

/// Stock conservation: whatever happens, `available + reserved + sold` of every
/// product stays what it started at, and nothing goes negative.
async fn conservation(store: Arc<dyn CatalogStore>, tag: &str, ops: Vec<Op>) {
    let tag = tag.to_uppercase();
    let skus: Vec<String> = (0..3).map(|i| format!("C-{tag}-{i}")).collect();
    for (i, sku) in skus.iter().enumerate() {
        store.create(product(sku, 4 + i as i64 * 3)).await.unwrap();
    }
    let totals = |skus: Vec<String>| {
        let store = store.clone();
        async move {
            let mut v = Vec::new();
            for sku in &skus {
                let (a, r, s) = stock_of(store.as_ref(), sku).await;
                assert!(a >= 0 && r >= 0 && s >= 0);
                v.push(a + r + s);
            }
            v
        }
    };
    let before = totals(skus.clone()).await;
    for op in ops {
        let order = |o: u8| format!("{tag}-order-{o}");
        let _ = match op {
            Op::Reserve(o, l) => {
                // Expiry times 1..=3 let Expire(t) catch some reservations and not others.
                let l: Vec<(String, i64)> = l
                    .iter()
                    .map(|(i, q)| (skus[*i as usize].clone(), *q))
                    .collect();
                let lines = normalize_request("o", l).unwrap();
                store
                    .reserve(order(o), lines, 1 + i64::from(o % 3))
                    .await
                    .map(|_| ())
            }
            Op::Commit(o) => store.finish(order(o), Action::Commit, 0).await.map(|_| ()),
            Op::Release(o) => store.finish(order(o), Action::Release, 0).await.map(|_| ()),
            Op::Expire(t) => expire_due(store.as_ref(), t).await.map(|_| ()),
        };
        assert_eq!(totals(skus.clone()).await, before);
    }
}

/// The bus the tests' relays publish to: it records every publish and fails while down.
#[derive(Debug, Default)]
struct Recorder {
    published: Mutex<Vec<(String, Event)>>,
    down: AtomicBool,
}

impl Recorder {
    fn ids(&self) -> Vec<String> {
        let published = self.published.lock().unwrap();
        published.iter().map(|(_, e)| e.id.clone()).collect()
    }
}

impl EventBus for Recorder {
    fn publish<'a>(
        &'a self,
        subject: &'a str,
        event: &'a Event,
    ) -> kit::discovery::BoxFuture<'a, Result<Published, BusError>> {
        Box::pin(async move {
            if self.down.load(Ordering::SeqCst) {
                return Err(BusError::Unavailable("the test bus is down".into()));
            }
            let mut published = self.published.lock().unwrap();
            published.push((subject.to_owned(), event.clone()));
            Ok(Published { duplicate: false })
        })
    }

    fn subscribe<'a>(
        &'a self,
        _: &'a Group,
    ) -> kit::discovery::BoxFuture<'a, Result<Subscriber, BusError>> {
        Box::pin(async { Err(BusError::Unavailable("publish only".into())) })
    }
}

fn relay_config() -> RelayConfig {
    RelayConfig {
        min_backoff: Duration::from_millis(50),
        ..RelayConfig::default()
    }
}

/// Every event inventory writes for one history, in order, as `(subject, event)` with
/// what differs per run (`id`, `time`, `traceparent`) taken out.
fn expected_events() -> Vec<(String, Value)> {
    let event = |subject: &str, data: Value| {
        let e = json!({
            "specversion": "1.0",
            "source": "inventory",
            "type": subject,
            "datacontenttype": "application/json",
            "data": data,
        });
        (subject.to_owned(), e)
    };
    let items = |l: &[(&str, i64)]| -> Value {
        l.iter()
            .map(|(sku, q)| json!({"sku": sku, "quantity": q}))
            .collect()
    };
    let low = |sku: &str, available: i64| {
        let data = json!({"sku": sku, "available": available, "threshold": 5});
        event("inventory.low_stock", data)
    };
    let reserved = |order: &str, l: &[(&str, i64)], expires: i64| {
        let data = json!({"orderId": order, "items": items(l), "expires_at_ms": expires});
        event("inventory.reserved", data)
    };
    let released = |order: &str, l: &[(&str, i64)], reason: &str| {
        let data = json!({"orderId": order, "items": items(l), "reason": reason});
        event("inventory.released", data)
    };
    vec![
        reserved("e1", &[("E-A", 3)], FAR),
        low("E-A", 4),
        reserved("e2", &[("E-A", 1), ("E-B", 1)], FAR),
        low("E-A", 3),
        low("E-B", 0),
        released("e2", &[("E-A", 1), ("E-B", 1)], "released"),
        reserved("e3", &[("E-A", 1)], 1_000),
        low("E-A", 3),
        released("e3", &[("E-A", 1)], "expired"),
    ]
}

/// Reserves, commits, releases and expires, then relays: every event the store wrote,
/// as [`expected_events`] shows them. Each is a CloudEvent with an id of its own, and
/// the relay publishes exactly what the outbox holds.
async fn events_conformance(store: Arc<dyn CatalogStore>) -> Vec<(String, Value)> {
    let s = store.as_ref();
    let (outbox, _) = s.outbox();
    s.create(product("E-A", 7)).await.unwrap();
    s.create(product("E-B", 1)).await.unwrap();
    // Refused reservations, repeats and commits publish nothing.
    assert!(
        s.reserve("e-no".into(), lines(&[("E-A", 1), ("E-B", 2)]), FAR)
            .await
            .is_err()
    );
    assert_eq!(outbox.unsent().await.unwrap(), 0);
    for _ in 0..2 {
        s.reserve("e1".into(), lines(&[("E-A", 3)]), FAR)
            .await
            .unwrap();
    }
    for _ in 0..2 {
        s.finish("e1".into(), Action::Commit, 0).await.unwrap();
    }
    for _ in 0..2 {
        s.reserve("e2".into(), lines(&[("E-B", 1), ("E-A", 1)]), FAR)
            .await
            .unwrap();
    }
    for _ in 0..2 {
        s.finish("e2".into(), Action::Release, 0).await.unwrap();
    }
    s.reserve("e3".into(), lines(&[("E-A", 1)]), 1_000)
        .await
        .unwrap();
    assert_eq!(expire_due(s, 2_000).await.unwrap(), 1);
    // A release before its reserve leaves a tombstone, and no event.
    s.finish("e4".into(), Action::Release, 0).await.unwrap();

    let rows = outbox.due(100).await.unwrap();
    let mut seen = std::collections::HashSet::new();
    let stored: Vec<(String, Value)> = rows
        .iter()
        .map(|row| {
            let mut v: Value = serde_json::from_str(&row.payload).unwrap();
            let event: Event = serde_json::from_value(v.clone()).unwrap();
            assert!(
                seen.insert(event.id.clone()),
                "ids are unique: {}",
                event.id
            );
            assert!(
                humantime::parse_rfc3339(&event.time).is_ok(),
                "{}",
                event.time
            );
            assert_eq!(row.attempts, 0);
            let o = v.as_object_mut().unwrap();
            for per_run in ["id", "time", "traceparent"] {
                o.remove(per_run);
            }
            (row.subject.clone(), v)
        })
        .collect();

    let bus = Arc::new(Recorder::default());
    let relay = Relay::shared(outbox.clone(), bus.clone(), relay_config());
    let round = relay.relay_once().await.unwrap();
    assert_eq!((round.sent, round.failed), (rows.len(), false));
    assert_eq!(outbox.unsent().await.unwrap(), 0);
    let published = bus.published.lock().unwrap().clone();
    let as_stored: Vec<(String, Event)> = rows
        .iter()
        .map(|r| (r.subject.clone(), serde_json::from_str(&r.payload).unwrap()))
        .collect();
    assert_eq!(published, as_stored, "the relay publishes what was stored");
    stored
}

/// The change is made and the process dies before its relay runs: the events stay due,
/// a publish to a bus that is down is retried after a backoff, and a publish repeated
/// after a crash before "mark sent" carries the same event id (the broker drops it).
/// `before` and `after` are two processes' stores over the same data.
async fn crash_and_retry(before: Arc<dyn CatalogStore>, after: Arc<dyn CatalogStore>) {
    before.create(product("K-A", 10)).await.unwrap();
    before
        .reserve("k1".into(), lines(&[("K-A", 2)]), FAR)
        .await
        .unwrap();
    before
        .finish("k1".into(), Action::Release, 0)
        .await
        .unwrap();
    drop(before);

    let (outbox, _) = after.outbox();
    let stored = outbox.due(100).await.unwrap();
    let subjects: Vec<&str> = stored.iter().map(|r| r.subject.as_str()).collect();
    assert_eq!(subjects, ["inventory.reserved", "inventory.released"]);
    let ids: Vec<String> = stored
        .iter()
        .map(|r| serde_json::from_str::<Event>(&r.payload).unwrap().id)
        .collect();

    // The bus is down: the first row is marked for a retry, nothing is lost.
    // A backoff long enough that the next round surely comes before it ends.
    let config = RelayConfig {
        min_backoff: Duration::from_millis(400),
        ..RelayConfig::default()
    };
    let bus = Arc::new(Recorder::default());
    bus.down.store(true, Ordering::SeqCst);
    let relay = Relay::shared(outbox.clone(), bus.clone(), config.clone());
    let round = relay.relay_once().await.unwrap();
    assert!(round.failed && round.sent == 0);
    let due = outbox.due(100).await.unwrap();
    assert_eq!(due.len(), 2);
    assert_eq!(due[0].attempts, 1);
    assert!(due[0].next_attempt_ms > crate::domain::now_ms());
    assert_eq!(due[1].attempts, 0);
    assert_eq!(outbox.unsent().await.unwrap(), 2);

    // Back up, but still within the backoff: nothing goes out yet.
    bus.down.store(false, Ordering::SeqCst);
    let round = relay.relay_once().await.unwrap();
    assert!(round.failed && round.sent == 0);
    assert!(bus.ids().is_empty());

    // A relay published the first event and died before marking it sent.
    let first: Event = serde_json::from_str(&due[0].payload).unwrap();
    bus.publish(&due[0].subject, &first).await.unwrap();
    drop(relay);

    // The next process's relay publishes everything, in order, the first one again
    // under the same id.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let relay = Relay::shared(outbox.clone(), bus.clone(), config);
    let round = relay.relay_once().await.unwrap();
    assert_eq!((round.sent, round.failed), (2, false));
    assert_eq!(bus.ids(), [ids[0].clone(), ids[0].clone(), ids[1].clone()]);
    assert_eq!(outbox.unsent().await.unwrap(), 0);
    assert_eq!(relay.relay_once().await.unwrap().sent, 0);

    // Published rows are kept for a while, then purged.
    assert_eq!(
        relay.purge_sent(Duration::from_secs(3600)).await.unwrap(),
        0
    );
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(relay.purge_sent(Duration::from_millis(1)).await.unwrap(), 2);
    assert!(outbox.due(100).await.unwrap().is_empty());
}

fn sqlite_store(rt: &tokio::runtime::Runtime, dir: &std::path::Path) -> Arc<dyn CatalogStore> {
    let url = format!("sqlite://{}/inventory.db", dir.display());
    rt.block_on(open(&url, "FLOTILLA_INVENTORY__STORE", ""))
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn sqlite_conserves_stock(ops in prop::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite_store(&rt, dir.path());
        rt.block_on(conservation(store, "s", ops));
    }

    #[test]
    fn redis_conserves_stock(ops in prop::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        if let Some(store) = rt.block_on(redis_store()) {
            let tag = uuid::Uuid::new_v4().simple().to_string();
            rt.block_on(conservation(Arc::new(store.clone()), &tag, ops));
            rt.block_on(store.clear()).unwrap();
        }
    }
}

async fn conformance(store: Arc<dyn CatalogStore>) {
    store.ping().await.unwrap();
    assert!(
        store.list(10, None).await.unwrap().is_empty(),
        "starts empty"
    );

    let catalog = demo_catalog();
    assert_eq!(
        store.seed_once(catalog.clone()).await.unwrap(),
        catalog.len()
    );
    assert_eq!(
        store.seed_once(vec![product("ZZ-NEW", 1)]).await.unwrap(),
        0,
        "seeds once"
    );

    // Pages in SKU order, without gaps or repeats.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store.list(7, after.clone()).await.unwrap();
        assert!(page.len() <= 7);
        if page.is_empty() {
            break;
        }
        after = Some(page.last().unwrap().sku.clone());
        seen.extend(page.into_iter().map(|p| p.sku));
    }
    let mut expected: Vec<_> = catalog.iter().map(|p| p.sku.clone()).collect();
    expected.sort();
    assert_eq!(seen, expected);

    let one = store
        .get(Sku::parse("FLT-BOAT-002").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(one.name, "Kayak");
    assert_eq!(one.price_cents, 74_900);
    assert_eq!(one.available(), 12);
    assert!(
        store
            .get(Sku::parse("NOPE-1").unwrap())
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn sqlite_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/inventory.db", dir.path().display());
    let store = open(&url, "FLOTILLA_INVENTORY__STORE", "").await.unwrap();
    conformance(store.clone()).await;
    reservation_conformance(store.clone()).await;
    no_overselling(store).await;
}

/// A Redis store under a fresh prefix, or `None` when Redis is not reachable.
async fn redis_store() -> Option<redis::RedisCatalog> {
    let url = test_redis().await?;
    let prefix = format!("flotilla:inventory:test:{}:", uuid::Uuid::new_v4().simple());
    Some(redis_store_at(&url, &prefix).await)
}

async fn redis_store_at(url: &str, prefix: &str) -> redis::RedisCatalog {
    redis::RedisCatalog::open(url, "FLOTILLA_TEST_REDIS", prefix)
        .await
        .unwrap()
}

/// A Redis URL to test against, or `None` (after saying so) when none is reachable.
pub async fn test_redis() -> Option<String> {
    let url =
        std::env::var("FLOTILLA_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    match kit::store::redis::connect(&url, "FLOTILLA_TEST_REDIS").await {
        Ok(_) => Some(url),
        Err(e) if std::env::var("FLOTILLA_REQUIRE_INFRA").as_deref() == Ok("1") => {
            panic!("FLOTILLA_REQUIRE_INFRA=1 but Redis is not reachable: {e}")
        }
        Err(e) => {
            eprintln!(
                "\n*** SKIPPING Redis store tests: {e} ***\n*** start redis-server or set FLOTILLA_TEST_REDIS ***\n"
            );
            None
        }
    }
}

#[tokio::test]
async fn redis_conformance() {
    let Some(store) = redis_store().await else {
        return;
    };
    conformance(Arc::new(store.clone())).await;
    reservation_conformance(Arc::new(store.clone())).await;
    no_overselling(Arc::new(store.clone())).await;
    store.clear().await.unwrap();
}

#[tokio::test]
async fn sqlite_events() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/inventory.db", dir.path().display());
    let store = open(&url, "FLOTILLA_INVENTORY__STORE", "").await.unwrap();
    assert_eq!(events_conformance(store).await, expected_events());
}

#[tokio::test]
async fn redis_events_are_the_sqlite_events() {
    let Some(store) = redis_store().await else {
        return;
    };
    let redis = events_conformance(Arc::new(store.clone())).await;
    store.clear().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/inventory.db", dir.path().display());
    let sqlite = open(&url, "FLOTILLA_INVENTORY__STORE", "").await.unwrap();
    assert_eq!(redis, events_conformance(sqlite).await);
    assert_eq!(redis, expected_events());
}

#[tokio::test]
async fn sqlite_outbox_survives_a_crash_and_retries() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/inventory.db", dir.path().display());
    let before = open(&url, "FLOTILLA_INVENTORY__STORE", "").await.unwrap();
    let after = open(&url, "FLOTILLA_INVENTORY__STORE", "").await.unwrap();
    crash_and_retry(before, after).await;
}

#[tokio::test]
async fn redis_outbox_survives_a_crash_and_retries() {
    let Some(url) = test_redis().await else {
        return;
    };
    let prefix = format!("flotilla:inventory:test:{}:", uuid::Uuid::new_v4().simple());
    let before = redis_store_at(&url, &prefix).await;
    let after = redis_store_at(&url, &prefix).await;
    crash_and_retry(Arc::new(before), Arc::new(after.clone())).await;
    after.clear().await.unwrap();
}

#[tokio::test]
async fn unknown_store_scheme_names_the_setting() {
    let err = open("mongodb://x", "FLOTILLA_INVENTORY__STORE", "")
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("FLOTILLA_INVENTORY__STORE"), "{err}");
}

#[tokio::test]
async fn unreachable_redis_is_a_clear_error() {
    let err = open("redis://127.0.0.1:1", "FLOTILLA_INVENTORY__STORE", "")
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("FLOTILLA_INVENTORY__STORE") && err.contains("cannot connect"),
        "{err}"
    );
}
