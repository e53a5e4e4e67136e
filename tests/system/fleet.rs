//! Scaling, rollouts and traffic rules on a running system: `flotilla scale`,
//! `flotilla rollout` (rolling and canary) and `flotilla traffic`, with clients
//! hitting the gateway the whole time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{System, flotilla, output_text};

const PRODUCT: &str = "/api/products/FLT-BOAT-001";
const SKU_ROUTE: &str = "route=\"/api/products/{sku}\"";

/// Logs in as the administrator `up` seeded; returns an access token.
async fn admin_token(sys: &System) -> String {
    let creds: Value = serde_json::from_slice(
        &std::fs::read(sys.data.path().join("admin-credentials.json")).unwrap(),
    )
    .unwrap();
    let res = sys
        .http
        .post(format!("{}/api/auth/login", sys.gateway))
        .json(&json!({"email": creds["email"], "password": creds["password"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

/// Healthy instances of `service`, as (version, admin address).
async fn healthy(sys: &System, service: &str) -> Vec<(String, String)> {
    sys.instances(service)
        .await
        .into_iter()
        .filter(|i| i["healthy"] == true)
        .map(|i| {
            (
                i["metadata"]["version"].as_str().unwrap_or("").to_owned(),
                i["metadata"]["admin_addr"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
            )
        })
        .collect()
}

/// Waits until `service` has exactly the healthy versions `want` (sorted).
async fn wait_versions(sys: &System, service: &str, want: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut got: Vec<String> = healthy(sys, service)
            .await
            .into_iter()
            .map(|(v, _)| v)
            .collect();
        got.sort();
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{service}: {got:?}, expected {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Product reads each instance answered, per version.
async fn reads_by_version(sys: &System, service: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for (version, admin) in healthy(sys, service).await {
        let n = sys
            .counter_at(&format!("http://{admin}"), "http_requests_total", SKU_ROUTE)
            .await;
        *out.entry(version).or_default() += n;
    }
    out
}

fn diff(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>, v: &str) -> f64 {
    after.get(v).copied().unwrap_or(0.0) - before.get(v).copied().unwrap_or(0.0)
}

/// What the clients saw: answers by status, and transport errors.
#[derive(Default)]
struct Seen {
    statuses: BTreeMap<u16, usize>,
    errors: Vec<String>,
    accepted: Vec<String>,
}

/// Clients that browse and order through the gateway until `stop`.
fn load(sys: &System, token: String, stop: Arc<AtomicBool>) -> Vec<tokio::task::JoinHandle<Seen>> {
    (0..4)
        .map(|c| {
            let (http, gateway, token, stop) =
                (sys.http.clone(), sys.gateway.clone(), token.clone(), stop.clone());
            tokio::spawn(async move {
                let mut seen = Seen::default();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let res = if c < 2 && n % 2 == 0 {
                        let card = if n % 8 == 0 { "4000000000000002" } else { "4242424242424242" };
                        http.post(format!("{gateway}/api/orders"))
                            .bearer_auth(&token)
                            .header("idempotency-key", format!("fleet-{c}-{n}"))
                            .json(&json!({"items": [{"sku": "FLT-BOAT-001", "quantity": 1}],
                                "payment": {"card_number": card, "exp_month": 12, "exp_year": 2099, "cvc": "123"}}))
                            .send()
                            .await
                    } else {
                        http.get(format!("{gateway}{PRODUCT}"))
                            .header("cache-control", "no-cache")
                            .send()
                            .await
                    };
                    match res {
                        Ok(r) => {
                            let status = r.status().as_u16();
                            *seen.statuses.entry(status).or_default() += 1;
                            if status == 202
                                && let Ok(v) = r.json::<Value>().await
                                && let Some(id) = v["order_id"].as_str()
                            {
                                seen.accepted.push(id.to_owned());
                            }
                        }
                        Err(e) => seen.errors.push(e.to_string()),
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                seen
            })
        })
        .collect()
}

// The CLI runs blocking; the clients need threads of their own meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_and_rolling_out_under_load_fail_no_request() {
    // No retries anywhere: every request must find an instance that serves it to the
    // end, so only draining (deregister, let clients hear, finish in-flight) passes.
    let sys =
        System::start_with(&[("FLOTILLA_RESILIENCE__DEFAULT__RETRY__MAX_ATTEMPTS", "1")]).await;
    let token = admin_token(&sys).await;
    let base = healthy(&sys, "orders").await[0].0.clone();
    // Slow answers from inventory keep requests in flight in inventory and in orders
    // (which prices each order there before it answers) whenever an instance is
    // stopped, so a stop that does not drain shows up as failed requests.
    sys.cli(&["chaos", "fault", "inventory", "--delay", "100ms"]);
    // Enough stock that no order is refused for want of it.
    let res = sys
        .http
        .put(format!("{}/api/products/FLT-BOAT-001/stock", sys.gateway))
        .bearer_auth(&token)
        .json(&json!({"stock": 100_000}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load(&sys, token.clone(), stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;

    let out = sys.cli(&["scale", "inventory", "3"]);
    assert!(out.contains("3 instance(s)"), "{out}");
    assert_eq!(healthy(&sys, "inventory").await.len(), 3);
    tokio::time::sleep(Duration::from_millis(500)).await;
    sys.cli(&["scale", "inventory", "1"]);
    wait_versions(&sys, "inventory", &[base.as_str()]).await;

    sys.cli(&["scale", "orders", "2"]);
    let out = sys.cli(&["rollout", "orders", "--version", "v2"]);
    assert!(out.contains("rolled out version v2"), "{out}");
    wait_versions(&sys, "orders", &["v2", "v2"]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let out = sys.cli(&[
        "rollout",
        "orders",
        "--undo",
        "--max-surge",
        "0",
        "--max-unavailable",
        "1",
    ]);
    assert!(out.contains(&format!("rolled out version {base}")), "{out}");
    wait_versions(&sys, "orders", &[base.as_str(), base.as_str()]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    stop.store(true, Ordering::Relaxed);
    let mut seen = Seen::default();
    for c in clients {
        let s = c.await.unwrap();
        for (k, v) in s.statuses {
            *seen.statuses.entry(k).or_default() += v;
        }
        seen.errors.extend(s.errors);
        seen.accepted.extend(s.accepted);
    }
    let total: usize = seen.statuses.values().sum();
    assert!(total > 100, "too few requests: {:?}", seen.statuses);
    assert!(
        seen.errors.is_empty(),
        "connection errors: {:?}",
        seen.errors
    );
    assert!(
        seen.statuses.keys().all(|s| *s < 500),
        "failed requests while scaling and rolling out: {:?}",
        seen.statuses
    );
    assert!(
        !seen.accepted.is_empty(),
        "no order was accepted: {:?}",
        seen.statuses
    );

    // Every order accepted during the rollouts still ends, and none is cancelled
    // because an instance was replaced under it (the card lives only in the memory of
    // the instance that took the order, so that one must finish the saga).
    for id in &seen.accepted {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let o: Value = sys
                .http
                .get(format!("{}/api/orders/{id}", sys.gateway))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if o["status"] == "CONFIRMED" || o["status"] == "CANCELLED" {
                let steps = o["steps"].to_string();
                assert!(
                    !steps.contains("payment_details_lost"),
                    "order {id} was cancelled by a rollout: {o}"
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "order {id} stuck: {o}\norders' warnings:\n{}",
                warnings(&sys, "orders")
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test]
async fn a_rollout_whose_instance_never_gets_ready_leaves_the_old_one_serving() {
    let sys = System::start().await;
    let base = healthy(&sys, "inventory").await[0].0.clone();
    let mut cmd = flotilla();
    sys.env(&mut cmd);
    let out = cmd
        .args([
            "rollout",
            "inventory",
            "--binary",
            "/bin/false",
            "--version",
            "broken",
        ])
        .output()
        .unwrap();
    let text = output_text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("keep serving"), "{text}");
    wait_versions(&sys, "inventory", &[base.as_str()]).await;
    let res = sys
        .http
        .get(format!("{}{PRODUCT}", sys.gateway))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn a_split_sends_its_share_headers_pick_a_version_and_users_stick() {
    // Counting every request needs them all let through.
    let sys = System::start_with(&[
        ("FLOTILLA_VERSION", "stable"),
        ("FLOTILLA_GATEWAY__RATE_LIMIT__ENABLED", "false"),
        // `up --replicas inventory=2`: the split is by version, not by instance.
        ("FLOTILLA_REPLICAS", "inventory=2"),
    ])
    .await;
    let token = admin_token(&sys).await;
    wait_versions(&sys, "inventory", &["stable", "stable"]).await;
    sys.cli(&["scale", "inventory", "1", "--version", "canary"]);
    wait_versions(&sys, "inventory", &["canary", "stable", "stable"]).await;
    let shown = sys.cli(&[
        "traffic",
        "inventory",
        "--split",
        "stable=90,canary=10",
        "--sticky",
    ]);
    assert!(
        shown.contains("90.0%") && shown.contains("10.0%"),
        "{shown}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;

    let url = format!("{}{PRODUCT}", sys.gateway);
    // 2,000 anonymous reads: the canary's share is 10 ± 2 %.
    let before = reads_by_version(&sys, "inventory").await;
    read(&sys, &url, 2000, None, None).await;
    let after = reads_by_version(&sys, "inventory").await;
    let (c, s) = (
        diff(&before, &after, "canary"),
        diff(&before, &after, "stable"),
    );
    assert_eq!(c + s, 2000.0, "{before:?} → {after:?}");
    let share = c / (c + s);
    assert!(
        (0.08..=0.12).contains(&share),
        "canary share {share} ({c} of {})",
        c + s
    );

    // Marked requests all go to the canary.
    let before = after;
    read(&sys, &url, 50, Some("canary"), None).await;
    let after = reads_by_version(&sys, "inventory").await;
    assert_eq!(diff(&before, &after, "canary"), 50.0);
    assert_eq!(diff(&before, &after, "stable"), 0.0);

    // A signed-in user stays on one version (an even split, so chance would flip).
    sys.cli(&[
        "traffic",
        "inventory",
        "--split",
        "stable=50,canary=50",
        "--sticky",
    ]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = reads_by_version(&sys, "inventory").await;
    read(&sys, &url, 40, None, Some(&token)).await;
    let after = reads_by_version(&sys, "inventory").await;
    let (c, s) = (
        diff(&before, &after, "canary"),
        diff(&before, &after, "stable"),
    );
    assert!(
        (c, s) == (40.0, 0.0) || (c, s) == (0.0, 40.0),
        "the user flipped: canary {c}, stable {s}"
    );

    // Only the operator may reroute: a service's certificate is refused.
    let res = sys
        .as_gateway
        .put(format!("{}/v1/services/inventory/traffic", sys.registry))
        .json(&json!({"split": {"canary": 100}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);

    let cleared = sys.cli(&["traffic", "inventory", "--clear"]);
    assert!(cleared.contains("removed"), "{cleared}");
}

// The CLI runs blocking; the clients need threads of their own meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_canary_is_rolled_back_at_its_first_step() {
    let sys = System::start_with(&[
        ("FLOTILLA_VERSION", "stable"),
        ("FLOTILLA_GATEWAY__RATE_LIMIT__ENABLED", "false"),
    ])
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let token = admin_token(&sys).await;
    let clients = load(&sys, token, stop.clone());

    // The canary starts; once it is up, half of what it answers fails.
    let mut cmd = flotilla();
    sys.env(&mut cmd);
    let rollout = cmd
        .args([
            "rollout",
            "inventory",
            "--canary",
            "--version",
            "canary",
            "--steps",
            "20,100",
            "--interval",
            "4s",
            "--max-error-rate",
            "1%",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_versions(&sys, "inventory", &["canary", "stable"]).await;
    sys.cli(&[
        "chaos",
        "fault",
        "inventory",
        "--version",
        "canary",
        "--abort",
        "500",
        "--percent",
        "50",
    ]);
    let out = rollout.wait_with_output().unwrap();
    let text = output_text(&out);
    assert!(!out.status.success(), "the canary was promoted:\n{text}");
    assert!(
        text.contains("rolled back inventory canary at 20%"),
        "{text}"
    );
    assert!(text.contains("5xx rate"), "{text}");
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }

    // All traffic is on stable again: no rule, no canary.
    wait_versions(&sys, "inventory", &["stable"]).await;
    let shown = sys.cli(&["traffic", "inventory"]);
    assert!(shown.contains("rules    none"), "{shown}");
    let before = reads_by_version(&sys, "inventory").await;
    read(&sys, &format!("{}{PRODUCT}", sys.gateway), 20, None, None).await;
    let after = reads_by_version(&sys, "inventory").await;
    assert_eq!(diff(&before, &after, "stable"), 20.0);
}

/// The last warnings and errors in the logs of every instance of `service`.
fn warnings(sys: &System, service: &str) -> String {
    let mut lines = Vec::new();
    for f in std::fs::read_dir(sys.data.path().join("logs"))
        .unwrap()
        .flatten()
    {
        let name = f.file_name().to_string_lossy().into_owned();
        if name.starts_with(service) {
            let text = std::fs::read_to_string(f.path()).unwrap_or_default();
            lines.extend(
                text.lines()
                    .filter(|l| l.contains("\"WARN\"") || l.contains("\"ERROR\""))
                    .map(|l| format!("{name}: {l}")),
            );
        }
    }
    let skip = lines.len().saturating_sub(40);
    lines[skip..].join("\n")
}

/// `n` fresh reads of `url` by 8 clients at once, each answered 200.
async fn read(sys: &System, url: &str, n: usize, version: Option<&str>, bearer: Option<&str>) {
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let (http, url) = (sys.http.clone(), url.to_owned());
            let (version, bearer) = (version.map(str::to_owned), bearer.map(str::to_owned));
            tokio::spawn(async move {
                for _ in (c..n).step_by(8) {
                    let mut req = http.get(&url).header("cache-control", "no-cache");
                    if let Some(v) = &version {
                        req = req.header("x-flotilla-version", v);
                    }
                    if let Some(t) = &bearer {
                        req = req.bearer_auth(t);
                    }
                    let res = req.send().await.unwrap();
                    assert_eq!(res.status(), 200);
                }
            })
        })
        .collect();
    for c in clients {
        c.await.unwrap();
    }
}
