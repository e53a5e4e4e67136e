//! The outbox and inbox on every SQL backend: SQLite always, MariaDB and PostgreSQL on
//! the servers `kit::store::testing` finds (skipped loudly without them, failing under
//! `FLOTILLA_REQUIRE_INFRA=1`). The relay publishes to a recording bus that can be told
//! to fail, so the retry path is exercised the same way on each backend.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kit::store::Migration;
use kit::store::testing::{Server, TestDatabase};
use kit_events::outbox::{self, OutboxStore, Relay, RelayConfig};
use kit_events::{BoxFuture, BusError, Event, EventBus, Group, Published, Subscriber};

#[derive(Debug, Default)]
struct Recorder {
    published: Mutex<Vec<(String, String)>>,
    down: AtomicBool,
}

impl EventBus for Recorder {
    fn publish<'a>(
        &'a self,
        subject: &'a str,
        event: &'a Event,
    ) -> BoxFuture<'a, Result<Published, BusError>> {
        Box::pin(async move {
            if self.down.load(Ordering::SeqCst) {
                return Err(BusError::Unavailable("the bus is down".into()));
            }
            self.published
                .lock()
                .unwrap()
                .push((subject.to_owned(), event.id.clone()));
            Ok(Published { duplicate: false })
        })
    }

    fn subscribe<'a>(&'a self, _: &'a Group) -> BoxFuture<'a, Result<Subscriber, BusError>> {
        Box::pin(async { Err(BusError::Unavailable("publish only".into())) })
    }
}

fn config() -> RelayConfig {
    RelayConfig {
        min_backoff: Duration::from_millis(50),
        ..RelayConfig::default()
    }
}

fn event(n: usize) -> Event {
    Event::new("test", "orders.created", serde_json::json!({ "n": n }))
}

/// The relay's half of the contract, the same on every backend; `enqueue` writes
/// committed rows, `rolled_back` writes one and rolls it back.
async fn relay_contract<S: OutboxStore + Clone>(store: S, ids: Vec<String>) {
    let bus = Arc::new(Recorder::default());
    let relay = Relay::new(store.clone(), bus.clone(), config());
    assert_eq!(relay.unsent().await.unwrap(), ids.len() as i64);

    // The bus is down: the first row is marked for a retry, nothing is lost.
    bus.down.store(true, Ordering::SeqCst);
    let round = relay.relay_once().await.unwrap();
    assert!(round.failed && round.sent == 0);
    let due = store.due(10).await.unwrap();
    assert_eq!(due[0].attempts, 1);
    assert!(due[0].next_attempt_ms > 0);

    // Back up: after the backoff everything goes out, in order, once.
    bus.down.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(120)).await;
    let round = relay.relay_once().await.unwrap();
    assert_eq!(round.sent, ids.len());
    let published: Vec<String> = bus
        .published
        .lock()
        .unwrap()
        .iter()
        .map(|(_, id)| id.clone())
        .collect();
    assert_eq!(published, ids);
    assert_eq!(relay.unsent().await.unwrap(), 0);
    assert_eq!(relay.relay_once().await.unwrap().sent, 0);
    assert_eq!(
        relay.purge_sent(Duration::from_secs(3600)).await.unwrap(),
        0,
        "kept while young"
    );
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(
        relay.purge_sent(Duration::from_millis(1)).await.unwrap(),
        ids.len() as u64
    );
}

/// Writes three events in one committed transaction and one in a rolled-back one, then
/// runs the relay contract and the inbox contract.
macro_rules! backend_contract {
    ($pool:expr, $module:path) => {{
        use $module as m;
        let pool = $pool;
        let events: Vec<Event> = (0..3).map(event).collect();
        let mut tx = pool.begin().await.unwrap();
        for e in &events {
            m::enqueue(&mut *tx, "orders.created", e).await.unwrap();
        }
        tx.commit().await.unwrap();
        let mut tx = pool.begin().await.unwrap();
        m::enqueue(&mut *tx, "orders.created", &event(9))
            .await
            .unwrap();
        tx.rollback().await.unwrap();

        relay_contract(pool.clone(), events.iter().map(|e| e.id.clone()).collect()).await;

        let mut tx = pool.begin().await.unwrap();
        assert!(m::record_handled(&mut *tx, "mail", "e1").await.unwrap());
        tx.commit().await.unwrap();
        assert!(!m::record_handled(&pool, "mail", "e1").await.unwrap());
        assert!(m::record_handled(&pool, "stats", "e1").await.unwrap());
        let mut tx = pool.begin().await.unwrap();
        assert!(m::record_handled(&mut *tx, "mail", "e2").await.unwrap());
        tx.rollback().await.unwrap();
        assert!(m::record_handled(&pool, "mail", "e2").await.unwrap());
    }};
}

fn migrations(sql: &'static str) -> &'static [Migration] {
    Box::leak(Box::new([Migration {
        version: 1,
        description: "outbox and inbox",
        sql,
    }]))
}

#[tokio::test]
async fn sqlite_outbox_and_inbox() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/svc.db", dir.path().display());
    let pool = kit::store::sqlite::open(&url, "X", migrations(outbox::SQLITE_SCHEMA))
        .await
        .unwrap();
    backend_contract!(pool, kit_events::outbox);
}

#[tokio::test]
async fn mariadb_outbox_and_inbox() {
    let Some(db) = TestDatabase::create(Server::MySql).await else {
        return;
    };
    let pool = kit::store::mysql::open(&db.url, "X", migrations(outbox::MYSQL_SCHEMA))
        .await
        .unwrap();
    backend_contract!(pool.clone(), kit_events::outbox::mysql);
    pool.close().await;
    db.drop_database().await;
}

#[tokio::test]
async fn postgres_outbox_and_inbox() {
    let Some(db) = TestDatabase::create(Server::Postgres).await else {
        return;
    };
    let pool = kit::store::postgres::open(&db.url, "X", migrations(outbox::POSTGRES_SCHEMA))
        .await
        .unwrap();
    backend_contract!(pool.clone(), kit_events::outbox::postgres);
    pool.close().await;
    db.drop_database().await;
}
