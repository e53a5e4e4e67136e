//! The registry's HTTP behaviour, against the real service on a free port.

use std::time::Duration;

use kit::config::Config;
use kit::discovery::registry::{RegisterRequest, RegistryClient, ServiceEntry};
use kit::service::Context;
use serde_json::{Value, json};

struct TestRegistry {
    base: String,
    client: RegistryClient,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
    stop: kit::service::Running,
}

async fn spawn_registry_in(dir: tempfile::TempDir) -> TestRegistry {
    let config = Config::for_tests(dir.path()).insecure_internal().merged(
        "registry",
        json!({"listen": "127.0.0.1:0", "reap_interval": "50ms"}),
    );
    let ctx = Context::new("registry", config).unwrap();
    let service = registry::build(ctx).await.unwrap();
    let base = format!("http://{}", service.public_addr());
    let running = service.spawn();
    TestRegistry {
        client: RegistryClient::new(base.clone()),
        base,
        http: reqwest::Client::new(),
        _dir: dir,
        stop: running,
    }
}

fn req(addr: &str, ttl_ms: u64) -> RegisterRequest {
    RegisterRequest {
        addr: addr.into(),
        ttl_ms,
        metadata: [("version".to_owned(), "1.0".to_owned())].into(),
    }
}

#[tokio::test]
async fn register_list_and_deregister() {
    let r = spawn_registry_in(tempfile::tempdir().unwrap()).await;
    r.client
        .register("inventory", "inv-1", &req("127.0.0.1:9001", 10_000))
        .await
        .unwrap();
    r.client
        .register("inventory", "inv-2", &req("127.0.0.1:9002", 10_000))
        .await
        .unwrap();

    let all: Value = r
        .http
        .get(format!("{}/v1/services", r.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(all[0]["name"], "inventory");
    assert_eq!(all[0]["instances"].as_array().unwrap().len(), 2);
    assert_eq!(all[0]["instances"][0]["healthy"], true);
    assert_eq!(all[0]["instances"][0]["metadata"]["version"], "1.0");

    r.client.deregister("inventory", "inv-1").await.unwrap();
    let one = r.client.service("inventory", None).await.unwrap();
    assert_eq!(one.instances.len(), 1);
    assert_eq!(one.instances[0].id, "inv-2");
    r.stop.stop().await;
}

#[tokio::test]
async fn watch_returns_when_the_set_changes() {
    let r = spawn_registry_in(tempfile::tempdir().unwrap()).await;
    let first = r.client.service("orders", None).await.unwrap();
    let client = r.client.clone();
    let watcher = tokio::spawn(async move { client.service("orders", Some(first.index)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!watcher.is_finished(), "a watch waits for a change");
    r.client
        .register("orders", "o-1", &req("127.0.0.1:9100", 10_000))
        .await
        .unwrap();
    let changed: ServiceEntry = tokio::time::timeout(Duration::from_secs(2), watcher)
        .await
        .expect("watch answered on change")
        .unwrap()
        .unwrap();
    assert_eq!(changed.instances.len(), 1);
    assert!(changed.index > first.index);
    r.stop.stop().await;
}

#[tokio::test]
async fn instances_that_stop_heartbeating_expire() {
    let r = spawn_registry_in(tempfile::tempdir().unwrap()).await;
    r.client
        .register("inventory", "dead", &req("127.0.0.1:9001", 300))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(450)).await;
    let s = r.client.service("inventory", None).await.unwrap();
    assert!(!s.instances[0].healthy, "lease ran out");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let s = r.client.service("inventory", None).await.unwrap();
    assert!(s.instances.is_empty(), "removed one TTL later");
    r.stop.stop().await;
}

#[tokio::test]
async fn restart_restores_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    let r = spawn_registry_in(dir).await;
    r.client
        .register("users", "u-1", &req("127.0.0.1:9200", 10_000))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let TestRegistry { stop, _dir, .. } = r;
    stop.stop().await;
    let snapshot = std::fs::read_to_string(path.join("registry/snapshot.json")).unwrap();
    assert!(snapshot.contains("u-1"));

    let again = spawn_registry_in(_dir).await;
    let s = again.client.service("users", None).await.unwrap();
    assert_eq!(s.instances.len(), 1, "known instances survive a restart");
    assert!(s.instances[0].healthy);
    again.stop.stop().await;
}

#[tokio::test]
async fn bad_input_gets_problem_documents() {
    let r = spawn_registry_in(tempfile::tempdir().unwrap()).await;
    let put = |path: &str, body: Value| r.http.put(format!("{}{path}", r.base)).json(&body).send();
    let res = put(
        "/v1/services/inventory/instances/x",
        json!({"addr": "nope", "ttl_ms": 1000}),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 422);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["errors"][0]["field"], "addr");

    let res = put(
        "/v1/services/Bad_Name/instances/x",
        json!({"addr": "h:1", "ttl_ms": 1000}),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 422);
    let res = put(
        "/v1/services/inv/instances/x",
        json!({"addr": "h:1", "ttl_ms": 10}),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 422);

    let res = r
        .http
        .put(format!("{}/v1/services/inv/instances/x", r.base))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let res = r
        .http
        .put(format!("{}/v1/services/inv/instances/x", r.base))
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 415);
    let res = r
        .http
        .get(format!("{}/v1/services/inv?index=1&wait=soon", r.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
    let res = r.http.get(format!("{}/nope", r.base)).send().await.unwrap();
    assert_eq!(res.status(), 404);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["instance"], "/nope");
    let res = r
        .http
        .post(format!("{}/v1/services", r.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);
    r.stop.stop().await;
}

#[tokio::test]
async fn traffic_rules_are_validated_served_with_the_service_and_removed() {
    let r = spawn_registry_in(tempfile::tempdir().unwrap()).await;
    let url = format!("{}/v1/services/inventory/traffic", r.base);
    let bad = r
        .http
        .put(&url)
        .json(&json!({"split": {"stable": 0}}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);
    assert_eq!(bad.headers()["content-type"], "application/problem+json");
    let unknown = r
        .http
        .put(&url)
        .json(&json!({"split": {"stable": 1}, "weights": 3}))
        .send()
        .await
        .unwrap();
    assert!(unknown.status().is_client_error(), "{}", unknown.status());

    let rules = json!({"split": {"stable": 90, "canary": 10}, "sticky": true});
    let ok = r.http.put(&url).json(&rules).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    let entry: ServiceEntry = r.client.service("inventory", None).await.unwrap();
    let traffic = entry.traffic.expect("served with the service");
    assert_eq!(traffic.split["canary"], 10);
    assert!(traffic.sticky);
    assert_eq!(traffic.header, "x-flotilla-version");

    // A watcher wakes when the rules change.
    let watch = {
        let client = r.client.clone();
        let index = entry.index;
        tokio::spawn(async move { client.service("inventory", Some(index)).await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let gone = r.http.delete(&url).send().await.unwrap();
    assert_eq!(gone.status(), 204);
    let woken = tokio::time::timeout(Duration::from_secs(5), watch)
        .await
        .expect("the watcher woke")
        .unwrap();
    assert_eq!(woken.traffic, None);
    assert_eq!(r.http.get(&url).send().await.unwrap().status(), 404);
}
