//! The conformance suite every [`EventBus`] backend must pass (feature `conformance`).
//! Each check takes a bus of its own (a fresh broker database or JetStream stream), so
//! checks run in parallel and repeatedly; they panic with a message on failure.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use crate::{BoxFuture, Delivery, Event, EventBus, Group, StartAt, Subscriber};

/// A broker the suite can restart (kill and start again on the same storage).
pub trait Harness: Send {
    /// A bus client connected to the broker.
    fn bus(&self) -> Arc<dyn EventBus>;
    /// Kills the broker abruptly (no graceful shutdown) and starts it again.
    fn restart(&mut self) -> BoxFuture<'_, ()>;
    /// Whether consumer acks survive a crash of the broker. The embedded bus commits
    /// each ack; a single JetStream server writes consumer state asynchronously, so
    /// after a SIGKILL it may deliver acknowledged events again (never lose one):
    /// consumers' inboxes make such redeliveries harmless.
    fn acks_survive_crash(&self) -> bool;
}

/// How long a check waits for deliveries before failing.
const WAIT: Duration = Duration::from_secs(20);

fn event(kind: &str, n: usize) -> Event {
    Event::new("conformance", kind, serde_json::json!({ "n": n }))
}

/// Receives `n` deliveries (or panics after [`WAIT`]).
pub async fn receive(sub: &mut Subscriber, n: usize) -> Vec<Delivery> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match tokio::time::timeout(WAIT, sub.next()).await {
            Ok(Ok(d)) => out.push(d),
            Ok(Err(e)) => panic!("receiving failed after {} of {n}: {e}", out.len()),
            Err(_) => panic!(
                "only {} of {n} deliveries arrived within {WAIT:?}",
                out.len()
            ),
        }
    }
    out
}

/// Receives `n` deliveries, acknowledging each as it arrives (so flow control lets the
/// next ones come).
pub async fn receive_acking(sub: &mut Subscriber, n: usize) -> Vec<Delivery> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let d = receive(sub, 1).await.remove(0);
        d.ack().await.expect("ack");
        out.push(d);
    }
    out
}

/// Asserts nothing more arrives within `quiet`.
pub async fn assert_quiet(sub: &mut Subscriber, quiet: Duration) {
    if let Ok(Ok(d)) = tokio::time::timeout(quiet, sub.next()).await {
        panic!("unexpected delivery {d:?}");
    }
}

async fn publish_all(bus: &dyn EventBus, subject: &str, events: &[Event]) {
    for e in events {
        let p = bus.publish(subject, e).await.expect("publish");
        assert!(!p.duplicate, "fresh event reported as duplicate");
    }
}

fn ids(ds: &[Delivery]) -> BTreeSet<String> {
    ds.iter().map(|d| d.event.id.clone()).collect()
}

/// Every group gets every event; a group created "now" sees only later events; a
/// republished event id is dropped as a duplicate.
pub async fn every_group_gets_every_event(bus: Arc<dyn EventBus>) {
    let events: Vec<Event> = (0..10).map(|n| event("orders.created", n)).collect();
    publish_all(&*bus, "orders.created", &events).await;
    let sent: BTreeSet<String> = events.iter().map(|e| e.id.clone()).collect();

    let again = bus.publish("orders.created", &events[0]).await.unwrap();
    assert!(
        again.duplicate,
        "same id published twice must be a duplicate"
    );

    for name in ["mail", "stats"] {
        let mut sub = bus
            .subscribe(&Group::new(name, &["orders.*"]))
            .await
            .unwrap();
        let got = receive(&mut sub, 10).await;
        for d in &got {
            assert_eq!(d.subject, "orders.created");
            assert_eq!(d.attempt, 1);
            d.ack().await.unwrap();
        }
        assert_eq!(ids(&got), sent, "group {name} gets every event once");
        assert_quiet(&mut sub, Duration::from_millis(300)).await;
    }

    let mut late = bus
        .subscribe(&Group::new("late", &["orders.*"]).start_at(StartAt::Now))
        .await
        .unwrap();
    let newer = event("orders.confirmed", 99);
    bus.publish("orders.confirmed", &newer).await.unwrap();
    bus.publish("payments.refunded", &event("payments.refunded", 1))
        .await
        .unwrap();
    let got = receive(&mut late, 1).await;
    assert_eq!(
        got[0].event.id, newer.id,
        "a group from now sees only newer events"
    );
    assert_eq!(got[0].event.data, newer.data);
    got[0].ack().await.unwrap();
    assert_quiet(&mut late, Duration::from_millis(300)).await;
}

/// Two consumers of one group share its events: each handles some, none twice.
pub async fn competing_consumers_share_work(bus: Arc<dyn EventBus>) {
    let events: Vec<Event> = (0..40).map(|n| event("payments.captured", n)).collect();
    publish_all(&*bus, "payments.captured", &events).await;
    let group = Group::new("workers", &["payments.captured"]).max_in_flight(2);
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<(usize, String)>();
    let mut tasks = Vec::new();
    for worker in 0..2 {
        let mut sub = bus.subscribe(&group).await.unwrap();
        let tx = seen_tx.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let Ok(Ok(d)) = tokio::time::timeout(WAIT, sub.next()).await else {
                    return;
                };
                // Handling takes a moment, so the other consumer gets its share.
                tokio::time::sleep(Duration::from_millis(10)).await;
                d.ack().await.unwrap();
                if tx.send((worker, d.event.id.clone())).is_err() {
                    return;
                }
            }
        }));
    }
    drop(seen_tx);
    let mut per_worker = [0usize; 2];
    let mut seen = BTreeMap::new();
    while seen.len() < 40 {
        let (w, id) = tokio::time::timeout(WAIT, seen_rx.recv())
            .await
            .expect("all 40 handled in time")
            .expect("workers alive");
        per_worker[w] += 1;
        *seen.entry(id).or_insert(0) += 1;
    }
    for t in tasks {
        t.abort();
    }
    assert!(
        seen.values().all(|n| *n == 1),
        "no event handled twice: {seen:?}"
    );
    assert!(
        per_worker[0] > 0 && per_worker[1] > 0,
        "both consumers got work: {per_worker:?}"
    );
}

/// A consumer that dies while handling (no ack) loses nothing: after the ack timeout
/// the event goes to another consumer of the group, as attempt 2.
pub async fn redelivers_after_consumer_dies(bus: Arc<dyn EventBus>) {
    let e = event("inventory.reserved", 1);
    bus.publish("inventory.reserved", &e).await.unwrap();
    let group = Group::new("crashy", &["inventory.reserved"]).ack_timeout(Duration::from_secs(1));
    let mut first = bus.subscribe(&group).await.unwrap();
    let got = receive(&mut first, 1).await;
    assert_eq!(got[0].event.id, e.id);
    drop(got);
    drop(first); // dies mid-handling

    let mut second = bus.subscribe(&group).await.unwrap();
    let again = receive(&mut second, 1).await;
    assert_eq!(again[0].event.id, e.id, "redelivered to the next consumer");
    assert_eq!(again[0].attempt, 2);
    again[0].ack().await.unwrap();
    assert_quiet(&mut second, Duration::from_millis(1500)).await;
}

/// An event that fails `max_deliveries` times goes to `deadletter.<group>.<subject>`,
/// and only there.
pub async fn dead_letters_after_max_deliveries(bus: Arc<dyn EventBus>) {
    let e = event("payments.refunded", 7);
    bus.publish("payments.refunded", &e).await.unwrap();
    let group = Group::new("picky", &["payments.refunded"])
        .max_deliveries(3)
        .ack_timeout(Duration::from_secs(2));
    let mut sub = bus.subscribe(&group).await.unwrap();
    let mut attempts = Vec::new();
    for _ in 0..3 {
        let d = receive(&mut sub, 1).await.remove(0);
        assert_eq!(d.event.id, e.id);
        attempts.push(d.attempt);
        d.nack(Duration::ZERO).await.unwrap();
    }
    assert_eq!(attempts, [1, 2, 3]);
    assert_quiet(&mut sub, Duration::from_millis(2500)).await;

    let dl = crate::dead_letter_subject("picky", "payments.refunded");
    let mut dead = bus
        .subscribe(&Group::new("ops", &[dl.as_str()]))
        .await
        .unwrap();
    let d = receive(&mut dead, 1).await.remove(0);
    assert_eq!(d.subject, dl);
    assert_eq!(d.event.id, e.id, "the dead letter is the original event");
    assert_eq!(d.event.data, e.data);
    d.ack().await.unwrap();
}

/// One consumer sees each subject's events in publish order.
pub async fn keeps_order_per_subject(bus: Arc<dyn EventBus>) {
    for n in 0..60 {
        let subject = if n % 3 == 0 {
            "orders.cancelled"
        } else {
            "orders.confirmed"
        };
        bus.publish(subject, &event(subject, n)).await.unwrap();
    }
    let mut sub = bus
        .subscribe(&Group::new("ordered", &["orders.*"]).max_in_flight(8))
        .await
        .unwrap();
    let got = receive_acking(&mut sub, 60).await;
    let mut last: BTreeMap<String, i64> = BTreeMap::new();
    for d in &got {
        let n = d.event.data["n"].as_i64().unwrap();
        if let Some(prev) = last.insert(d.subject.clone(), n) {
            assert!(n > prev, "{}: {n} after {prev}", d.subject);
        }
    }
}

/// Events the broker acknowledged survive a crash of the broker: the group gets every
/// event it had not acknowledged, and, where the backend promises it, nothing else.
pub async fn survives_broker_restart(harness: &mut dyn Harness) {
    let bus = harness.bus();
    let events: Vec<Event> = (0..20).map(|n| event("users.registered", n)).collect();
    publish_all(&*bus, "users.registered", &events).await;
    // A prefetched, unacknowledged delivery to the consumer dropped below comes back
    // after the ack timeout, so it is short.
    let group = Group::new("durable", &["users.registered"])
        .max_in_flight(1)
        .ack_timeout(Duration::from_secs(2));
    let mut sub = bus.subscribe(&group).await.unwrap();
    let handled = receive(&mut sub, 1).await;
    handled[0].ack().await.unwrap();
    let mut done = ids(&handled);
    for _ in 1..10 {
        let d = receive(&mut sub, 1).await.remove(0);
        d.ack().await.unwrap();
        done.insert(d.event.id.clone());
    }
    drop(sub);

    harness.restart().await;
    let bus = harness.bus();
    let later = event("users.registered", 20);
    // The bus may still be coming up: publishing retries until it answers.
    let mut tries = 0;
    while let Err(e) = bus.publish("users.registered", &later).await {
        tries += 1;
        assert!(tries < 100, "bus did not come back: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut sub = bus.subscribe(&group).await.unwrap();
    let mut missing: BTreeSet<String> = events.iter().map(|e| e.id.clone()).collect();
    missing.retain(|id| !done.contains(id));
    missing.insert(later.id.clone());
    let mut again = BTreeSet::new();
    while !missing.is_empty() {
        let d = receive_acking(&mut sub, 1).await.remove(0);
        if !missing.remove(&d.event.id) {
            assert!(done.contains(&d.event.id), "unknown event {d:?}");
            again.insert(d.event.id.clone());
        }
    }
    if harness.acks_survive_crash() {
        assert!(again.is_empty(), "acknowledged events came back: {again:?}");
        assert_quiet(&mut sub, Duration::from_millis(500)).await;
    }
}

/// Polls `read` until `done` holds for what it returns (or panics after [`WAIT`]).
async fn eventually<T: std::fmt::Debug, F, Fut>(
    what: &str,
    mut read: F,
    done: impl Fn(&T) -> bool,
) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let got = read().await;
        if done(&got) {
            return got;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: still {got:?} after {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Awaits an inspection that must answer at once, not wait for new events.
async fn quick<T>(f: impl std::future::Future<Output = Result<T, crate::BusError>>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .expect("inspecting never waits for new events")
        .expect("inspect")
}

/// [`crate::inspect`] shows what the bus holds: the events of a subject filter after a
/// position (in pages, never waiting for more), every group with its lag and pending
/// deliveries (one group of several subjects is one group), and the dead letters.
pub async fn inspect_shows_events_groups_and_dead_letters(
    bus: Arc<dyn EventBus>,
    inspect: Arc<dyn crate::inspect::Inspect>,
) {
    let orders: Vec<Event> = (0..5).map(|n| event("orders.created", n)).collect();
    let payments: Vec<Event> = (0..2).map(|n| event("payments.captured", n)).collect();
    publish_all(&*bus, "orders.created", &orders).await;
    publish_all(&*bus, "payments.captured", &payments).await;
    let order_ids: Vec<String> = orders.iter().map(|e| e.id.clone()).collect();

    let all = quick(inspect.events(">", 0, 100)).await;
    assert_eq!(all.len(), 7, "{all:?}");
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq), "oldest first");
    assert_eq!(all[5].subject, "payments.captured");
    assert_eq!(all[5].event.id, payments[0].id);
    let first = quick(inspect.events("orders.*", 0, 2)).await;
    let rest = quick(inspect.events("orders.*", first[1].seq, 100)).await;
    let read: Vec<String> = first
        .iter()
        .chain(&rest)
        .map(|l| l.event.id.clone())
        .collect();
    assert_eq!(
        read, order_ids,
        "paged by position, only the filter's subjects"
    );
    assert!(
        first
            .iter()
            .chain(&rest)
            .all(|l| l.subject == "orders.created")
    );
    assert_eq!(rest[0].event.data, orders[2].data);
    let last = all.last().unwrap().seq;
    assert!(quick(inspect.events(">", last, 10)).await.is_empty());
    assert!(quick(inspect.events("users.*", 0, 10)).await.is_empty());
    assert!(inspect.events("orders..x", 0, 10).await.is_err());

    // `mail` has handled two orders and holds the third; `stats` (two subjects) all.
    let mut mail = bus
        .subscribe(&Group::new("mail", &["orders.created"]).max_in_flight(1))
        .await
        .unwrap();
    receive_acking(&mut mail, 2).await;
    let held = receive(&mut mail, 1).await;
    let mut stats = bus
        .subscribe(&Group::new(
            "stats",
            &["orders.created", "payments.captured"],
        ))
        .await
        .unwrap();
    receive_acking(&mut stats, 7).await;
    let groups = eventually(
        "groups",
        || async { inspect.groups().await.expect("groups") },
        |g: &Vec<crate::inspect::GroupState>| {
            g.iter()
                .any(|g| g.name == "stats" && g.lag == 0 && g.pending == 0)
                && g.iter()
                    .any(|g| g.name == "mail" && g.lag == 2 && g.pending == 1)
        },
    )
    .await;
    assert_eq!(groups.len(), 2, "one entry a group: {groups:?}");
    let stats_state = groups.iter().find(|g| g.name == "stats").unwrap();
    let mut subjects = stats_state.subjects.clone();
    subjects.sort();
    assert_eq!(subjects, ["orders.created", "payments.captured"]);
    let mail_state = groups.iter().find(|g| g.name == "mail").unwrap();
    assert_eq!(mail_state.subjects, ["orders.created"]);
    held[0].ack().await.unwrap();

    // `picky` gives up on the first payment at once.
    assert!(inspect.dead_letters().await.unwrap().is_empty());
    let mut picky = bus
        .subscribe(&Group::new("picky", &["payments.captured"]).max_deliveries(1))
        .await
        .unwrap();
    let got = receive(&mut picky, 1).await.remove(0);
    assert_eq!(got.event.id, payments[0].id);
    got.nack(Duration::ZERO).await.unwrap();
    receive_acking(&mut picky, 1).await;
    let dead = eventually(
        "dead letters",
        || async { inspect.dead_letters().await.expect("dead letters") },
        |d: &Vec<crate::inspect::Logged>| !d.is_empty(),
    )
    .await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(
        dead[0].subject,
        crate::dead_letter_subject("picky", "payments.captured")
    );
    assert_eq!(dead[0].event.id, payments[0].id, "the original event");
    assert!(dead[0].seq > last);
    eventually(
        "picky settled",
        || async { inspect.groups().await.expect("groups") },
        |g: &Vec<crate::inspect::GroupState>| {
            g.iter()
                .any(|g| g.name == "picky" && g.lag == 0 && g.pending == 0)
        },
    )
    .await;
}
