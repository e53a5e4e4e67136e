//! Crash test of the outbox and the inbox, with real processes and SIGKILL.
//!
//! A producer process writes an order row and its `orders.created` event in one
//! transaction, with a lazy relay so committed events wait unsent; it is killed while
//! some are committed and not yet published. A consumer process applies each event to
//! its own database together with its inbox record, then waits before acknowledging;
//! it is killed mid-way. Both restart. In the end every order has been applied exactly
//! once (an effect applied twice would count 2), and the outbox is empty of unsent rows.
//!
//! The child processes are this test binary re-run with `FLOTILLA_CRASH_ROLE` set (see
//! `crash_child`), so they are real OS processes that can be killed with SIGKILL.

mod support;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kit::store::Migration;
use kit_events::outbox::{self, Relay, RelayConfig};
use kit_events::{Event, EventBus, Group};
use sqlx::SqlitePool;
use support::BusProcess;

const ORDERS: i64 = 120;
const ROLE: &str = "FLOTILLA_CRASH_ROLE";

static PRODUCER: &[Migration] = &[
    Migration {
        version: 1,
        description: "orders",
        sql: "CREATE TABLE orders (n INTEGER PRIMARY KEY)",
    },
    Migration {
        version: 2,
        description: "outbox and inbox",
        sql: outbox::SQLITE_SCHEMA,
    },
];

static CONSUMER: &[Migration] = &[
    Migration {
        version: 1,
        description: "effects",
        sql: "CREATE TABLE effects (n INTEGER PRIMARY KEY, applied INTEGER NOT NULL);
              CREATE TABLE skipped (id INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL)",
    },
    Migration {
        version: 2,
        description: "outbox and inbox",
        sql: outbox::SQLITE_SCHEMA,
    },
];

async fn open(path: &str, m: &'static [Migration]) -> SqlitePool {
    kit::store::sqlite::open(&format!("sqlite://{path}"), "test", m)
        .await
        .unwrap()
}

async fn count(pool: &SqlitePool, sql: &str) -> i64 {
    sqlx::query_as::<_, (i64,)>(sql)
        .fetch_one(pool)
        .await
        .map(|r| r.0)
        .unwrap_or(0)
}

/// Producer: commits orders with their events until `ORDERS`, relaying lazily.
async fn producer(db: &str, bus: Arc<dyn EventBus>) {
    let pool = open(db, PRODUCER).await;
    let relay = Relay::new(
        pool.clone(),
        bus,
        RelayConfig {
            // Never poked and slow to look: committed events wait unsent for a while.
            poll: Duration::from_millis(400),
            batch: 10,
            ..RelayConfig::default()
        },
    );
    relay.clone().spawn();
    let start = count(&pool, "SELECT COALESCE(MAX(n), 0) FROM orders").await;
    for n in start + 1..=ORDERS {
        let mut tx = pool.begin().await.unwrap();
        sqlx::query("INSERT INTO orders (n) VALUES (?)")
            .bind(n)
            .execute(&mut *tx)
            .await
            .unwrap();
        let event = Event::new("orders", "orders.created", serde_json::json!({ "n": n }));
        outbox::enqueue(&mut *tx, "orders.created", &event)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    while relay.unsent().await.unwrap() > 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Consumer: applies each event once, with its inbox record, then acknowledges late.
async fn consumer(db: &str, bus: Arc<dyn EventBus>) {
    let pool = open(db, CONSUMER).await;
    let group = Group::new("counter", &["orders.created"]).ack_timeout(Duration::from_secs(1));
    let mut sub = bus.subscribe(&group).await.unwrap();
    loop {
        let d = sub.next().await.unwrap();
        let mut tx = pool.begin().await.unwrap();
        if outbox::record_handled(&mut *tx, "counter", &d.event.id)
            .await
            .unwrap()
        {
            sqlx::query(
                "INSERT INTO effects (n, applied) VALUES (?, 1)
                 ON CONFLICT (n) DO UPDATE SET applied = applied + 1",
            )
            .bind(d.event.data["n"].as_i64().unwrap())
            .execute(&mut *tx)
            .await
            .unwrap();
        } else {
            sqlx::query("INSERT INTO skipped (event_id) VALUES (?)")
                .bind(&d.event.id)
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
        // The window a crash between effect and ack falls into.
        tokio::time::sleep(Duration::from_millis(15)).await;
        d.ack().await.unwrap();
    }
}

/// The child side: does nothing unless started by `outbox_and_inbox_survive_sigkill`.
#[tokio::test]
async fn crash_child() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let db = std::env::var("CRASH_DB").unwrap();
    let bus = kit_events::connect(&std::env::var("CRASH_BUS").unwrap(), "CRASH_BUS")
        .await
        .unwrap();
    match role.as_str() {
        "producer" => producer(&db, bus).await,
        "consumer" => consumer(&db, bus).await,
        other => panic!("unknown role {other}"),
    }
}

/// A child process, SIGKILLed when dropped (also when the test fails).
struct Proc(Option<Child>);

impl Proc {
    fn wait(&mut self) -> std::process::ExitStatus {
        self.0.take().unwrap().wait().unwrap()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn child(role: &str, db: &str, bus: &str) -> Proc {
    Proc(Some(
        Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(ROLE, role)
            .env("CRASH_DB", db)
            .env("CRASH_BUS", bus)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    ))
}

fn sigkill(p: Proc) {
    drop(p); // SIGKILL, then reaped
}

async fn wait_until<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
}

#[tokio::test]
async fn outbox_and_inbox_survive_sigkill() {
    if std::env::var(ROLE).is_ok() {
        return;
    }
    let bus = BusProcess::start().await;
    let dir = tempfile::tempdir().unwrap();
    let pdb = dir.path().join("orders.db").display().to_string();
    let cdb = dir.path().join("counter.db").display().to_string();
    // The schemas exist before the children start, so this side can watch them.
    let orders = open(&pdb, PRODUCER).await;
    let effects = open(&cdb, CONSUMER).await;

    let mut consumer = child("consumer", &cdb, &bus.url());
    let producer = child("producer", &pdb, &bus.url());

    // Kill the producer while events are committed but not yet published.
    wait_until("committed and unsent events", || async {
        count(&orders, "SELECT COUNT(*) FROM orders").await >= 40
            && count(&orders, "SELECT COUNT(*) FROM outbox WHERE sent_ms IS NULL").await >= 5
    })
    .await;
    sigkill(producer);
    let unsent = count(&orders, "SELECT COUNT(*) FROM outbox WHERE sent_ms IS NULL").await;
    let committed = count(&orders, "SELECT COUNT(*) FROM orders").await;
    assert!(
        unsent >= 5,
        "killed between commit and publish ({unsent} unsent)"
    );
    assert_eq!(
        count(&orders, "SELECT COUNT(*) FROM outbox").await,
        committed,
        "every committed order has its event"
    );

    // The restarted producer's relay publishes what the dead one left unsent.
    let mut producer = child("producer", &pdb, &bus.url());

    // Kill the consumer mid-way, most likely between its commit and its ack.
    wait_until("some effects", || async {
        count(&effects, "SELECT COUNT(*) FROM effects").await >= 15
    })
    .await;
    sigkill(consumer);
    consumer = child("consumer", &cdb, &bus.url());

    wait_until("every order applied", || async {
        count(&effects, "SELECT COUNT(*) FROM effects").await >= ORDERS
    })
    .await;
    let status = producer.wait();
    assert!(
        status.success(),
        "the restarted producer finished: {status}"
    );
    sigkill(consumer);

    assert_eq!(count(&orders, "SELECT COUNT(*) FROM orders").await, ORDERS);
    assert_eq!(
        count(&orders, "SELECT COUNT(*) FROM outbox WHERE sent_ms IS NULL").await,
        0
    );
    assert_eq!(
        count(&effects, "SELECT COUNT(*) FROM effects").await,
        ORDERS
    );
    assert_eq!(
        count(&effects, "SELECT COUNT(*) FROM effects WHERE applied <> 1").await,
        0,
        "no order applied twice"
    );
    let skipped = count(&effects, "SELECT COUNT(*) FROM skipped").await;
    eprintln!("redeliveries absorbed by the inbox: {skipped}");
}
