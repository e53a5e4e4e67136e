//! Dead letters can be listed and replayed: the replayed event goes back to the group
//! that gave up on it (same event id, fresh delivery count) and leaves the dead-letter
//! subject; unknown positions are `404` problems.

mod support;

use std::time::Duration;

use kit_events::conformance::{Harness, assert_quiet, receive};
use kit_events::embedded::wire::DeliveryLine;
use kit_events::{Event, Group};
use support::BusProcess;

async fn dead_letters(base: &str) -> Vec<DeliveryLine> {
    reqwest::get(format!("{base}/v1/events?subject=deadletter.>"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_replayed_dead_letter_comes_back_to_its_group_once() {
    let p = BusProcess::start().await;
    let bus = p.bus();
    let base = p.url().replace("bus://", "http://");
    let e = Event::new("test", "orders.confirmed", serde_json::json!({"n": 1}));
    bus.publish("orders.confirmed", &e).await.unwrap();
    let group = Group::new("mailer", &["orders.confirmed"])
        .max_deliveries(2)
        .ack_timeout(Duration::from_secs(2));
    let mut sub = bus.subscribe(&group).await.unwrap();
    for _ in 0..2 {
        let d = receive(&mut sub, 1).await.remove(0);
        d.nack(Duration::ZERO).await.unwrap();
    }
    assert_quiet(&mut sub, Duration::from_millis(500)).await;
    let dead = dead_letters(&base).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].subject, "deadletter.mailer.orders.confirmed");
    assert_eq!(dead[0].event.id, e.id);

    let client = reqwest::Client::new();
    let replayed = client
        .post(format!("{base}/v1/deadletters/{}/replay", dead[0].seq))
        .send()
        .await
        .unwrap();
    assert_eq!(replayed.status(), 200);
    let body: serde_json::Value = replayed.json().await.unwrap();
    assert_eq!(body["group"], "mailer");

    let d = receive(&mut sub, 1).await.remove(0);
    assert_eq!(
        d.event.id, e.id,
        "the original event, so inboxes still dedupe it"
    );
    assert_eq!(d.attempt, 1, "a fresh delivery count");
    d.ack().await.unwrap();
    assert_quiet(&mut sub, Duration::from_millis(300)).await;
    assert!(
        dead_letters(&base).await.is_empty(),
        "no longer a dead letter"
    );

    // Replaying it again, or any position that is not a dead letter, is a 404 problem.
    for seq in [dead[0].seq, 1, 999_999] {
        let r = client
            .post(format!("{base}/v1/deadletters/{seq}/replay"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "seq {seq}");
        assert_eq!(
            r.headers()["content-type"],
            "application/problem+json",
            "seq {seq}"
        );
    }
}
