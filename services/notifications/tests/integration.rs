//! Notifications against a real embedded bus (started in this process), a real store,
//! the maildir, and a real SMTP server (`aiosmtpd`, started by the tests; skipped
//! loudly when python3 or aiosmtpd is missing, unless `FLOTILLA_REQUIRE_INFRA=1`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kit::config::Config;
use kit::discovery::BoxFuture;
use kit::service::{Context, Running};
use kit_events::{Event, EventBus};
use notifications::events::{Backoff, Mailroom, Outcome};
use notifications::mail::{Email, MailError, Maildir, Mailer};
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(20);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An embedded bus service running in this process.
struct TestBus {
    _dir: tempfile::TempDir,
    _running: Running,
    http: String,
    bus: Arc<dyn EventBus>,
}

async fn start_bus() -> TestBus {
    kit::telemetry::init_for_tests();
    let dir = tempfile::tempdir().unwrap();
    let config = Config::for_tests(dir.path())
        .insecure_internal()
        .merged("discovery", "static://")
        .merged("bus", json!({"listen": "127.0.0.1:0"}));
    let service = bus::build(Context::new("bus", config).unwrap())
        .await
        .unwrap();
    let addr = service.public_addr();
    let running = service.spawn();
    let bus = kit_events::connect(&format!("bus://{addr}"), "test")
        .await
        .unwrap();
    TestBus {
        _dir: dir,
        _running: running,
        http: format!("http://{addr}"),
        bus,
    }
}

/// A notifications instance.
struct App {
    base: String,
    admin: String,
    _running: Running,
}

/// Starts notifications on `data` (instances with the same `data` share the store)
/// with `section` merged over quick test defaults.
async fn start_notifications(bus: &TestBus, data: &Path, section: Value) -> App {
    let mut cfg = json!({
        "retry_min": "50ms",
        "retry_max": "400ms",
        "smtp_timeout": "2s",
        "ack_timeout": "5s",
    });
    for (k, v) in section.as_object().unwrap() {
        cfg[k] = v.clone();
    }
    let config = Config::for_tests(data)
        .insecure_internal()
        .merged("discovery", "static://")
        .merged("notifications", cfg);
    let service = notifications::build_with_bus(
        Context::new("notifications", config).unwrap(),
        bus.bus.clone(),
    )
    .await
    .unwrap();
    App {
        base: format!("http://{}", service.public_addr()),
        admin: format!("http://{}", service.admin_addr()),
        _running: service.spawn(),
    }
}

impl App {
    async fn list(&self, user: &str, query: &str) -> (u16, Value) {
        let res = reqwest::Client::new()
            .get(format!("{}/api/notifications{query}", self.base))
            .header("x-flotilla-user-id", user)
            .header("x-flotilla-roles", "customer")
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// Polls until `user` has `n` messages; returns them.
    async fn wait_for(&self, user: &str, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let (status, body) = self.list(user, "?limit=100").await;
            assert_eq!(status, 200, "{body}");
            let items = body["items"].as_array().cloned().unwrap_or_default();
            if items.len() >= n {
                assert_eq!(items.len(), n, "no more than {n}: {body}");
                return items;
            }
            assert!(
                Instant::now() < deadline,
                "{user} has {} of {n} messages",
                items.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn registered(user: &str, email: &str) -> Event {
    Event::new(
        "auth",
        "users.registered",
        json!({"userId": user, "email": email, "name": "Ada", "timestamp": "2026-12-01T10:00:00.000Z"}),
    )
}

fn confirmed(user: &str, order: &str) -> Event {
    Event::new(
        "orders",
        "orders.confirmed",
        json!({"orderId": order, "userId": user, "items": [{"sku": "FLT-BOAT-002", "quantity": 1}],
               "total_cents": 4200, "currency": "EUR", "timestamp": "2026-12-01T10:00:01.000Z"}),
    )
}

/// Asserts the answer to `request` is a `422` problem document.
fn assert_problem(request: &str, status: u16, body: &Value) {
    assert_eq!(status, 422, "{request}: {body}");
    assert!(
        body["type"]
            .as_str()
            .unwrap()
            .starts_with("urn:flotilla:problem:"),
        "{request}: {body}"
    );
}

async fn publish(bus: &TestBus, event: &Event) {
    bus.bus.publish(&event.kind, event).await.unwrap();
}

fn files(dir: &Path) -> Vec<PathBuf> {
    match std::fs::read_dir(dir) {
        Ok(d) => d.flatten().map(|e| e.path()).collect(),
        Err(_) => Vec::new(),
    }
}

#[tokio::test]
async fn without_smtp_each_event_is_one_eml_file_in_the_maildir() {
    let bus = start_bus().await;
    let data = tempfile::tempdir().unwrap();
    let app = start_notifications(&bus, data.path(), json!({})).await;
    let user = uuid::Uuid::now_v7().to_string();

    // The order may be handled before the registration: it waits for the address.
    let order = confirmed(&user, "o-1");
    publish(&bus, &order).await;
    publish(&bus, &registered(&user, "ada@example.com")).await;
    publish(
        &bus,
        &Event::new("orders", "orders.created", json!({"userId": user})),
    )
    .await;

    let items = app.wait_for(&user, 2).await;
    let kinds: Vec<&str> = items
        .iter()
        .map(|i| i["event_type"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"users.registered") && kinds.contains(&"orders.confirmed"),
        "{kinds:?}"
    );
    let first = &items[0];
    assert_eq!(first["channel"], "email");
    assert_eq!(first["to"], "ada@example.com");
    for key in ["id", "subject", "body", "sent_at"] {
        assert!(first[key].is_string(), "{key}: {first}");
    }

    let maildir = data.path().join("notifications").join("maildir");
    let new = files(&maildir.join("new"));
    assert_eq!(new.len(), 2, "{new:?}");
    assert!(files(&maildir.join("tmp")).is_empty());
    let eml =
        std::fs::read_to_string(maildir.join("new").join(Maildir::file_name(&order.id))).unwrap();
    assert!(
        eml.contains(&format!(
            "Message-ID: <{}@notifications.flotilla>",
            order.id
        )),
        "{eml}"
    );
    assert!(eml.contains("Subject: Order o-1 confirmed"), "{eml}");
    assert!(eml.contains("42.00 EUR"), "{eml}");

    // Another user sees none of it.
    let (status, body) = app.list("someone-else", "").await;
    assert_eq!(status, 200);
    assert_eq!(body["items"], json!([]));
}

#[tokio::test]
async fn the_list_pages_and_validates_its_query() {
    let bus = start_bus().await;
    let data = tempfile::tempdir().unwrap();
    let app = start_notifications(&bus, data.path(), json!({})).await;
    let user = uuid::Uuid::now_v7().to_string();
    publish(&bus, &registered(&user, "ada@example.com")).await;
    for n in 0..4 {
        publish(&bus, &confirmed(&user, &format!("o-{n}"))).await;
    }
    let all = app.wait_for(&user, 5).await;

    let (_, page1) = app.list(&user, "?limit=2").await;
    assert_eq!(page1["items"].as_array().unwrap().len(), 2);
    let cursor = page1["next_cursor"].as_str().unwrap().to_owned();
    let (_, page2) = app.list(&user, &format!("?limit=2&cursor={cursor}")).await;
    let (_, page3) = app
        .list(
            &user,
            &format!("?limit=2&cursor={}", page2["next_cursor"].as_str().unwrap()),
        )
        .await;
    assert_eq!(page3["items"].as_array().unwrap().len(), 1);
    assert_eq!(page3["next_cursor"], Value::Null);
    let paged: Vec<Value> = [&page1, &page2, &page3]
        .iter()
        .flat_map(|p| p["items"].as_array().unwrap().clone())
        .collect();
    assert_eq!(paged, all, "pages add up to the list, newest first");

    for bad in ["?limit=0", "?limit=101", "?limit=x", "?cursor=not-a-cursor"] {
        let (status, body) = app.list(&user, bad).await;
        assert_problem(bad, status, &body);
    }
    let res = reqwest::get(format!("{}/api/notifications", app.base))
        .await
        .unwrap();
    assert_eq!(res.status(), 401, "anonymous callers get nothing");
}

#[tokio::test]
async fn the_admin_inbox_lists_every_handled_event_page_by_page() {
    let bus = start_bus().await;
    let data = tempfile::tempdir().unwrap();
    let app = start_notifications(&bus, data.path(), json!({"group": "mailroom"})).await;
    let user = uuid::Uuid::now_v7().to_string();
    let mut handled = vec![registered(&user, "ada@example.com")];
    handled.extend((0..2).map(|n| confirmed(&user, &format!("o-{n}"))));
    for e in &handled {
        publish(&bus, e).await;
    }
    app.wait_for(&user, 3).await;

    let get = |query: &str| {
        let url = format!("{}/admin/inbox{query}", app.admin);
        async move {
            let res = reqwest::get(url).await.unwrap();
            (res.status().as_u16(), res.json::<Value>().await.unwrap())
        }
    };
    let (status, all) = get("").await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(all["group"], "mailroom", "the group it consumes as");
    let mut want: Vec<String> = handled.iter().map(|e| e.id.clone()).collect();
    want.sort();
    let ids = |page: &Value| -> Vec<String> {
        page["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["event_id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&all), want, "every handled event once, by id");
    assert!(all["events"][0]["handled_ms"].as_i64().unwrap() > 0);
    assert_eq!(all["next"], Value::Null);

    let (_, first) = get("?limit=2").await;
    assert_eq!(ids(&first), want[..2]);
    let next = first["next"].as_str().unwrap().to_owned();
    let (_, rest) = get(&format!("?limit=2&after={next}")).await;
    assert_eq!(ids(&rest), want[2..]);
    assert_eq!(rest["next"], Value::Null);

    for bad in ["?limit=0", "?limit=1001", "?limit=x", "?cursor=1"] {
        let (status, body) = get(bad).await;
        assert_problem(bad, status, &body);
    }
}

/// A mailer that counts what it sends (into a maildir).
#[derive(Debug)]
struct Counting {
    inner: Maildir,
    sent: AtomicUsize,
}

impl Mailer for Counting {
    fn send<'a>(&'a self, email: &'a Email) -> BoxFuture<'a, Result<(), MailError>> {
        Box::pin(async move {
            self.inner.send(email).await?;
            self.sent.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
    }

    fn describe(&self) -> String {
        "counting".into()
    }
}

#[tokio::test]
async fn a_redelivered_event_sends_no_second_email() {
    let bus = start_bus().await;
    let data = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/n.db", data.path().display());
    let store = notifications::store::open(&url, "X").await.unwrap();
    let mailer = Arc::new(Counting {
        inner: Maildir::create(&data.path().join("maildir")).unwrap(),
        sent: AtomicUsize::new(0),
    });
    let group = notifications::events::group("mail-redelivery", Duration::from_millis(500), 5, 1);
    let backoff = Backoff {
        min: Duration::from_millis(50),
        max: Duration::from_millis(50),
    };
    let mailroom = Mailroom::new(
        store.clone(),
        mailer.clone(),
        "Flotilla <no-reply@flotilla.local>".into(),
        group.clone(),
        backoff,
    );
    let event = registered("u-1", "ada@example.com");
    publish(&bus, &event).await;

    // Handled (sent and recorded), then the consumer dies before it acknowledges.
    let mut sub = bus.bus.subscribe(&group).await.unwrap();
    let first = tokio::time::timeout(DEADLINE, sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.attempt, 1);
    assert_eq!(
        mailroom.handle(&first.subject, &first.event).await,
        Outcome::Sent
    );
    drop(sub);

    // The bus delivers it again after the ack timeout.
    let mut sub = bus.bus.subscribe(&group).await.unwrap();
    let again = tokio::time::timeout(DEADLINE, sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.event.id, event.id);
    assert!(again.attempt >= 2, "a redelivery: {again:?}");
    assert_eq!(
        mailroom.handle(&again.subject, &again.event).await,
        Outcome::Duplicate
    );
    again.ack().await.unwrap();

    assert_eq!(mailer.sent.load(Ordering::SeqCst), 1, "one email");
    assert_eq!(
        store.by_event(&event.id).await.unwrap().len(),
        1,
        "one record"
    );
}

#[tokio::test]
async fn two_instances_share_the_work_and_send_each_email_once() {
    let bus = start_bus().await;
    let data = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (data.path().join("a"), data.path().join("b"));
    // One store (same data directory), a maildir each, to see who sent what.
    let a = start_notifications(
        &bus,
        data.path(),
        json!({"maildir": dir_a, "max_in_flight": 1}),
    )
    .await;
    let _b = start_notifications(
        &bus,
        data.path(),
        json!({"maildir": dir_b, "max_in_flight": 1}),
    )
    .await;
    let user = uuid::Uuid::now_v7().to_string();
    publish(&bus, &registered(&user, "ada@example.com")).await;
    a.wait_for(&user, 1).await;
    let orders: Vec<Event> = (0..40)
        .map(|n| confirmed(&user, &format!("o-{n}")))
        .collect();
    for e in &orders {
        publish(&bus, e).await;
    }
    a.wait_for(&user, 41).await;

    let (in_a, in_b) = (files(&dir_a.join("new")), files(&dir_b.join("new")));
    assert_eq!(in_a.len() + in_b.len(), 41, "one email per event");
    assert!(
        !in_a.is_empty() && !in_b.is_empty(),
        "both instances worked: {} and {}",
        in_a.len(),
        in_b.len()
    );
    let names = |v: &[PathBuf]| -> std::collections::BTreeSet<String> {
        v.iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    };
    assert!(
        names(&in_a).is_disjoint(&names(&in_b)),
        "no event mailed by both"
    );
}

/// `python3 -m aiosmtpd`, writing what it receives into a maildir.
struct SmtpServer {
    child: Child,
    mail: PathBuf,
}

fn aiosmtpd_available() -> bool {
    Command::new("python3")
        .args(["-c", "import aiosmtpd"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// `None` (after saying so loudly) when aiosmtpd cannot run here.
fn smtp_available() -> Option<()> {
    if aiosmtpd_available() {
        Some(())
    } else {
        kit::store::testing::skip(
            "SMTP tests",
            "python3 with aiosmtpd is not installed",
            "pip install aiosmtpd (as .ci/run does)",
        )
    }
}

impl SmtpServer {
    async fn start(port: u16, mail: &Path) -> Self {
        let child = Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(mail)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 starts");
        let deadline = Instant::now() + DEADLINE;
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "aiosmtpd did not listen on {port}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self {
            child,
            mail: mail.to_owned(),
        }
    }

    fn received(&self) -> Vec<String> {
        files(&self.mail.join("new"))
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect()
    }

    async fn wait_for(&self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} emails arrived",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn smtp_delivers_to_a_real_server() {
    let Some(()) = smtp_available() else { return };
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(port, &dir.path().join("received")).await;
    let bus = start_bus().await;
    let app = start_notifications(
        &bus,
        &dir.path().join("data"),
        json!({"smtp": format!("smtp://127.0.0.1:{port}")}),
    )
    .await;
    let user = uuid::Uuid::now_v7().to_string();
    let event = registered(&user, "ada@example.com");
    publish(&bus, &event).await;

    let mails = server.wait_for(1).await;
    let mail = &mails[0];
    assert!(
        mail.contains(&format!(
            "Message-ID: <{}@notifications.flotilla>",
            event.id
        )),
        "{mail}"
    );
    assert!(mail.contains("X-RcptTo: ada@example.com"), "{mail}");
    assert!(mail.contains("Subject: Welcome to Flotilla"), "{mail}");
    let items = app.wait_for(&user, 1).await;
    assert_eq!(items[0]["to"], "ada@example.com");
    assert!(
        !dir.path().join("data/notifications/maildir/new").exists()
            || files(&dir.path().join("data/notifications/maildir/new")).is_empty(),
        "with SMTP set, nothing goes to the maildir"
    );
}

#[tokio::test]
async fn smtp_down_means_retries_then_exactly_one_email() {
    let Some(()) = smtp_available() else { return };
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let bus = start_bus().await;
    let app = start_notifications(
        &bus,
        &dir.path().join("data"),
        json!({"smtp": format!("smtp://127.0.0.1:{port}"), "max_deliveries": 100}),
    )
    .await;
    let user = uuid::Uuid::now_v7().to_string();
    let event = registered(&user, "ada@example.com");
    publish(&bus, &event).await;

    // Several attempts fail (the backoff tops out at 400 ms); none is recorded as sent.
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        let (_, body) = app.list(&user, "").await;
        assert_eq!(body["items"], json!([]), "nothing sent while SMTP is down");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let server = SmtpServer::start(port, &dir.path().join("received")).await;
    let mails = server.wait_for(1).await;
    assert!(mails[0].contains(&event.id), "{}", mails[0]);
    app.wait_for(&user, 1).await;
    // And no second copy follows.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(server.received().len(), 1, "exactly one email");
    app.wait_for(&user, 1).await;
}

#[tokio::test]
async fn an_email_that_never_goes_out_ends_as_a_dead_letter() {
    let bus = start_bus().await;
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on this port.
    let port = free_port();
    let app = start_notifications(
        &bus,
        dir.path(),
        json!({"smtp": format!("smtp://127.0.0.1:{port}"), "max_deliveries": 3, "group": "mail-dl"}),
    )
    .await;
    let user = uuid::Uuid::now_v7().to_string();
    let event = registered(&user, "ada@example.com");
    publish(&bus, &event).await;

    let deadline = Instant::now() + DEADLINE;
    loop {
        let dead: Value = reqwest::get(format!(
            "{}/v1/events?subject=deadletter.mail-dl.>",
            bus.http
        ))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        if let Some(d) = dead.as_array().and_then(|a| a.first()) {
            assert_eq!(d["subject"], "deadletter.mail-dl.users.registered");
            assert_eq!(d["event"]["id"], event.id.as_str());
            break;
        }
        assert!(Instant::now() < deadline, "no dead letter in time");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, body) = app.list(&user, "").await;
    assert_eq!(body["items"], json!([]), "a dead letter was never sent");
}
