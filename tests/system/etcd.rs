//! etcd as the discovery backend, against a real `etcd` each test starts on free ports
//! with its own data directory: registration, resolution and watches, lease expiry of
//! a killed `flotilla run` instance, deregistration, traffic rules, the operator's
//! directory and commands (`status`, `traffic`), an etcd restart, and the whole system
//! under `flotilla up` finding itself through etcd. Skipped loudly without an `etcd` binary (Debian:
//! `etcd-server`), unless `FLOTILLA_REQUIRE_INFRA=1`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use kit::discovery::etcd::{EtcdClient, EtcdRegistration, EtcdResolver};
use kit::discovery::traffic::TrafficPolicy;
use kit::discovery::{Directory, DiscoveryError, Resolver, Snapshot};

use crate::harness::{System, flotilla, free_port, output_text};

/// An `etcd` of the test's own; killed when dropped.
struct EtcdServer {
    binary: PathBuf,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

impl EtcdServer {
    /// Starts one and waits until it answers, or says why not (see the module docs).
    async fn start() -> Option<Self> {
        let found = std::env::var_os("PATH")
            .into_iter()
            .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .chain([PathBuf::from("/usr/bin")])
            .map(|d| d.join("etcd"))
            .find(|p| p.is_file());
        let Some(binary) = found else {
            return kit::store::testing::skip(
                "etcd discovery tests",
                "no etcd binary on PATH",
                "install etcd (Debian: apt-get install etcd-server)",
            );
        };
        let client_port = free_port();
        let peer_port = loop {
            let p = free_port();
            if p != client_port {
                break p;
            }
        };
        let mut server = Self {
            binary,
            dir: tempfile::tempdir().unwrap(),
            client_port,
            peer_port,
            child: None,
        };
        server.spawn().await;
        Some(server)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts the process on the same ports and data directory, and waits until it
    /// answers.
    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))
            .unwrap();
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = std::process::Command::new(&self.binary)
            .arg("--name=test")
            .arg(format!("--data-dir={}", self.data_dir().display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=test={peer}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("etcd starts");
        self.child = Some(child);
        let probe = EtcdClient::from_url(&self.url("/probe"), "X").unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while probe.services().await.is_err() {
            assert!(
                Instant::now() < deadline,
                "etcd did not answer:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL, as a crash.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self, prefix: &str) -> String {
        format!("etcd://127.0.0.1:{}?prefix={prefix}", self.client_port)
    }

    fn client(&self) -> EtcdClient {
        EtcdClient::from_url(&self.url("/flotilla-test"), "FLOTILLA_DISCOVERY").unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn metadata(version: &str) -> impl Fn() -> BTreeMap<String, String> + Send + 'static {
    let version = version.to_owned();
    move || BTreeMap::from([("version".to_owned(), version.clone())])
}

async fn register(client: &EtcdClient, service: &str, id: &str, ttl: Duration) -> EtcdRegistration {
    EtcdRegistration::start(
        client.clone(),
        service,
        id,
        format!("127.0.0.1:{}", 9000 + id.len()),
        ttl,
        metadata("1.0"),
    )
    .await
    .expect("registers")
}

fn ids(snapshot: &Snapshot) -> Vec<&str> {
    let mut ids: Vec<&str> = snapshot.instances.iter().map(|i| i.id.as_str()).collect();
    ids.sort_unstable();
    ids
}

/// Polls `service` until `done` holds for its snapshot, for up to `within`.
async fn until(
    resolver: &EtcdResolver,
    service: &str,
    within: Duration,
    done: impl Fn(&Snapshot) -> bool,
) -> Result<(Snapshot, Duration), Option<Snapshot>> {
    let begun = Instant::now();
    let mut last = None;
    while begun.elapsed() < within {
        if let Ok(s) = resolver.resolve(service, None).await {
            if done(&s) {
                return Ok((s, begun.elapsed()));
            }
            last = Some(s);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(last)
}

#[tokio::test]
async fn registered_instances_resolve_watches_wake_and_deregistration_is_immediate() {
    let Some(etcd) = EtcdServer::start().await else {
        return;
    };
    let client = etcd.client();
    let resolver = EtcdResolver::new(client.clone());

    let empty = resolver.resolve("orders", None).await.unwrap();
    assert!(empty.instances.is_empty());

    // A watch from the empty set wakes when the first instance registers.
    let watching = {
        let resolver = resolver.clone();
        let after = empty.revision;
        tokio::spawn(async move {
            let begun = Instant::now();
            let s = resolver.resolve("orders", Some(after)).await;
            (s, begun.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let first = register(&client, "orders", "orders-1", Duration::from_secs(30)).await;
    let (woken, took) = watching.await.unwrap();
    let woken = woken.unwrap();
    assert_eq!(ids(&woken), ["orders-1"]);
    assert!(took < Duration::from_secs(3), "the watch took {took:?}");
    let instance = &woken.instances[0];
    assert!(instance.healthy);
    assert_eq!(instance.metadata["version"], "1.0");
    assert!(woken.revision > empty.revision);

    let second = register(&client, "orders", "orders-2", Duration::from_secs(30)).await;
    let users = register(&client, "users", "users-1", Duration::from_secs(30)).await;

    // The operator's directory lists every service with its instances.
    let directory: &dyn Directory = &client;
    let services = directory.services().await.unwrap();
    let listed: Vec<(&str, usize)> = services
        .iter()
        .map(|s| (s.name.as_str(), s.instances.len()))
        .collect();
    assert_eq!(listed, [("orders", 2), ("users", 1)]);
    assert_eq!(
        directory.service("orders").await.unwrap().instances.len(),
        2
    );
    assert!(
        directory
            .service("nothing")
            .await
            .unwrap()
            .instances
            .is_empty()
    );

    // Deregistration removes the key at once (the lease would last 30 s), and wakes
    // the watch.
    let now = resolver.resolve("orders", None).await.unwrap();
    let watching = {
        let resolver = resolver.clone();
        tokio::spawn(async move { resolver.resolve("orders", Some(now.revision)).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let begun = Instant::now();
    first.deregister().await;
    let after = watching.await.unwrap().unwrap();
    assert_eq!(ids(&after), ["orders-2"]);
    assert!(
        begun.elapsed() < Duration::from_secs(2),
        "{:?}",
        begun.elapsed()
    );

    second.deregister().await;
    users.deregister().await;
    assert!(directory.services().await.unwrap().is_empty());
}

#[tokio::test]
async fn traffic_rules_round_trip_and_wake_watchers() {
    let Some(etcd) = EtcdServer::start().await else {
        return;
    };
    let client = etcd.client();
    let resolver = EtcdResolver::new(client.clone());
    let registration = register(&client, "inventory", "inventory-1", Duration::from_secs(30)).await;
    let before = resolver.resolve("inventory", None).await.unwrap();
    assert_eq!(before.traffic, None);

    let rules = TrafficPolicy {
        split: BTreeMap::from([("1.0".to_owned(), 90), ("2.0".to_owned(), 10)]),
        sticky: true,
        ..TrafficPolicy::default()
    };
    let watching = {
        let resolver = resolver.clone();
        tokio::spawn(async move { resolver.resolve("inventory", Some(before.revision)).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let directory: &dyn Directory = &client;
    directory
        .set_traffic("inventory", Some(&rules))
        .await
        .unwrap();
    let woken = tokio::time::timeout(Duration::from_secs(3), watching)
        .await
        .expect("the watch wakes on a traffic change")
        .unwrap()
        .unwrap();
    assert_eq!(woken.traffic.as_ref(), Some(&rules));
    assert_eq!(ids(&woken), ["inventory-1"]);
    let entry = directory.service("inventory").await.unwrap();
    assert_eq!(entry.traffic.as_ref(), Some(&rules));
    let listed = directory.services().await.unwrap();
    assert_eq!(listed[0].traffic.as_ref(), Some(&rules));

    // Rules the registry would refuse are refused here too, and nothing changes.
    let invalid = TrafficPolicy {
        split: BTreeMap::from([("1.0".to_owned(), 0)]),
        ..TrafficPolicy::default()
    };
    let err = directory
        .set_traffic("inventory", Some(&invalid))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("invalid traffic rules"), "{err}");
    assert_eq!(
        directory.service("inventory").await.unwrap().traffic,
        Some(rules)
    );

    directory.set_traffic("inventory", None).await.unwrap();
    assert_eq!(directory.service("inventory").await.unwrap().traffic, None);
    registration.deregister().await;
}

#[tokio::test]
async fn a_killed_instance_vanishes_when_its_lease_runs_out() {
    let Some(etcd) = EtcdServer::start().await else {
        return;
    };
    let url = etcd.url("/flotilla-test");
    let data = tempfile::tempdir().unwrap();
    let log = std::fs::File::create(data.path().join("bus.log")).unwrap();
    // A real service process, registered by the kit's bootstrap from FLOTILLA_DISCOVERY.
    let mut bus = flotilla()
        .args(["run", "bus"])
        .env_remove("FLOTILLA_CONFIG")
        .env("FLOTILLA_DATA_DIR", data.path())
        .env("FLOTILLA_DISCOVERY", &url)
        .env("FLOTILLA_INSECURE_INTERNAL", "1")
        .env("FLOTILLA_LEASE_TTL", "2s")
        .env("FLOTILLA_BUS__LISTEN", "127.0.0.1:0")
        .env("FLOTILLA_BUS__ADMIN_LISTEN", "127.0.0.1:0")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let bus_log = || std::fs::read_to_string(data.path().join("bus.log")).unwrap_or_default();
    let resolver = EtcdResolver::new(etcd.client());
    let pid = bus.id().to_string();
    let registered = until(&resolver, "bus", Duration::from_secs(30), |s| {
        s.instances
            .iter()
            .any(|i| i.metadata.get("pid") == Some(&pid))
    })
    .await;
    let Ok((registered, _)) = registered else {
        let _ = bus.kill();
        panic!("the bus never registered in etcd:\n{}", bus_log());
    };

    // Renewals keep it there well past its TTL, without rewriting it (its `rss_bytes`
    // moves, but a heartbeat must not wake every watcher).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let still = resolver.resolve("bus", None).await.unwrap();
    assert_eq!(still.instances.len(), 1, "{}", bus_log());
    assert_eq!(
        still.revision, registered.revision,
        "rewritten at a heartbeat"
    );

    // The operator's commands read and change the same etcd.
    let cli = |args: &[&str]| {
        let out = flotilla()
            .args(args)
            .env_remove("FLOTILLA_CONFIG")
            .env("FLOTILLA_DATA_DIR", data.path())
            .env("FLOTILLA_DISCOVERY", &url)
            .env("FLOTILLA_INSECURE_INTERNAL", "1")
            .output()
            .unwrap();
        let text = output_text(&out);
        (out.status.success(), text)
    };
    let (_, status) = cli(&["status"]);
    assert!(status.contains(&registered.instances[0].id), "{status}");
    let (set, traffic) = cli(&["traffic", "bus", "--split", "v1=100"]);
    assert!(set && traffic.contains("v1"), "{traffic}");
    let rules = resolver.resolve("bus", None).await.unwrap().traffic;
    assert_eq!(
        rules.map(|r| r.split),
        Some(BTreeMap::from([("v1".into(), 100)]))
    );
    let (cleared, text) = cli(&["traffic", "bus", "--clear"]);
    assert!(cleared, "{text}");

    bus.kill().unwrap();
    bus.wait().unwrap();
    let gone = until(&resolver, "bus", Duration::from_secs(10), |s| {
        s.instances.is_empty()
    })
    .await;
    let (_, took) = gone.unwrap_or_else(|last| panic!("still registered: {last:?}"));
    assert!(
        took < Duration::from_secs(6),
        "took {took:?} for a 2 s lease"
    );
}

#[tokio::test]
async fn a_registration_survives_etcd_restarts_with_and_without_its_data() {
    let Some(mut etcd) = EtcdServer::start().await else {
        return;
    };
    let client = etcd.client();
    let resolver = EtcdResolver::new(client.clone());
    let registration = register(&client, "payments", "payments-1", Duration::from_secs(2)).await;
    let present = |s: &Snapshot| ids(s) == ["payments-1"];

    // Down longer than the lease, then back on the same data: the lease is kept alive
    // again (or replaced) and the instance is there.
    etcd.kill();
    let down: Result<Snapshot, DiscoveryError> = resolver.resolve("payments", None).await;
    assert!(
        matches!(down, Err(DiscoveryError::Backend { .. })),
        "{down:?}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    etcd.spawn().await;
    until(&resolver, "payments", Duration::from_secs(10), present)
        .await
        .unwrap_or_else(|last| panic!("not back: {last:?}\n{}", etcd.log()));
    // And it stays, beyond the lease.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(present(&resolver.resolve("payments", None).await.unwrap()));

    // A fresh etcd on the same address knows nothing of the lease: a new one is granted
    // and the instance written again.
    etcd.kill();
    std::fs::remove_dir_all(etcd.data_dir()).unwrap();
    etcd.spawn().await;
    let (_, took) = until(&resolver, "payments", Duration::from_secs(10), present)
        .await
        .unwrap_or_else(|last| panic!("not back after a wipe: {last:?}\n{}", etcd.log()));
    assert!(took < Duration::from_secs(5), "took {took:?}");

    registration.deregister().await;
    assert!(
        resolver
            .resolve("payments", None)
            .await
            .unwrap()
            .instances
            .is_empty()
    );
}

#[tokio::test]
async fn flotilla_up_runs_the_whole_system_on_etcd_discovery() {
    let Some(etcd) = EtcdServer::start().await else {
        return;
    };
    let url = etcd.url("/flotilla-up");
    // Up only once the gateway serves products from inventory, found through etcd.
    let mut system = System::start_with(&[("FLOTILLA_DISCOVERY", &url)]).await;
    let directory = kit::discovery::directory_from_url(&url).unwrap();
    let names: Vec<String> = directory
        .services()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert!(!names.iter().any(|n| n == "registry"), "{names:?}");
    for name in ["gateway", "auth", "orders", "inventory", "payments", "bus"] {
        assert!(
            names.iter().any(|n| n == name),
            "{name} is not in {names:?}"
        );
    }
    // `status` exits 0 only when every instance is healthy and the gateway is up.
    let status = system.cli(&["status"]);
    assert!(status.contains("gateway"), "{status}");
    // `up` answers a scale once it has started everything; the new instance counts as
    // started once it is in etcd and ready.
    system.cli(&["scale", "inventory", "2"]);
    let inventory = directory.service("inventory").await.unwrap();
    assert_eq!(inventory.instances.len(), 2, "{inventory:?}");
    system.remember_pids().await;

    // A clean stop deregisters every instance at once: nothing waits for its lease.
    let pids = system.pids().to_vec();
    assert!(system.interrupt().success(), "{}", system.logs());
    let left = directory.services().await.unwrap();
    assert!(
        left.is_empty(),
        "still registered after a clean stop: {left:?}"
    );
    for pid in pids {
        assert!(
            !crate::harness::alive(pid),
            "process {pid} survived the stop"
        );
    }
}
