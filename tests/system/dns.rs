//! Discovery as the Kubernetes manifests configure it: every service on the same ports
//! at its own address, found through DNS (`dns://…&grpc_port=…&admin_port=…`), no
//! registry. A small DNS server (dnsmasq) answers for the services' names, each
//! service runs as `flotilla run <name>` on its own loopback address, and an order
//! placed through the gateway is confirmed. Skipped loudly without dnsmasq, unless
//! `FLOTILLA_REQUIRE_INFRA=1`.

use std::process::{Child, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{flotilla, free_port};

/// The services an order touches, in start order (the embedded bus stands in for NATS).
const SERVICES: &[&str] = &[
    "bus",
    "users",
    "auth",
    "inventory",
    "payments",
    "orders",
    "gateway",
];

/// Processes that are killed when the test ends, however it ends.
struct Processes(Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn dnsmasq() -> Option<std::path::PathBuf> {
    ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq"]
        .iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.exists())
}

#[tokio::test]
async fn services_found_through_dns_take_an_order() {
    let Some(dnsmasq) = dnsmasq() else {
        assert!(
            std::env::var("FLOTILLA_REQUIRE_INFRA").as_deref() != Ok("1"),
            "dnsmasq is required (FLOTILLA_REQUIRE_INFRA=1); install the dnsmasq-base package"
        );
        eprintln!("SKIPPED: no dnsmasq; the DNS discovery test needs it (dnsmasq-base)");
        return;
    };
    // A /24 of loopback of our own, so parallel runs do not collide.
    let net = {
        use rand::RngExt;
        let mut rng = rand::rng();
        format!(
            "127.{}.{}",
            rng.random_range(100..200),
            rng.random_range(0..250)
        )
    };
    let addr = |i: usize| format!("{net}.{}", 10 + i);
    let data = tempfile::tempdir().unwrap();
    let dns_port = free_port();
    let mut dns = std::process::Command::new(dnsmasq);
    dns.args([
        "--keep-in-foreground",
        "--no-resolv",
        "--no-hosts",
        "--bind-interfaces",
        "--listen-address=127.0.0.1",
    ])
    .arg(format!("--port={dns_port}"))
    .arg(format!(
        "--pid-file={}",
        data.path().join("dnsmasq.pid").display()
    ))
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    for (i, name) in SERVICES.iter().enumerate() {
        dns.arg(format!("--address=/{name}.flotilla.test/{}", addr(i)));
    }
    let mut processes = Processes(vec![dns.spawn().expect("dnsmasq starts")]);

    let discovery = format!(
        "dns://127.0.0.1:{dns_port}/?domain=flotilla.test&port=8080&grpc_port=9090&admin_port=9100&refresh=1s"
    );
    let bus = SERVICES.iter().position(|s| *s == "bus").unwrap();
    let logs = || {
        SERVICES
            .iter()
            .map(|s| {
                let text = std::fs::read_to_string(data.path().join(format!("{s}.log")))
                    .unwrap_or_default();
                format!("--- {s}\n{text}")
            })
            .collect::<String>()
    };
    kit::security::mtls::install_crypto_provider();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    // One at a time, each ready before the next, as the Deployments' readiness gates
    // them (the gateway fetches auth's keys at start).
    for (i, name) in SERVICES.iter().enumerate() {
        let upper = name.to_uppercase();
        let dir = data.path().join(name);
        let log = std::fs::File::create(data.path().join(format!("{name}.log"))).unwrap();
        let child = flotilla()
            .args(["run", name])
            .env_remove("FLOTILLA_CONFIG")
            .env("FLOTILLA_DATA_DIR", &dir)
            .env("FLOTILLA_DISCOVERY", &discovery)
            .env("FLOTILLA_INSECURE_INTERNAL", "1")
            .env("FLOTILLA_BUS", format!("bus://{}:8080", addr(bus)))
            .env("FLOTILLA_INVENTORY__SEED", "true")
            .env(
                format!("FLOTILLA_{upper}__LISTEN"),
                format!("{}:8080", addr(i)),
            )
            .env(
                format!("FLOTILLA_{upper}__ADMIN_LISTEN"),
                format!("{}:9100", addr(i)),
            )
            .env(
                format!("FLOTILLA_{upper}__GRPC_LISTEN"),
                format!("{}:9090", addr(i)),
            )
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        processes.0.push(child);
        let url = format!("http://{}:9100/readyz", addr(i));
        let mut ready = false;
        for _ in 0..300 {
            if http
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(ready, "{name} never became ready:\n{}", logs());
    }

    let gateway = format!("http://{}:8080", addr(SERVICES.len() - 1));
    let post = |path: &str, body: Value, token: Option<&str>| {
        let mut req = http.post(format!("{gateway}{path}")).json(&body);
        if let Some(t) = token {
            req = req
                .bearer_auth(t)
                .header("idempotency-key", uuid_like(path));
        }
        req.send()
    };
    // Registering creates the profile in users: auth finds users' gRPC address by DNS.
    let email = "dns@example.com";
    let password = "a long enough password";
    let res = post(
        "/api/auth/register",
        json!({"email": email, "password": password, "name": "Dee"}),
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        res.status(),
        201,
        "{}\n{}",
        res.text().await.unwrap(),
        logs()
    );
    let login: Value = post(
        "/api/auth/login",
        json!({"email": email, "password": password}),
        None,
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let token = login["access_token"].as_str().expect("an access token");

    // Orders reaches inventory and payments over gRPC at the addresses DNS gave.
    let res = post(
        "/api/orders",
        json!({
            "items": [{"sku": "FLT-BOAT-002", "quantity": 1}],
            "payment": {"card_number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"}
        }),
        Some(token),
    )
    .await
    .unwrap();
    assert_eq!(
        res.status(),
        202,
        "{}\n{}",
        res.text().await.unwrap(),
        logs()
    );
    let id = res.json::<Value>().await.unwrap()["order_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut status = Value::Null;
    for _ in 0..200 {
        let order: Value = http
            .get(format!("{gateway}/api/orders/{id}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        status = order["status"].clone();
        if status != "PENDING" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, "CONFIRMED", "{}", logs());
}

/// An idempotency key unique to this run.
fn uuid_like(path: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("dns-test-{nanos}-{}", path.len())
}
