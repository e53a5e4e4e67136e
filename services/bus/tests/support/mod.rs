//! Helpers shared by the bus's integration tests.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use kit_events::conformance::Harness;
use kit_events::embedded::EmbeddedBus;
use kit_events::{BoxFuture, EventBus};

/// A `flotilla-bus` process on its own port and database.
pub struct BusProcess {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    bus: Arc<dyn EventBus>,
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl BusProcess {
    /// Starts one and waits until it answers.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let url = format!("bus://127.0.0.1:{port}");
        let mut p = Self {
            dir,
            port,
            child: None,
            bus: Arc::new(EmbeddedBus::new(&url, "test").unwrap()),
        };
        p.spawn().await;
        p
    }

    /// The bus URL.
    pub fn url(&self) -> String {
        format!("bus://127.0.0.1:{}", self.port)
    }

    async fn spawn(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_flotilla-bus"))
            .env("FLOTILLA_DISCOVERY", "static://")
            // These tests are about the log, not the transport.
            .env("FLOTILLA_INSECURE_INTERNAL", "1")
            .env("FLOTILLA_DATA_DIR", self.dir.path())
            .env("FLOTILLA_LOG", "warn")
            .env("FLOTILLA_BUS__LISTEN", format!("127.0.0.1:{}", self.port))
            .stdout(Stdio::null())
            .stdin(Stdio::null())
            .spawn()
            .expect("start flotilla-bus");
        self.child = Some(child);
        let url = format!("bus://127.0.0.1:{}", self.port);
        for _ in 0..200 {
            if EmbeddedBus::connect(&url, "test").await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("flotilla-bus did not start on {url}");
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill(); // SIGKILL: no graceful shutdown
            let _ = c.wait();
        }
    }
}

impl Drop for BusProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Harness for BusProcess {
    fn bus(&self) -> Arc<dyn EventBus> {
        self.bus.clone()
    }

    fn acks_survive_crash(&self) -> bool {
        true
    }

    fn restart(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.kill();
            self.spawn().await;
        })
    }
}
