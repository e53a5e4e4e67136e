//! One conformance suite, run against every backend: SQLite always, Redis when a server
//! is reachable (`FLOTILLA_TEST_REDIS`, default `redis://127.0.0.1:6379`). Without one
//! the Redis half is skipped loudly, unless `FLOTILLA_REQUIRE_INFRA=1` makes it fail.

use std::sync::Arc;

use proptest::prelude::*;

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

#[tokio::test]
async fn sqlite_reservations_write_their_events_in_the_same_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/inventory.db", dir.path().display());
    let s = open(&url, "FLOTILLA_INVENTORY__STORE", "").await.unwrap();
    let (outbox, _) = s.outbox().expect("SQLite has an outbox");
    s.create(product("T-A", 7)).await.unwrap();
    s.create(product("T-B", 1)).await.unwrap();
    // Refused reservations publish nothing.
    assert!(
        s.reserve("o-no".into(), lines(&[("T-A", 1), ("T-B", 2)]), FAR)
            .await
            .is_err()
    );
    assert_eq!(outbox.unsent().await.unwrap(), 0);
    s.reserve("o1".into(), lines(&[("T-A", 3)]), FAR)
        .await
        .unwrap();
    s.reserve("o1".into(), lines(&[("T-A", 3)]), FAR)
        .await
        .unwrap();
    s.finish("o1".into(), Action::Release, 0).await.unwrap();
    s.finish("o1".into(), Action::Release, 0).await.unwrap();
    let subjects: Vec<String> = outbox
        .due(100)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.subject)
        .collect();
    // 7 - 3 = 4 available is low stock; a repeated reserve or release adds nothing.
    assert_eq!(
        subjects,
        [
            "inventory.reserved",
            "inventory.low_stock",
            "inventory.released"
        ]
    );
}

/// A Redis store under a fresh prefix, or `None` when Redis is not reachable.
async fn redis_store() -> Option<redis::RedisCatalog> {
    let url = test_redis().await?;
    let prefix = format!("flotilla-test:{}:", uuid::Uuid::new_v4().simple());
    Some(
        redis::RedisCatalog::open(&url, "FLOTILLA_TEST_REDIS", &prefix)
            .await
            .unwrap(),
    )
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
