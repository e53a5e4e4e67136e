//! The dashboard end to end: an order placed through the gateway is one trace in the
//! dashboard's API with spans from gateway, orders, inventory, payments and an event
//! consumer, correctly parented; `flotilla trace` and `flotilla logs` read it; and in
//! headless Chromium the services page shows the fleet healthy and the trace page the
//! order's waterfall (screenshots under `target/test-output/dashboard/`).
//!
//! The browser tests need `/usr/bin/chromium` and `/usr/bin/chromedriver` (Debian
//! `chromium`, `chromium-driver`); without them they skip, unless
//! `FLOTILLA_REQUIRE_INFRA=1`.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{System, flotilla, output_text};

/// The services an order's saga calls synchronously (HTTP and gRPC).
const SYNC: [&str; 4] = ["gateway", "orders", "inventory", "payments"];
/// The services consuming the order's events from the bus.
const CONSUMERS: [&str; 2] = ["notifications", "analytics"];

/// Places an order through the gateway as the seeded administrator and waits until it
/// is CONFIRMED; returns the trace id from the response's `traceparent`.
async fn place_order(sys: &System) -> String {
    let token = &sys.admin_token().await;
    let res = sys
        .http
        .post(format!("{}/api/orders", sys.gateway))
        .bearer_auth(token)
        .header("idempotency-key", uuid::Uuid::new_v4().to_string())
        .json(&json!({"items": [{"sku": "FLT-BOAT-001", "quantity": 1}],
            "payment": {"card_number": "4242424242424242", "exp_month": 12, "exp_year": 2099, "cvc": "123"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let traceparent = res
        .headers()
        .get("traceparent")
        .expect("the gateway answers with its traceparent")
        .to_str()
        .unwrap()
        .to_owned();
    let trace_id = traceparent
        .split('-')
        .nth(1)
        .filter(|t| t.len() == 32)
        .unwrap_or_else(|| panic!("a W3C traceparent: {traceparent}"))
        .to_owned();
    let order = res.json::<Value>().await.unwrap()["order_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let o = json_of(
            sys.http
                .get(format!("{}/api/orders/{order}", sys.gateway))
                .bearer_auth(token),
        )
        .await;
        if o["status"] == "CONFIRMED" {
            break;
        }
        assert_ne!(o["status"], "CANCELLED", "{o:#}");
        assert!(
            Instant::now() < deadline,
            "order not confirmed in 30 s: {o:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    trace_id
}

/// The JSON body of a request's answer.
async fn json_of(req: reqwest::RequestBuilder) -> Value {
    req.send().await.unwrap().json().await.unwrap()
}

/// The trace's services, for messages.
fn services_of(trace: &Value) -> BTreeSet<String> {
    trace["spans"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["service"].as_str().map(str::to_owned))
        .collect()
}

/// Polls the dashboard until the trace holds spans of every synchronous service and of
/// at least one consumer.
async fn complete_trace(sys: &System, trace_id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(45);
    let mut last = Value::Null;
    loop {
        if let Ok(res) = sys
            .http
            .get(format!("{}/api/traces/{trace_id}", sys.dashboard))
            .send()
            .await
            && res.status() == 200
        {
            last = res.json().await.unwrap();
            let services = services_of(&last);
            if SYNC.iter().all(|s| services.contains(*s))
                && CONSUMERS.iter().any(|s| services.contains(*s))
            {
                return last;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the dashboard has no complete trace {trace_id} in 45 s: services {:?}, want {SYNC:?} \
             and one of {CONSUMERS:?}\n{last:#}\n{}",
            services_of(&last),
            sys.logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn an_order_is_one_trace_across_the_fleet() {
    let sys = System::start_traced().await;
    let trace_id = place_order(&sys).await;
    let trace = complete_trace(&sys, &trace_id).await;

    assert_eq!(trace["trace_id"], trace_id.as_str());
    let spans = trace["spans"].as_array().unwrap();
    let by_id: HashMap<&str, &Value> = spans
        .iter()
        .map(|s| (s["span_id"].as_str().unwrap(), s))
        .collect();
    assert_eq!(by_id.len(), spans.len(), "span ids are unique");
    let roots: Vec<&Value> = spans
        .iter()
        .filter(|s| s["parent_span_id"].is_null())
        .collect();
    assert_eq!(roots.len(), 1, "one root: {roots:#?}");
    let root = roots[0];
    assert_eq!(root["service"], "gateway", "the gateway's span is the root");
    assert_eq!(
        root["name"], "POST /api/orders",
        "the root is named by the gateway's route, not its catch-all"
    );
    for s in spans {
        if let Some(parent) = s["parent_span_id"].as_str() {
            assert!(
                by_id.contains_key(parent),
                "the parent of {} {} ({parent}) is in the trace",
                s["service"],
                s["name"]
            );
        }
    }
    // Database, gRPC and outbound calls are client spans with the attributes of
    // OpenTelemetry's conventions.
    let span_of = |service: &str, name: &str| {
        spans
            .iter()
            .find(|s| s["service"] == service && s["name"] == name)
            .unwrap_or_else(|| panic!("no {service} span {name:?} in {spans:#?}"))
    };
    let insert = span_of("payments", "INSERT payments");
    assert_eq!(insert["kind"], "client");
    assert_eq!(insert["attributes"]["db.system.name"], "sqlite");
    assert_eq!(insert["attributes"]["db.collection.name"], "payments");
    let provider = span_of("payments", "provider authorize");
    assert_eq!(provider["kind"], "client");
    assert_eq!(provider["attributes"]["peer.service"], "simulated-provider");
    let rpc = span_of("orders", "flotilla.payments.v1.Payments/Authorize");
    assert_eq!(rpc["kind"], "client");
    assert_eq!(rpc["attributes"]["rpc.system"], "grpc");
    assert_eq!(
        span_of("payments", "flotilla.payments.v1.Payments/Authorize")["parent_span_id"],
        rpc["span_id"],
        "the server span of a gRPC call is a child of its client span"
    );

    // A consumer's span descends, through the saga's calls and the bus, from the root.
    let consumer = spans
        .iter()
        .find(|s| CONSUMERS.contains(&s["service"].as_str().unwrap()))
        .unwrap();
    let mut at = consumer;
    let mut path = vec![format!("{} {}", at["service"], at["name"])];
    while let Some(parent) = at["parent_span_id"].as_str() {
        at = by_id[parent];
        path.push(format!("{} {}", at["service"], at["name"]));
        assert!(path.len() <= spans.len(), "a cycle of parents: {path:?}");
    }
    assert_eq!(at["span_id"], root["span_id"], "ancestry: {path:?}");
    for (name, s) in spans.iter().map(|s| (s["name"].as_str().unwrap(), s)) {
        let offset = s["offset_ms"].as_f64().unwrap();
        assert!(offset >= 0.0, "{name} starts within the trace");
        assert!(s["duration_ms"].as_f64().unwrap() >= 0.0, "{name}");
    }

    // The trace list finds it by service and route.
    let list = json_of(sys.http.get(format!(
        "{}/api/traces?service=payments&route=%2Fapi%2Forders",
        sys.dashboard
    )))
    .await;
    assert!(
        list["traces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["trace_id"] == trace_id.as_str()),
        "{list:#}"
    );

    // `flotilla trace` prints its waterfall: every service, the root first.
    let out = sys.cli(&["trace", &trace_id, "--width", "140"]);
    for service in SYNC {
        assert!(out.contains(service), "{service} in\n{out}");
    }
    let first_span = out.lines().nth(2).unwrap_or_default();
    assert!(first_span.starts_with("gateway "), "{out}");
    println!("{out}");
    let mut cmd = flotilla();
    sys.env(&mut cmd);
    let unknown = cmd
        .args(["trace", "00000000000000000000000000000001"])
        .output()
        .unwrap();
    assert!(!unknown.status.success());
    assert!(
        output_text(&unknown).contains("has no trace"),
        "{}",
        output_text(&unknown)
    );

    // `flotilla logs --trace` shows only that trace's records.
    let out = sys.cli(&["logs", "--trace", &trace_id, "--json", "--limit", "1000"]);
    for line in out.lines() {
        let r: Value = serde_json::from_str(line).unwrap();
        assert_eq!(r["trace_id"], trace_id.as_str(), "{line}");
    }
    println!("{} log records of the trace", out.lines().count());
}

#[tokio::test]
async fn the_browser_shows_the_fleet_healthy_and_the_orders_waterfall() {
    let Some(browser) = webdriver::Browser::start().await else {
        return;
    };
    let out = output_dir();
    let sys = System::start_traced().await;
    let trace_id = place_order(&sys).await;
    complete_trace(&sys, &trace_id).await;

    // Services: every service in discovery is listed, each instance healthy.
    let registered: BTreeSet<String> =
        json_of(sys.operator.get(format!("{}/v1/services", sys.registry)))
            .await
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| !s["instances"].as_array().unwrap().is_empty())
            .map(|s| s["name"].as_str().unwrap().to_owned())
            .collect();
    assert!(registered.len() >= 8, "{registered:?}");
    browser.goto(&format!("{}/services", sys.dashboard)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen: Vec<(String, String, String)>;
    loop {
        seen = Vec::new();
        for row in browser.find_all("[data-testid=service-row]").await {
            seen.push((
                browser.attr(&row, "data-service").await.unwrap_or_default(),
                browser.attr(&row, "data-healthy").await.unwrap_or_default(),
                browser.text(&row).await,
            ));
        }
        let listed: BTreeSet<String> = seen.iter().map(|r| r.0.clone()).collect();
        if registered.is_subset(&listed) && seen.iter().all(|r| r.1 == "true") {
            break;
        }
        if Instant::now() > deadline {
            browser.screenshot(&out.join("services.png")).await;
            panic!("the services page does not list {registered:?} all healthy: {seen:#?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for (service, _, text) in &seen {
        assert!(text.contains("healthy"), "{service}: {text}");
    }
    let nav = browser.find("[data-testid=nav] a.active").await;
    assert_eq!(browser.text(&nav).await, "Services");
    browser.screenshot(&out.join("services.png")).await;

    // Trace: the order's waterfall, with spans of every service of the saga.
    browser
        .goto(&format!("{}/traces/{trace_id}", sys.dashboard))
        .await;
    browser.wait("[data-testid=waterfall]").await;
    let mut rows = Vec::new();
    for row in browser.find_all("[data-testid=span-row]").await {
        rows.push((
            browser.attr(&row, "data-service").await.unwrap_or_default(),
            browser.attr(&row, "data-depth").await.unwrap_or_default(),
            row,
        ));
    }
    let services: BTreeSet<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    for s in SYNC {
        assert!(services.contains(s), "{s} in the waterfall: {services:?}");
    }
    assert!(
        CONSUMERS.iter().any(|s| services.contains(s)),
        "a consumer in the waterfall: {services:?}"
    );
    assert_eq!(
        (rows[0].0.as_str(), rows[0].1.as_str()),
        ("gateway", "0"),
        "the root first"
    );
    assert!(rows[1..].iter().all(|r| r.1 != "0"), "one root");
    // Selecting a span opens its details with a link to its logs.
    let payments = &rows.iter().find(|r| r.0 == "payments").unwrap().2;
    browser.click(payments).await;
    let panel = browser.wait("[data-testid=span-panel]").await;
    assert!(browser.text(&panel).await.contains("payments"));
    let link = browser.find("[data-testid=span-logs]").await;
    let href = browser.attr(&link, "href").await.unwrap();
    assert!(
        href.contains(&format!("trace_id={trace_id}")) && href.contains("span_id="),
        "{href}"
    );
    browser.screenshot(&out.join("trace.png")).await;
    browser.quit().await;
}

/// `target/test-output/dashboard/`, created.
fn output_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target directory")
        .join("test-output/dashboard");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A small W3C WebDriver client over chromedriver's HTTP API.
///
/// Written here rather than taken from `fantoccini`: its protocol types come from the
/// `webdriver` crate, which brings a second `http` (0.2) and the ICU 1.x segmenter next
/// to our ICU 2 — a large tree for the seven commands these tests send (new session,
/// navigate, find, attribute, text, click, screenshot), each one JSON request.
mod webdriver {
    use std::os::unix::process::CommandExt as _;
    use std::path::Path;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use base64::Engine as _;
    use serde_json::{Value, json};

    use crate::harness::free_port;

    const CHROMIUM: &str = "/usr/bin/chromium";
    const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
    /// The W3C key of an element reference.
    const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
    /// How long `wait` looks for an element.
    const WAIT: Duration = Duration::from_secs(20);

    /// An element of the current page.
    #[derive(Debug, Clone)]
    pub struct Element(String);

    /// Headless Chromium driven through a chromedriver this value owns.
    pub struct Browser {
        driver: Child,
        http: reqwest::Client,
        session: String,
        _profile: tempfile::TempDir,
    }

    impl Browser {
        /// A new session, or `None` (after saying so) when Chromium is not installed
        /// and `FLOTILLA_REQUIRE_INFRA` is not `1`.
        pub async fn start() -> Option<Self> {
            if !Path::new(CHROMIUM).exists() || !Path::new(CHROMEDRIVER).exists() {
                assert!(
                    std::env::var("FLOTILLA_REQUIRE_INFRA").as_deref() != Ok("1"),
                    "{CHROMIUM} and {CHROMEDRIVER} are required (FLOTILLA_REQUIRE_INFRA=1); \
                     install the chromium and chromium-driver packages"
                );
                eprintln!(
                    "SKIPPED: no {CHROMIUM} or {CHROMEDRIVER}; the browser tests need the \
                     chromium and chromium-driver packages"
                );
                return None;
            }
            let port = free_port();
            // Its own process group: chromedriver and the browsers it starts end together.
            let driver = Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .process_group(0)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("chromedriver starts");
            let profile = tempfile::tempdir().unwrap();
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap();
            let base = format!("http://127.0.0.1:{port}");
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let ready = match http.get(format!("{base}/status")).send().await {
                    Ok(r) => r
                        .json::<Value>()
                        .await
                        .ok()
                        .map(|v| v["value"]["ready"] == true),
                    Err(_) => None,
                };
                if ready == Some(true) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "chromedriver is not ready in 20 s"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let args = [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--window-size=1400,1000",
            ]
            .iter()
            .map(|a| a.to_string())
            .chain([format!("--user-data-dir={}", profile.path().display())])
            .collect::<Vec<_>>();
            let caps = json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
            }}});
            let mut browser = Self {
                driver,
                http,
                session: base,
                _profile: profile,
            };
            let created = browser
                .send(reqwest::Method::POST, "/session", Some(caps))
                .await;
            let id = created["sessionId"]
                .as_str()
                .unwrap_or_else(|| panic!("a WebDriver session: {created}"));
            browser.session = format!("{}/session/{id}", browser.session);
            Some(browser)
        }

        /// One command; panics with WebDriver's error unless it succeeds.
        async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
            let url = format!("{}{path}", self.session);
            let mut req = self.http.request(method, &url);
            if let Some(b) = body {
                req = req.json(&b);
            }
            let res = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
            let ok = res.status().is_success();
            let v: Value = res.json().await.unwrap();
            assert!(ok, "WebDriver {path}: {}", v["value"]);
            v["value"].clone()
        }

        async fn cmd(&self, path: &str, body: Value) -> Value {
            self.send(reqwest::Method::POST, path, Some(body)).await
        }

        pub async fn goto(&self, url: &str) {
            self.cmd("/url", json!({"url": url})).await;
        }

        /// Every element matching the CSS selector, now.
        pub async fn find_all(&self, css: &str) -> Vec<Element> {
            let found = self
                .cmd("/elements", json!({"using": "css selector", "value": css}))
                .await;
            found
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e[ELEMENT].as_str().map(|id| Element(id.to_owned())))
                .collect()
        }

        /// The first element matching the selector, waiting for it to appear.
        pub async fn wait(&self, css: &str) -> Element {
            let deadline = Instant::now() + WAIT;
            loop {
                if let Some(e) = self.find_all(css).await.into_iter().next() {
                    return e;
                }
                assert!(
                    Instant::now() < deadline,
                    "no {css} on the page in {WAIT:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }

        /// The element matching the selector; panics if there is none.
        pub async fn find(&self, css: &str) -> Element {
            self.find_all(css)
                .await
                .into_iter()
                .next()
                .unwrap_or_else(|| panic!("no {css} on the page"))
        }

        async fn get(&self, path: &str) -> Value {
            self.send(reqwest::Method::GET, path, None).await
        }

        pub async fn text(&self, e: &Element) -> String {
            let v = self.get(&format!("/element/{}/text", e.0)).await;
            v.as_str().unwrap_or_default().to_owned()
        }

        /// The element's attribute (or property, as WebDriver defines it).
        pub async fn attr(&self, e: &Element, name: &str) -> Option<String> {
            let v = self
                .get(&format!("/element/{}/attribute/{name}", e.0))
                .await;
            v.as_str().map(str::to_owned)
        }

        pub async fn click(&self, e: &Element) {
            self.cmd(&format!("/element/{}/click", e.0), json!({}))
                .await;
        }

        /// Writes a PNG of the viewport to `path` and prints where.
        pub async fn screenshot(&self, path: &Path) {
            let v = self.get("/screenshot").await;
            let png = base64::engine::general_purpose::STANDARD
                .decode(v.as_str().expect("base64 PNG"))
                .unwrap();
            assert!(png.starts_with(b"\x89PNG"), "a PNG");
            std::fs::write(path, png).unwrap();
            println!("screenshot: {}", path.display());
        }

        /// Ends the session (the browser exits); chromedriver stops on drop.
        pub async fn quit(self) {
            self.send(reqwest::Method::DELETE, "", None).await;
        }
    }

    impl Drop for Browser {
        fn drop(&mut self) {
            // The whole group, so a failed test leaves no browser behind.
            let group = nix::unistd::Pid::from_raw(self.driver.id() as i32);
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
            let _ = self.driver.wait();
        }
    }
}
