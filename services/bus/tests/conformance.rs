//! The event-bus conformance suite against the embedded backend: a real `flotilla-bus`
//! process per test, on its own database, killed with SIGKILL for the restart check.

mod support;

use kit_events::conformance::{self, Harness};
use support::BusProcess;

#[tokio::test]
async fn every_group_gets_every_event() {
    let p = BusProcess::start().await;
    conformance::every_group_gets_every_event(p.bus()).await;
}

#[tokio::test]
async fn competing_consumers_share_work() {
    let p = BusProcess::start().await;
    conformance::competing_consumers_share_work(p.bus()).await;
}

#[tokio::test]
async fn redelivers_after_consumer_dies() {
    let p = BusProcess::start().await;
    conformance::redelivers_after_consumer_dies(p.bus()).await;
}

#[tokio::test]
async fn dead_letters_after_max_deliveries() {
    let p = BusProcess::start().await;
    conformance::dead_letters_after_max_deliveries(p.bus()).await;
}

#[tokio::test]
async fn keeps_order_per_subject() {
    let p = BusProcess::start().await;
    conformance::keeps_order_per_subject(p.bus()).await;
}

#[tokio::test]
async fn survives_broker_restart() {
    let mut p = BusProcess::start().await;
    conformance::survives_broker_restart(&mut p).await;
}

#[tokio::test]
async fn inspect_shows_events_groups_and_dead_letters() {
    let p = BusProcess::start().await;
    let inspect = kit_events::inspect::connect(&p.url(), "test")
        .await
        .unwrap();
    conformance::inspect_shows_events_groups_and_dead_letters(p.bus(), inspect).await;
}
