//! The shop as a client sees it through the gateway: setting up the virtual users, then
//! running one scenario per arrival and recording every request it makes.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};
use rand::RngExt;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::saga::{self, Seen};
use super::scenario::{self, Scenario};
use super::stats::{Failure, Outcome, Recorder};

/// The password of every account the generator creates (the API wants 12 characters).
const PASSWORD: &str = "flotilla-load-password";

/// A token this close to expiry is refreshed before it is used.
const REFRESH_AHEAD: Duration = Duration::from_secs(60);

/// How often a set-up call is tried when the gateway rate-limits it.
const SETUP_ATTEMPTS: u32 = 60;

/// How often a followed order is read again until it ends: every 250 ms at first, every
/// second once it is older than 5 s. The time recorded comes from the order's own
/// timestamps, so reading less often loses no precision; it only keeps the reads of a
/// backlog of slow sagas from becoming the load (four reads a second per order).
fn follow_every(waited: Duration) -> Duration {
    if waited < Duration::from_secs(5) {
        Duration::from_millis(250)
    } else {
        Duration::from_secs(1)
    }
}

#[derive(Debug, Deserialize)]
struct Tokens {
    access_token: String,
    refresh_token: String,
    expires_in: u64,
}

/// One logged-in account: its credentials and current tokens.
#[derive(Debug)]
struct Session {
    email: String,
    password: String,
    access: String,
    refresh: String,
    expires_at: Instant,
}

impl Session {
    fn new(email: String, password: String, tokens: Tokens) -> Self {
        let mut s = Self {
            email,
            password,
            access: String::new(),
            refresh: String::new(),
            expires_at: Instant::now(),
        };
        s.set(tokens);
        s
    }

    fn set(&mut self, t: Tokens) {
        self.access = t.access_token;
        self.refresh = t.refresh_token;
        self.expires_at = Instant::now() + Duration::from_secs(t.expires_in);
    }
}

/// What the run needs before its first arrival.
#[derive(Debug)]
pub struct Setup {
    users: Vec<tokio::sync::Mutex<Session>>,
    admin: Option<tokio::sync::Mutex<Session>>,
    skus: Vec<String>,
    /// Sign-ups so far, so each new address is unique for the whole set-up's life.
    signups: AtomicU64,
}

/// The `{"email", "password"}` file `flotilla up` writes for the seeded administrator.
#[derive(Debug, Deserialize)]
struct Credentials {
    email: String,
    password: String,
}

/// Sends a set-up request (not measured), waiting out `429`s as `Retry-After` says.
async fn setup_call(
    make: impl Fn() -> RequestBuilder,
    what: &str,
    expect: StatusCode,
) -> anyhow::Result<Value> {
    for _ in 0..SETUP_ATTEMPTS {
        let res = make()
            .send()
            .await
            .with_context(|| format!("{what}: no answer"))?;
        let status = res.status();
        if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
            let wait = res
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                .unwrap_or(1);
            tokio::time::sleep(Duration::from_secs(wait.clamp(1, 10))).await;
            continue;
        }
        let body = res.text().await.unwrap_or_default();
        if status != expect {
            bail!("{what}: {status} {body}");
        }
        return Ok(serde_json::from_str(&body).unwrap_or(Value::Null));
    }
    bail!("{what}: still rate limited after {SETUP_ATTEMPTS} attempts")
}

async fn setup_login(
    http: &reqwest::Client,
    base: &str,
    email: &str,
    password: &str,
) -> anyhow::Result<Tokens> {
    let body = json!({"email": email, "password": password});
    let v = setup_call(
        || http.post(format!("{base}/api/auth/login")).json(&body),
        &format!("logging in {email}"),
        StatusCode::OK,
    )
    .await?;
    serde_json::from_value(v).context("login answer without tokens")
}

impl Setup {
    /// Reads the catalog, registers and logs in `users` accounts (four at a time), logs
    /// the administrator in when `admin` names its credentials file and, with `stock`,
    /// has the administrator set every product's stock to it.
    pub async fn prepare(
        http: &reqwest::Client,
        base: &str,
        run_id: &str,
        users: usize,
        admin: Option<&Path>,
        stock: Option<u64>,
    ) -> anyhow::Result<Self> {
        let catalog = setup_call(
            || http.get(format!("{base}/api/products?limit=100")),
            "reading the catalog",
            StatusCode::OK,
        )
        .await?;
        let skus: Vec<String> = catalog["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["sku"].as_str().map(str::to_owned))
            .collect();

        let limit = Arc::new(tokio::sync::Semaphore::new(4));
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..users {
            let (http, base, limit) = (http.clone(), base.to_owned(), limit.clone());
            let email = format!("load-{run_id}-u{i}@example.com");
            tasks.spawn(async move {
                let _permit = limit.acquire_owned().await?;
                let body =
                    json!({"email": email, "password": PASSWORD, "name": format!("Load user {i}")});
                setup_call(
                    || http.post(format!("{base}/api/auth/register")).json(&body),
                    &format!("registering {email}"),
                    StatusCode::CREATED,
                )
                .await?;
                let tokens = setup_login(&http, &base, &email, PASSWORD).await?;
                anyhow::Ok((i, Session::new(email, PASSWORD.into(), tokens)))
            });
        }
        let mut sessions = Vec::with_capacity(users);
        while let Some(done) = tasks.join_next().await {
            sessions.push(done??);
        }
        sessions.sort_by_key(|(i, _)| *i);

        let admin = match admin {
            None => None,
            Some(path) => {
                let text = std::fs::read(path).with_context(|| {
                    format!(
                        "cannot read the administrator's credentials at {} (the summary scenario and --stock need them; pass --data-dir)",
                        path.display()
                    )
                })?;
                let c: Credentials = serde_json::from_slice(&text)
                    .with_context(|| format!("{} is not a credentials file", path.display()))?;
                let tokens = setup_login(http, base, &c.email, &c.password).await?;
                Some(Session::new(c.email, c.password, tokens))
            }
        };
        if let Some(stock) = stock {
            let admin = admin
                .as_ref()
                .context("setting stock needs the administrator")?;
            for sku in &skus {
                setup_call(
                    || {
                        http.put(format!("{base}/api/products/{sku}/stock"))
                            .bearer_auth(&admin.access)
                            .json(&json!({"stock": stock}))
                    },
                    &format!("setting the stock of {sku}"),
                    StatusCode::OK,
                )
                .await?;
            }
        }
        Ok(Self {
            users: sessions
                .into_iter()
                .map(|(_, s)| tokio::sync::Mutex::new(s))
                .collect(),
            admin: admin.map(tokio::sync::Mutex::new),
            skus,
            signups: AtomicU64::new(0),
        })
    }

    /// Whether the catalog had anything to order.
    pub fn has_products(&self) -> bool {
        !self.skus.is_empty()
    }
}

/// Runs scenarios against the gateway at `base`, recording into `recorder`.
#[derive(Debug)]
pub struct Shop {
    http: reqwest::Client,
    base: String,
    setup: Arc<Setup>,
    run_id: String,
    recorder: Arc<Mutex<Recorder>>,
    start: Instant,
}

/// An order the `order` scenario placed, as it read it back.
#[derive(Debug)]
pub struct Placed {
    path: String,
    token: String,
    order: Value,
}

impl Shop {
    /// A shop whose run started at `start`.
    pub fn new(
        http: reqwest::Client,
        base: String,
        setup: Arc<Setup>,
        run_id: String,
        recorder: Arc<Mutex<Recorder>>,
        start: Instant,
    ) -> Self {
        Self {
            http,
            base,
            setup,
            run_id,
            recorder,
            start,
        }
    }

    fn request(&self, method: Method, path: &str, token: Option<&str>) -> RequestBuilder {
        let req = self.http.request(method, format!("{}{path}", self.base));
        match token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// Sends one measured request: its latency counts from `due`, and it succeeds when
    /// the status is one of `expect`. Returns the JSON body of a success.
    async fn send(
        &self,
        endpoint: &'static str,
        req: RequestBuilder,
        due: Instant,
        expect: &[u16],
    ) -> Option<Value> {
        let answer = async {
            let res = req.send().await?;
            let status = res.status().as_u16();
            let body = res.bytes().await?;
            Ok::<_, reqwest::Error>((status, body))
        }
        .await;
        let done = Instant::now();
        let (outcome, body) = match answer {
            Ok((status, body)) if expect.contains(&status) => (Outcome::Ok(status), Some(body)),
            Ok((status, _)) => (Outcome::Unexpected(status), None),
            Err(e) if e.is_timeout() => (Outcome::Failed(Failure::Timeout), None),
            Err(_) => (Outcome::Failed(Failure::Connection), None),
        };
        self.recorder.lock().expect("recorder lock").request(
            endpoint,
            outcome,
            done.saturating_duration_since(due),
            done.saturating_duration_since(self.start),
        );
        body.map(|b| serde_json::from_slice(&b).unwrap_or(Value::Null))
    }

    /// Logs `session` in again; `false` if that failed.
    async fn login(&self, session: &mut Session, due: Instant) -> bool {
        let req = self
            .request(Method::POST, "/api/auth/login", None)
            .json(&json!({"email": session.email, "password": session.password}));
        let tokens = self
            .send("POST /api/auth/login", req, due, &[200])
            .await
            .and_then(|v| serde_json::from_value::<Tokens>(v).ok());
        match tokens {
            Some(t) => {
                session.set(t);
                true
            }
            None => false,
        }
    }

    /// A valid access token of `session`, refreshed first when it is about to expire
    /// (logging in again if the refresh fails). One caller at a time refreshes: reusing
    /// a rotated refresh token would revoke the whole family.
    async fn token(&self, session: &tokio::sync::Mutex<Session>) -> Option<String> {
        let mut s = session.lock().await;
        if s.expires_at.saturating_duration_since(Instant::now()) < REFRESH_AHEAD {
            let req = self
                .request(Method::POST, "/api/auth/refresh", None)
                .json(&json!({"refresh_token": s.refresh}));
            let tokens = self
                .send("POST /api/auth/refresh", req, Instant::now(), &[200])
                .await
                .and_then(|v| serde_json::from_value::<Tokens>(v).ok());
            match tokens {
                Some(t) => s.set(t),
                None if self.login(&mut s, Instant::now()).await => {}
                None => return None,
            }
        }
        Some(s.access.clone())
    }

    fn any_user(&self) -> Option<&tokio::sync::Mutex<Session>> {
        let users = &self.setup.users;
        (!users.is_empty()).then(|| &users[rand::rng().random_range(0..users.len())])
    }

    fn any_sku(&self) -> Option<&str> {
        let skus = &self.setup.skus;
        (!skus.is_empty()).then(|| skus[rand::rng().random_range(0..skus.len())].as_str())
    }

    /// Places an order as a random virtual user; its id and the user's token.
    async fn place_order(&self, due: Instant) -> Option<(String, String)> {
        let token = self.token(self.any_user()?).await?;
        let card = scenario::card(rand::rng().random_range(0..100));
        let body = json!({
            "items": [{"sku": self.any_sku()?, "quantity": 1}],
            "payment": {"card_number": card, "exp_month": 12, "exp_year": 2099, "cvc": "123"},
        });
        let req = self
            .request(Method::POST, "/api/orders", Some(&token))
            .header("idempotency-key", uuid::Uuid::new_v4().to_string())
            .json(&body);
        let placed = self.send("POST /api/orders", req, due, &[202]).await?;
        Some((placed["order_id"].as_str()?.to_owned(), token))
    }

    /// Reads a placed order again ([`follow_every`]) until it is `CONFIRMED` or
    /// `CANCELLED`, for at most `deadline`, and records how long its saga took by the
    /// order's own timestamps. The reads are not measured requests: they would swamp
    /// the endpoint's latencies with the follower's own polling.
    pub async fn follow(&self, placed: Placed, deadline: Duration) {
        let since = Instant::now();
        let until = since + deadline;
        let mut order = placed.order;
        loop {
            let took = match saga::seen(&order) {
                Seen::Pending => None,
                Seen::Confirmed(took) => Some((true, took)),
                Seen::Cancelled(took) => Some((false, took)),
            };
            if let Some((confirmed, took)) = took {
                let at = Instant::now().saturating_duration_since(self.start);
                let mut r = self.recorder.lock().expect("recorder lock");
                r.settled(confirmed, took, at);
                return;
            }
            let every = follow_every(since.elapsed());
            if Instant::now() + every > until {
                self.recorder.lock().expect("recorder lock").unsettled();
                return;
            }
            tokio::time::sleep(every).await;
            let read = self
                .request(Method::GET, &placed.path, Some(&placed.token))
                .send()
                .await;
            let body = match read {
                Ok(res) if res.status() == StatusCode::OK => res.json::<Value>().await.ok(),
                _ => None,
            };
            self.recorder
                .lock()
                .expect("recorder lock")
                .poll(body.is_some());
            if let Some(v) = body {
                order = v;
            }
        }
    }

    /// Runs one arrival of `scenario`, due at `due`. Its first request's latency counts
    /// from `due`; each later step's from when the step before it ended. Returns the
    /// order an `order` arrival placed and read back.
    pub async fn run(&self, scenario: Scenario, due: Instant) -> Option<Placed> {
        match scenario {
            Scenario::Browse => {
                let token = match self.any_user() {
                    Some(user) => Some(self.token(user).await?),
                    None => None,
                };
                let token = token.as_deref();
                let list = self
                    .send(
                        "GET /api/products",
                        self.request(Method::GET, "/api/products?limit=20", token),
                        due,
                        &[200],
                    )
                    .await?;
                let listed: Vec<&str> = list["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p["sku"].as_str())
                    .collect();
                let sku = match listed.len() {
                    0 => return None,
                    n => listed[rand::rng().random_range(0..n)].to_owned(),
                };
                let path = format!("/api/products/{sku}");
                self.send(
                    "GET /api/products/{sku}",
                    self.request(Method::GET, &path, token),
                    Instant::now(),
                    &[200],
                )
                .await;
            }
            Scenario::Register => {
                let n = self.setup.signups.fetch_add(1, Ordering::Relaxed);
                let email = format!("load-{}-s{n}@example.com", self.run_id);
                let req = self
                    .request(Method::POST, "/api/auth/register", None)
                    .json(&json!({"email": email, "password": PASSWORD, "name": "Load signup"}));
                self.send("POST /api/auth/register", req, due, &[201]).await;
            }
            Scenario::Login => {
                if let Some(user) = self.any_user() {
                    let mut s = user.lock().await;
                    self.login(&mut s, due).await;
                }
            }
            Scenario::Order => {
                let (id, token) = self.place_order(due).await?;
                let path = format!("/api/orders/{id}");
                let order = self
                    .send(
                        "GET /api/orders/{id}",
                        self.request(Method::GET, &path, Some(&token)),
                        Instant::now(),
                        &[200],
                    )
                    .await
                    .unwrap_or(Value::Null);
                return Some(Placed { path, token, order });
            }
            Scenario::Cancel => {
                if let Some((id, token)) = self.place_order(due).await {
                    let path = format!("/api/orders/{id}/cancel");
                    // 409: the saga confirmed the order before the cancel arrived.
                    self.send(
                        "POST /api/orders/{id}/cancel",
                        self.request(Method::POST, &path, Some(&token)),
                        Instant::now(),
                        &[202, 409],
                    )
                    .await;
                }
            }
            Scenario::Summary => {
                if let Some(admin) = &self.setup.admin
                    && let Some(token) = self.token(admin).await
                {
                    self.send(
                        "GET /api/analytics/summary",
                        self.request(
                            Method::GET,
                            "/api/analytics/summary?window=1h",
                            Some(&token),
                        ),
                        due,
                        &[200],
                    )
                    .await;
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_followed_order_is_read_less_often_once_it_is_slow() {
        assert_eq!(follow_every(Duration::ZERO), Duration::from_millis(250));
        assert_eq!(
            follow_every(Duration::from_millis(4900)),
            Duration::from_millis(250)
        );
        assert_eq!(follow_every(Duration::from_secs(5)), Duration::from_secs(1));
        assert_eq!(
            follow_every(Duration::from_secs(59)),
            Duration::from_secs(1)
        );
    }
}
