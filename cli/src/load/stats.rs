//! What the run measured: a latency histogram and status counts per endpoint, a
//! timeline per second, and the report assembled from them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::saga::{TO_CANCELLED, TO_CONFIRMED};

/// Latencies are kept in microseconds, from 1 µs to an hour.
const MAX_MICROS: u64 = 3_600_000_000;

/// How one request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A status the step expects (`202` for a new order, `202` or `409` for a cancel…).
    Ok(u16),
    /// Any other status.
    Unexpected(u16),
    /// No status at all: the request timed out, or the connection failed.
    Failed(Failure),
}

/// Why a request got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Past `--timeout`.
    Timeout,
    /// Connecting, sending or reading the body failed.
    Connection,
}

impl Outcome {
    /// The key under which errors are counted (`503`, `timeout`), `None` for success.
    fn error(self) -> Option<String> {
        match self {
            Outcome::Ok(_) => None,
            Outcome::Unexpected(s) => Some(s.to_string()),
            Outcome::Failed(Failure::Timeout) => Some("timeout".into()),
            Outcome::Failed(Failure::Connection) => Some("connection".into()),
        }
    }
}

/// The error key of arrivals not sent because `--max-in-flight` were already open.
pub const OVERFLOW: &str = "in-flight limit";

fn histogram(sigfig: u8) -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, sigfig).expect("valid histogram bounds")
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

#[derive(Debug)]
struct Endpoint {
    latency: Histogram<u64>,
    statuses: BTreeMap<String, u64>,
    ok: u64,
    errors: BTreeMap<String, u64>,
}

#[derive(Debug)]
struct Second {
    ok: u64,
    errors: u64,
    latency: Histogram<u64>,
    confirmed: u64,
    to_confirmed: Histogram<u64>,
}

impl Second {
    fn new() -> Self {
        Self {
            ok: 0,
            errors: 0,
            latency: histogram(2),
            confirmed: 0,
            to_confirmed: histogram(2),
        }
    }
}

/// Accepted orders followed until they ended, with server-side times.
#[derive(Debug)]
struct Sagas {
    deadline: Duration,
    to_confirmed: Histogram<u64>,
    to_cancelled: Histogram<u64>,
    confirmed: u64,
    cancelled: u64,
    unsettled: u64,
    reads: u64,
    poll_errors: u64,
    last_settled: Duration,
}

/// Everything measured so far. Endpoints are route templates
/// (`GET /api/products/{sku}`), so one histogram covers every product.
#[derive(Debug, Default)]
pub struct Recorder {
    endpoints: BTreeMap<&'static str, Endpoint>,
    seconds: Vec<Second>,
    errors: BTreeMap<String, u64>,
    arrivals: u64,
    overflow: u64,
    dispatch_lag: Duration,
    last_answer: Duration,
    sagas: Option<Sagas>,
}

impl Recorder {
    fn second(&mut self, at: Duration) -> &mut Second {
        let i = at.as_secs() as usize;
        if self.seconds.len() <= i {
            self.seconds.resize_with(i + 1, Second::new);
        }
        &mut self.seconds[i]
    }

    /// One request to `endpoint` that took `latency` (from when it was due) and ended
    /// `at` (from the start of the run).
    pub fn request(
        &mut self,
        endpoint: &'static str,
        outcome: Outcome,
        latency: Duration,
        at: Duration,
    ) {
        let e = self.endpoints.entry(endpoint).or_insert_with(|| Endpoint {
            latency: histogram(3),
            statuses: BTreeMap::new(),
            ok: 0,
            errors: BTreeMap::new(),
        });
        e.latency.saturating_record(micros(latency));
        self.last_answer = self.last_answer.max(at);
        if let Outcome::Ok(s) | Outcome::Unexpected(s) = outcome {
            *e.statuses.entry(s.to_string()).or_default() += 1;
        }
        let error = outcome.error();
        match &error {
            None => e.ok += 1,
            Some(key) => *e.errors.entry(key.clone()).or_default() += 1,
        }
        let second = self.second(at);
        second.latency.saturating_record(micros(latency));
        match error {
            None => second.ok += 1,
            Some(key) => {
                second.errors += 1;
                *self.errors.entry(key).or_default() += 1;
            }
        }
    }

    /// Accepted orders are followed until they end, for at most `deadline` each.
    pub fn follow_orders(&mut self, deadline: Duration) {
        self.sagas = Some(Sagas {
            deadline,
            to_confirmed: histogram(3),
            to_cancelled: histogram(3),
            confirmed: 0,
            cancelled: 0,
            unsettled: 0,
            reads: 0,
            poll_errors: 0,
            last_settled: Duration::ZERO,
        });
    }

    /// A followed order was seen `CONFIRMED` (`CANCELLED` if not `confirmed`) `at` (from
    /// the start of the run), `took` after it was accepted by the server's clock (`None`
    /// when its document lacked the timestamps: counted, but no sample).
    pub fn settled(&mut self, confirmed: bool, took: Option<Duration>, at: Duration) {
        let Some(s) = self.sagas.as_mut() else {
            return;
        };
        s.last_settled = s.last_settled.max(at);
        let took = took.map(micros);
        if !confirmed {
            s.cancelled += 1;
            if let Some(took) = took {
                s.to_cancelled.saturating_record(took);
            }
            return;
        }
        s.confirmed += 1;
        if let Some(took) = took {
            s.to_confirmed.saturating_record(took);
        }
        // The timeline puts it by the second it was seen CONFIRMED.
        let second = self.second(at);
        second.confirmed += 1;
        if let Some(took) = took {
            second.to_confirmed.saturating_record(took);
        }
    }

    /// A followed order had not ended by the deadline.
    pub fn unsettled(&mut self) {
        if let Some(s) = self.sagas.as_mut() {
            s.unsettled += 1;
        }
    }

    /// A followed order was read again; `answered` if that gave its document (if not,
    /// it is read again at the next turn).
    pub fn poll(&mut self, answered: bool) {
        if let Some(s) = self.sagas.as_mut() {
            s.reads += 1;
            s.poll_errors += u64::from(!answered);
        }
    }

    /// When the latest request ended, from the start of the run.
    pub fn last_answer(&self) -> Duration {
        self.last_answer
    }

    /// An arrival was issued `lag` after it was due.
    pub fn arrival(&mut self, lag: Duration) {
        self.arrivals += 1;
        self.dispatch_lag = self.dispatch_lag.max(lag);
    }

    /// An arrival due `at` was not sent: too many requests were in flight.
    pub fn overflow(&mut self, at: Duration) {
        self.overflow += 1;
        self.second(at).errors += 1;
        *self.errors.entry(OVERFLOW.into()).or_default() += 1;
    }

    /// Requests answered so far, errors so far (overflow included), and the p99 of the
    /// last whole second before `now` (the current one if there is none yet).
    pub fn live(&self, now: Duration) -> (u64, u64, Option<f64>) {
        let requests = self.endpoints.values().map(|e| e.latency.len()).sum();
        let errors = self.errors.values().sum();
        let current = now.as_secs() as usize;
        let recent = self
            .seconds
            .get(current.saturating_sub(1))
            .filter(|s| !s.latency.is_empty())
            .or_else(|| self.seconds.get(current));
        let p99 = recent.and_then(|s| quantile_ms(&s.latency, 0.99));
        (requests, errors, p99)
    }

    /// The report of the run: `elapsed` from the first arrival until the last answer.
    pub fn report(&self, run: Run, elapsed: Duration) -> Report {
        let endpoints: Vec<EndpointReport> = self
            .endpoints
            .iter()
            .map(|(name, e)| EndpointReport {
                endpoint: (*name).to_owned(),
                requests: e.latency.len(),
                ok: e.ok,
                errors: e.errors.clone(),
                statuses: e.statuses.clone(),
                latency_ms: Percentiles::of(&e.latency),
            })
            .collect();
        let requests: u64 = endpoints.iter().map(|e| e.requests).sum();
        let ok: u64 = endpoints.iter().map(|e| e.ok).sum();
        let secs = elapsed.as_secs_f64().max(1e-9);
        let timeline = self
            .seconds
            .iter()
            .enumerate()
            .map(|(i, s)| SecondReport {
                second: i as u64,
                ok: s.ok,
                errors: s.errors,
                p50_ms: quantile_ms(&s.latency, 0.5),
                p99_ms: quantile_ms(&s.latency, 0.99),
                confirmed: s.confirmed,
                to_confirmed_p99_ms: quantile_ms(&s.to_confirmed, 0.99),
            })
            .collect();
        let saga = self.sagas.as_ref().map(|s| SagaReport {
            deadline_s: s.deadline.as_secs_f64(),
            followed: s.confirmed + s.cancelled + s.unsettled,
            confirmed: s.confirmed,
            cancelled: s.cancelled,
            unsettled: s.unsettled,
            reads: s.reads,
            poll_errors: s.poll_errors,
            last_settled_s: round3(s.last_settled.as_secs_f64()),
            confirmed_rate: round3(
                s.confirmed as f64 / s.last_settled.as_secs_f64().max(run.duration_s),
            ),
            settled_rate: round3(
                (s.confirmed + s.cancelled) as f64
                    / s.last_settled.as_secs_f64().max(run.duration_s),
            ),
            to_confirmed_ms: Percentiles::of(&s.to_confirmed),
            to_cancelled_ms: Percentiles::of(&s.to_cancelled),
        });
        Report {
            arrivals: self.arrivals,
            overflow: self.overflow,
            max_dispatch_lag_ms: ms(self.dispatch_lag),
            elapsed_s: round3(secs),
            requests,
            ok,
            errors: self.errors.values().sum(),
            achieved_arrival_rate: round3(
                self.arrivals.saturating_sub(self.overflow) as f64 / run.duration_s,
            ),
            achieved_request_rate: round3(requests as f64 / secs),
            errors_by_status: self.errors.clone(),
            endpoints,
            timeline,
            saga,
            run,
        }
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn ms(d: Duration) -> f64 {
    round3(d.as_secs_f64() * 1000.0)
}

fn quantile_ms(h: &Histogram<u64>, q: f64) -> Option<f64> {
    (!h.is_empty()).then(|| round3(h.value_at_quantile(q) as f64 / 1000.0))
}

/// What was asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub gateway: String,
    pub scenario: String,
    pub rate: f64,
    pub duration_s: f64,
    pub users: usize,
    pub max_in_flight: usize,
    pub started_at: String,
}

/// Latency percentiles in milliseconds (`null` for an endpoint nothing answered).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub p99_9: Option<f64>,
    pub max: Option<f64>,
}

impl Percentiles {
    /// Nothing measured.
    pub fn none() -> Self {
        Self {
            p50: None,
            p90: None,
            p99: None,
            p99_9: None,
            max: None,
        }
    }

    fn of(h: &Histogram<u64>) -> Self {
        Self {
            p50: quantile_ms(h, 0.5),
            p90: quantile_ms(h, 0.9),
            p99: quantile_ms(h, 0.99),
            p99_9: quantile_ms(h, 0.999),
            max: (!h.is_empty()).then(|| round3(h.max() as f64 / 1000.0)),
        }
    }
}

/// One endpoint's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointReport {
    /// Method and route template: `GET /api/products/{sku}`.
    pub endpoint: String,
    pub requests: u64,
    pub ok: u64,
    /// Unexpected statuses, timeouts and connection failures, by key.
    pub errors: BTreeMap<String, u64>,
    /// Every status answered, expected or not.
    pub statuses: BTreeMap<String, u64>,
    pub latency_ms: Percentiles,
}

/// One second of the run, by when requests finished.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecondReport {
    pub second: u64,
    pub ok: u64,
    pub errors: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Followed orders seen `CONFIRMED` in this second (with `--follow-orders`).
    #[serde(default)]
    pub confirmed: u64,
    /// The p99 time from acceptance to `CONFIRMED` of those orders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_confirmed_p99_ms: Option<f64>,
}

/// Accepted orders followed (`--follow-orders`) until `CONFIRMED` or `CANCELLED`. Times
/// come from the order's own timestamps: to `CONFIRMED` is the `confirm_order` step's
/// `at` minus `created_at`, to `CANCELLED` `updated_at` minus `created_at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SagaReport {
    /// How long an order was read again before it counted as unsettled.
    pub deadline_s: f64,
    pub followed: u64,
    pub confirmed: u64,
    pub cancelled: u64,
    /// Still not ended at the deadline.
    pub unsettled: u64,
    /// Reads of followed orders after the scenario's own read-back (not in the endpoint
    /// table: they are the follower's, not a shopper's).
    pub reads: u64,
    /// Of those, the reads that got no usable answer (read again).
    pub poll_errors: u64,
    /// When the last followed order was seen ended, from the first arrival.
    pub last_settled_s: f64,
    /// `CONFIRMED` orders per second, over the run's duration or until the last one
    /// ended if that was later.
    pub confirmed_rate: f64,
    /// `CONFIRMED` and `CANCELLED` orders per second, likewise.
    pub settled_rate: f64,
    pub to_confirmed_ms: Percentiles,
    pub to_cancelled_ms: Percentiles,
}

/// The report `flotilla load` prints and writes as `report.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub run: Run,
    /// Arrivals issued, including those refused by the in-flight limit.
    pub arrivals: u64,
    /// Arrivals not sent because `max_in_flight` requests were open (counted as errors).
    pub overflow: u64,
    /// How late the generator itself issued its latest arrival (its own lag, which the
    /// latencies include since they count from when each arrival was due).
    pub max_dispatch_lag_ms: f64,
    /// From the first arrival until the last answer.
    pub elapsed_s: f64,
    pub requests: u64,
    pub ok: u64,
    pub errors: u64,
    /// Arrivals sent per second of the run's duration.
    pub achieved_arrival_rate: f64,
    /// Requests answered per second elapsed.
    pub achieved_request_rate: f64,
    pub errors_by_status: BTreeMap<String, u64>,
    pub endpoints: Vec<EndpointReport>,
    pub timeline: Vec<SecondReport>,
    /// With `--follow-orders`: how the accepted orders' sagas ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saga: Option<SagaReport>,
}

fn cell(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.2}"))
}

impl Report {
    /// The summary table printed at the end of a run.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let r = &self.run;
        let _ = writeln!(
            out,
            "offered {} arrivals/s for {}s against {} (mix {}, {} users)",
            r.rate, r.duration_s, r.gateway, r.scenario, r.users
        );
        let _ = writeln!(
            out,
            "achieved {:.2} arrivals/s ({} sent, {} over the in-flight limit of {}), {:.2} requests/s; generator lag at most {:.1} ms",
            self.achieved_arrival_rate,
            self.arrivals.saturating_sub(self.overflow),
            self.overflow,
            r.max_in_flight,
            self.achieved_request_rate,
            self.max_dispatch_lag_ms,
        );
        let by_status: Vec<_> = self
            .errors_by_status
            .iter()
            .map(|(k, n)| format!("{k}: {n}"))
            .collect();
        let _ = writeln!(
            out,
            "{} requests, {} ok, {} errors{}{}",
            self.requests,
            self.ok,
            self.errors,
            if by_status.is_empty() { "" } else { " — " },
            by_status.join(", ")
        );
        let _ = writeln!(
            out,
            "\n{:<32} {:>8} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "ENDPOINT", "REQUESTS", "ERRORS", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"
        );
        let mut row = |name: &str, requests: u64, errors: String, l: &Percentiles| {
            let _ = writeln!(
                out,
                "{:<32} {:>8} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9}",
                name,
                requests,
                errors,
                cell(l.p50),
                cell(l.p90),
                cell(l.p99),
                cell(l.p99_9),
                cell(l.max),
            );
        };
        for e in &self.endpoints {
            let errors = (e.requests - e.ok).to_string();
            row(&e.endpoint, e.requests, errors, &e.latency_ms);
        }
        if let Some(s) = &self.saga {
            // Orders, not requests; the unsettled ones are counted below.
            row(TO_CONFIRMED, s.confirmed, "-".into(), &s.to_confirmed_ms);
            row(TO_CANCELLED, s.cancelled, "-".into(), &s.to_cancelled_ms);
            let _ = writeln!(
                out,
                "\n{} orders followed: {} CONFIRMED ({:.2}/s), {} CANCELLED, {} not ended within {}s; {} reads to follow them, {} without an answer",
                s.followed,
                s.confirmed,
                s.confirmed_rate,
                s.cancelled,
                s.unsettled,
                s.deadline_s,
                s.reads,
                s.poll_errors,
            );
        }
        out
    }
}

#[cfg(test)]
impl Run {
    /// 10 arrivals/s for 2 s of browsing.
    pub fn example() -> Self {
        Run {
            gateway: "http://127.0.0.1:8080".into(),
            scenario: "browse=1".into(),
            rate: 10.0,
            duration_s: 2.0,
            users: 0,
            max_in_flight: 8,
            started_at: "2026-12-01T00:00:00Z".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run() -> Run {
        Run::example()
    }

    const LIST: &str = "GET /api/products";

    #[test]
    fn percentiles_come_from_every_request_of_an_endpoint() {
        let mut r = Recorder::default();
        for ms in 1..=1000u64 {
            r.request(
                LIST,
                Outcome::Ok(200),
                Duration::from_millis(ms),
                Duration::from_millis(ms),
            );
        }
        let report = r.report(run(), Duration::from_secs(2));
        let l = &report.endpoints[0].latency_ms;
        // Three significant digits: within 0.1 % of the exact order statistic.
        let near =
            |got: Option<f64>, want: f64| (got.unwrap() - want).abs() <= want * 0.001 + 0.001;
        assert!(near(l.p50, 500.0), "{l:?}");
        assert!(near(l.p90, 900.0), "{l:?}");
        assert!(near(l.p99, 990.0), "{l:?}");
        assert!(near(l.p99_9, 999.0), "{l:?}");
        assert!(near(l.max, 1000.0), "{l:?}");
        assert_eq!(report.requests, 1000);
        assert_eq!(report.achieved_request_rate, 500.0);
    }

    #[test]
    fn errors_are_counted_by_status_per_endpoint_and_in_total() {
        let mut r = Recorder::default();
        let at = Duration::from_millis(1500);
        let d = Duration::from_millis(3);
        r.request(LIST, Outcome::Ok(200), d, at);
        r.request(LIST, Outcome::Unexpected(503), d, at);
        r.request("POST /api/orders/{id}/cancel", Outcome::Ok(409), d, at);
        r.request("POST /api/orders", Outcome::Failed(Failure::Timeout), d, at);
        r.overflow(Duration::from_millis(200));
        let report = r.report(run(), Duration::from_secs(2));
        assert_eq!(report.requests, 4);
        assert_eq!(report.ok, 2);
        assert_eq!(report.errors, 3);
        let want: BTreeMap<String, u64> = [("503", 1), ("timeout", 1), (OVERFLOW, 1)]
            .into_iter()
            .map(|(k, n)| (k.to_owned(), n))
            .collect();
        assert_eq!(report.errors_by_status, want);
        let list = &report.endpoints[0];
        assert_eq!(list.endpoint, LIST);
        assert_eq!(list.statuses.len(), 2);
        assert_eq!(list.errors.get("503"), Some(&1));
        // An expected 409 (cancel after confirmation) is a status, not an error.
        let cancel = report
            .endpoints
            .iter()
            .find(|e| e.endpoint.ends_with("/cancel"))
            .unwrap();
        assert_eq!((cancel.ok, cancel.errors.len()), (1, 0));
        // The timeline puts each by the second it ended in.
        assert_eq!(report.timeline.len(), 2);
        assert_eq!((report.timeline[0].ok, report.timeline[0].errors), (0, 1));
        assert_eq!((report.timeline[1].ok, report.timeline[1].errors), (2, 2));
        assert!(report.table().contains("503: 1"));
    }

    #[test]
    fn live_p99_reads_the_last_whole_second() {
        let mut r = Recorder::default();
        r.request(
            LIST,
            Outcome::Ok(200),
            Duration::from_millis(100),
            Duration::from_millis(500),
        );
        r.request(
            LIST,
            Outcome::Ok(200),
            Duration::from_millis(7),
            Duration::from_millis(1200),
        );
        let (requests, errors, p99) = r.live(Duration::from_millis(1300));
        assert_eq!((requests, errors), (2, 0));
        assert!((p99.unwrap() - 100.0).abs() < 1.0, "{p99:?}");
        assert_eq!(Recorder::default().live(Duration::ZERO), (0, 0, None));
    }

    #[test]
    fn an_endpoint_without_answers_has_no_percentiles() {
        let h = histogram(3);
        assert_eq!(Percentiles::of(&h).p99, None);
    }

    #[test]
    fn followed_orders_get_their_own_rows_and_do_not_count_as_requests() {
        let mut r = Recorder::default();
        r.settled(
            true,
            Some(Duration::from_millis(300)),
            Duration::from_secs(1),
        );
        assert!(r.report(run(), Duration::from_secs(2)).saga.is_none());
        r.follow_orders(Duration::from_secs(60));
        r.request(
            "POST /api/orders",
            Outcome::Ok(202),
            Duration::from_millis(5),
            Duration::ZERO,
        );
        for ms in [100, 200, 300] {
            r.settled(
                true,
                Some(Duration::from_millis(ms)),
                Duration::from_secs(1),
            );
        }
        r.settled(true, None, Duration::from_millis(1500));
        r.settled(
            false,
            Some(Duration::from_millis(80)),
            Duration::from_secs(3),
        );
        r.unsettled();
        r.poll(true);
        r.poll(false);
        let report = r.report(run(), Duration::from_secs(4));
        assert_eq!((report.requests, report.ok), (1, 1));
        let s = report.saga.as_ref().unwrap();
        assert_eq!((s.followed, s.confirmed, s.cancelled), (6, 4, 1));
        assert_eq!((s.unsettled, s.reads, s.poll_errors), (1, 2, 1));
        assert_eq!(s.last_settled_s, 3.0);
        // Four CONFIRMED in the 3 s until the last order ended (longer than the run).
        assert!(
            (s.confirmed_rate - 1.333).abs() < 1e-9,
            "{}",
            s.confirmed_rate
        );
        assert!((s.to_confirmed_ms.p99.unwrap() - 300.0).abs() < 0.5);
        assert!((s.to_cancelled_ms.max.unwrap() - 80.0).abs() < 0.1);
        assert_eq!(report.timeline[1].confirmed, 4);
        assert!(report.timeline[1].to_confirmed_p99_ms.is_some());
        let table = report.table();
        assert!(table.contains("saga: accepted → CONFIRMED"), "{table}");
        assert!(table.contains("1 not ended within 60s"), "{table}");
        let json = serde_json::to_string(&report).unwrap();
        assert_eq!(serde_json::from_str::<Report>(&json).unwrap(), report);
    }

    #[test]
    fn the_report_survives_a_round_trip_through_json() {
        let mut r = Recorder::default();
        r.arrival(Duration::from_micros(300));
        r.request(
            LIST,
            Outcome::Ok(200),
            Duration::from_millis(4),
            Duration::ZERO,
        );
        let report = r.report(run(), Duration::from_secs(1));
        let json = serde_json::to_string(&report).unwrap();
        assert_eq!(serde_json::from_str::<Report>(&json).unwrap(), report);
        assert_eq!(report.max_dispatch_lag_ms, 0.3);
        assert_eq!(report.achieved_arrival_rate, 0.5);
    }
}
