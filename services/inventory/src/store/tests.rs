//! One conformance suite, run against every backend: SQLite always, Redis when a server
//! is reachable (`FLOTILLA_TEST_REDIS`, default `redis://127.0.0.1:6379`). Without one
//! the Redis half is skipped loudly, unless `FLOTILLA_REQUIRE_INFRA=1` makes it fail.

use std::sync::Arc;

use super::*;
use crate::domain::{Product, Sku, demo_catalog};

fn product(sku: &str, stock: i64) -> Product {
    Product {
        sku: Sku::parse(sku).unwrap(),
        name: format!("name {sku}"),
        description: "d".into(),
        price_cents: 1234,
        currency: "EUR".into(),
        stock,
        reserved: 0,
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
    conformance(open(&url, "FLOTILLA_INVENTORY__STORE", "").await.unwrap()).await;
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
    let Some(url) = test_redis().await else {
        return;
    };
    let prefix = format!("flotilla-test:{}:", uuid::Uuid::new_v4().simple());
    let store = redis::RedisCatalog::open(&url, "FLOTILLA_TEST_REDIS", &prefix)
        .await
        .unwrap();
    conformance(Arc::new(store.clone())).await;
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
