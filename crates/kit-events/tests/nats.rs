//! The event-bus conformance suite against NATS JetStream (`FLOTILLA_TEST_NATS`,
//! default `nats://127.0.0.1:4222`), each test on its own stream and subject prefix.
//! Without a server the tests are skipped loudly, unless `FLOTILLA_REQUIRE_INFRA=1`
//! makes them fail. The restart check runs a private `nats-server` it can SIGKILL.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use kit_events::conformance::{self, Harness};
use kit_events::nats::NatsBus;
use kit_events::{BoxFuture, EventBus};

fn require_infra() -> bool {
    std::env::var("FLOTILLA_REQUIRE_INFRA").as_deref() == Ok("1")
}

fn skip<T>(what: &str, why: impl std::fmt::Display) -> Option<T> {
    if require_infra() {
        panic!("FLOTILLA_REQUIRE_INFRA=1 but {what}: {why}");
    }
    eprintln!(
        "\n*** SKIPPING NATS JetStream bus tests: {what}: {why} ***\n*** start `nats-server -js` or set FLOTILLA_TEST_NATS ***\n"
    );
    None
}

/// A bus on a fresh stream of the shared server and its URL, or `None` after saying why.
async fn test_nats() -> Option<(NatsBus, String)> {
    let base =
        std::env::var("FLOTILLA_TEST_NATS").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let id = uuid::Uuid::new_v4().simple().to_string();
    let url = format!("{base}?stream=T{id}&prefix=t{id}&storage=memory");
    match NatsBus::connect(&url, "FLOTILLA_TEST_NATS").await {
        Ok(bus) => Some((bus, url)),
        Err(e) => skip("NATS is not reachable", e),
    }
}

/// Runs `check` on a fresh stream and deletes it afterwards.
async fn with_nats<F, Fut>(check: F)
where
    F: FnOnce(Arc<dyn EventBus>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let Some((bus, _)) = test_nats().await else {
        return;
    };
    check(Arc::new(bus.clone())).await;
    let _ = bus.delete_stream().await;
}

#[tokio::test]
async fn inspect_shows_events_groups_and_dead_letters() {
    let Some((bus, url)) = test_nats().await else {
        return;
    };
    let inspect = kit_events::inspect::connect(&url, "FLOTILLA_TEST_NATS")
        .await
        .unwrap();
    conformance::inspect_shows_events_groups_and_dead_letters(Arc::new(bus.clone()), inspect).await;
    let _ = bus.delete_stream().await;
}

#[tokio::test]
async fn inspect_needs_an_existing_stream() {
    let Some((bus, url)) = test_nats().await else {
        return;
    };
    bus.delete_stream().await.unwrap();
    let e = kit_events::inspect::connect(&url, "FLOTILLA_TEST_NATS")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("FLOTILLA_TEST_NATS"), "{e}");
}

#[tokio::test]
async fn every_group_gets_every_event() {
    with_nats(conformance::every_group_gets_every_event).await;
}

#[tokio::test]
async fn competing_consumers_share_work() {
    with_nats(conformance::competing_consumers_share_work).await;
}

#[tokio::test]
async fn redelivers_after_consumer_dies() {
    with_nats(conformance::redelivers_after_consumer_dies).await;
}

#[tokio::test]
async fn dead_letters_after_max_deliveries() {
    with_nats(conformance::dead_letters_after_max_deliveries).await;
}

#[tokio::test]
async fn keeps_order_per_subject() {
    with_nats(conformance::keeps_order_per_subject).await;
}

/// A private JetStream server with file storage in a temporary directory.
struct NatsProcess {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    bus: Option<Arc<dyn EventBus>>,
}

impl NatsProcess {
    fn spawn(&mut self) -> std::io::Result<()> {
        let bin = std::env::var("NATS_SERVER_BIN").unwrap_or_else(|_| "nats-server".into());
        let child = Command::new(bin)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .stdin(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        Ok(())
    }

    async fn connect(&mut self) {
        let url = format!(
            "nats://127.0.0.1:{}?stream=RESTART&prefix=restart",
            self.port
        );
        for _ in 0..200 {
            if let Ok(bus) = NatsBus::connect(&url, "test").await {
                self.bus = Some(Arc::new(bus));
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("private nats-server did not start on port {}", self.port);
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for NatsProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Harness for NatsProcess {
    fn bus(&self) -> Arc<dyn EventBus> {
        self.bus.clone().expect("connected")
    }

    fn acks_survive_crash(&self) -> bool {
        false
    }

    fn restart(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.kill();
            self.spawn().expect("restart nats-server");
            // A fresh client: the old one would also reconnect, but on its own schedule.
            self.connect().await;
        })
    }
}

#[tokio::test]
async fn survives_broker_restart() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut p = NatsProcess {
        dir: tempfile::tempdir().unwrap(),
        port,
        child: None,
        bus: None,
    };
    if let Err(e) = p.spawn() {
        skip::<()>("cannot run nats-server for the restart test", e);
        return;
    }
    p.connect().await;
    conformance::survives_broker_restart(&mut p).await;
}
