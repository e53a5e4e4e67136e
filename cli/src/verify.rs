//! `flotilla verify`: after an experiment, checks the system's invariants and prints a
//! verdict for each; exits 1 on any violation, 3 when the system could not be read by
//! the deadline, 0 when every one holds.
//!
//! It reads the bus, embedded or NATS JetStream ([`kit_events::inspect`]) — the event
//! log (every order's, payment's and dead letter's events, which each service writes
//! through its outbox in the same transaction as the change) and the consumer groups'
//! positions — and the admin APIs of orders (orders in flight), payments (its ledger),
//! inventory (stock, reservations held past their TTL) and the consumers (the inboxes of
//! notifications and analytics: which events each applied).

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use kit_events::inspect::{self, GroupState, Inspect, Logged};
use kit_events::outbox::InboxPage;

use inventory::admin::StockLine;
use payments::store::PaymentLine;

use crate::bus::get_json;

/// `flotilla verify …`
#[derive(Debug, clap::Args)]
pub struct Verify {
    /// The bus (`bus://host:port` or `nats://…`); by default the configured one (the
    /// embedded bus at the address it registered).
    #[arg(long)]
    bus: Option<String>,
    /// How long orders still in flight may take to settle and consumer groups to catch
    /// up before what is left counts as a violation.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    deadline: Duration,
}

/// One invariant's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// It holds; what was checked.
    Holds(String),
    /// It does not: one line per offending object.
    Violated(Vec<String>),
}

/// An invariant with its verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub invariant: &'static str,
    pub verdict: Verdict,
}

/// What the order and payment events say about one order.
#[derive(Debug, Default)]
struct OrderFacts {
    created: bool,
    /// SKU and quantity of each line, from `orders.created`.
    items: Vec<(String, i64)>,
    confirmed: BTreeSet<String>,
    cancelled: BTreeSet<String>,
}

/// The orders the event log describes.
#[derive(Debug, Default)]
pub struct Ledger {
    orders: BTreeMap<String, OrderFacts>,
}

fn text(v: &serde_json::Value, key: &str) -> String {
    v[key].as_str().unwrap_or_default().to_owned()
}

impl Ledger {
    /// Takes in events in log order. A redelivered copy (same event id) changes nothing.
    pub fn add(&mut self, line: &Logged) {
        let data = &line.event.data;
        let id = line.event.id.clone();
        match line.subject.as_str() {
            "orders.created" | "orders.confirmed" | "orders.cancelled" => {
                let order = self.orders.entry(text(data, "orderId")).or_default();
                match line.subject.as_str() {
                    "orders.created" => {
                        order.created = true;
                        order.items = data["items"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|l| (text(l, "sku"), l["quantity"].as_i64().unwrap_or(0)))
                            .collect();
                    }
                    "orders.confirmed" => _ = order.confirmed.insert(id),
                    _ => _ = order.cancelled.insert(id),
                }
            }
            _ => {}
        }
    }

    /// Every accepted order ended exactly once: none is still in flight in orders' own
    /// store (`in_flight`), and each `orders.created` has one `orders.confirmed` or
    /// `orders.cancelled`, not both, not twice.
    pub fn orders_settled(&self, in_flight: &[String]) -> Verdict {
        let mut bad: Vec<String> = in_flight
            .iter()
            .map(|id| format!("order {id}: still PENDING in orders' store"))
            .collect();
        let (mut confirmed, mut cancelled) = (0, 0);
        for (id, o) in &self.orders {
            let ends = o.confirmed.len() + o.cancelled.len();
            match (o.created, ends) {
                (false, _) => bad.push(format!("order {id}: ended without orders.created")),
                (true, 0) => bad.push(format!("order {id}: neither CONFIRMED nor CANCELLED")),
                (true, 1) if o.confirmed.len() == 1 => confirmed += 1,
                (true, 1) => cancelled += 1,
                (true, n) => bad.push(format!(
                    "order {id}: {n} endings ({} confirmed, {} cancelled)",
                    o.confirmed.len(),
                    o.cancelled.len()
                )),
            }
        }
        if bad.is_empty() {
            Verdict::Holds(format!(
                "{} orders: {confirmed} CONFIRMED, {cancelled} CANCELLED, none in flight in orders' store",
                self.orders.len()
            ))
        } else {
            Verdict::Violated(bad)
        }
    }

    /// Every confirmed order has exactly one payment, captured once; no cancelled order
    /// has money left captured (captured and not fully refunded). `payments` is the
    /// payments ledger's own record.
    pub fn payments_match(&self, payments: &[PaymentLine]) -> Verdict {
        let mut by_order: BTreeMap<&str, Vec<&PaymentLine>> = BTreeMap::new();
        for p in payments {
            by_order.entry(p.order_id.as_str()).or_default().push(p);
        }
        let held = |p: &PaymentLine| p.status == "captured" && p.refunded_cents < p.amount_cents;
        let mut bad = Vec::new();
        let mut checked = 0;
        for (id, o) in &self.orders {
            let paid = by_order.get(id.as_str()).map(Vec::as_slice).unwrap_or(&[]);
            if o.confirmed.len() == 1 && o.cancelled.is_empty() {
                checked += 1;
                let captured: Vec<_> = paid.iter().filter(|p| held(p)).collect();
                match captured.as_slice() {
                    [p] if p.captures == 1 => {}
                    [p] => bad.push(format!(
                        "confirmed order {id}: payment {} captured {} times",
                        p.id, p.captures
                    )),
                    [] => bad.push(format!("confirmed order {id}: no captured payment")),
                    many => bad.push(format!(
                        "confirmed order {id}: {} captured payments",
                        many.len()
                    )),
                }
            } else if o.cancelled.len() == 1 && o.confirmed.is_empty() {
                checked += 1;
                for p in paid.iter().filter(|p| held(p)) {
                    bad.push(format!(
                        "cancelled order {id}: payment {} still captured ({} of {} cents refunded)",
                        p.id, p.refunded_cents, p.amount_cents
                    ));
                }
            }
        }
        if bad.is_empty() {
            Verdict::Holds(format!(
                "{checked} settled orders, {} payments in the ledger",
                payments.len()
            ))
        } else {
            Verdict::Violated(bad)
        }
    }
}

impl Ledger {
    /// Inventory's books agree with the orders: per SKU, the units sold are the units of
    /// the CONFIRMED orders, and nothing is left reserved once every order has ended.
    /// (Inventory does not record the initial stock and restocks — setting the stock
    /// overwrites it — so the sum on hand + sold cannot be checked against them.)
    pub fn stock_accounts(&self, stock: &[StockLine]) -> Verdict {
        let mut confirmed: BTreeMap<&str, i64> = BTreeMap::new();
        for o in self.orders.values() {
            if o.confirmed.len() == 1 && o.cancelled.is_empty() {
                for (sku, quantity) in &o.items {
                    *confirmed.entry(sku.as_str()).or_default() += quantity;
                }
            }
        }
        let mut bad = Vec::new();
        for line in stock {
            let want = confirmed.remove(line.sku.as_str()).unwrap_or(0);
            if line.sold != want {
                bad.push(format!(
                    "{}: {} sold, but CONFIRMED orders hold {want}",
                    line.sku, line.sold
                ));
            }
            if line.reserved != 0 {
                bad.push(format!(
                    "{}: {} units still reserved",
                    line.sku, line.reserved
                ));
            }
        }
        for (sku, units) in confirmed.into_iter().filter(|(_, n)| *n > 0) {
            bad.push(format!(
                "{sku}: CONFIRMED orders hold {units} units of a product inventory does not have"
            ));
        }
        if bad.is_empty() {
            Verdict::Holds(format!(
                "{} SKUs: sold = units of CONFIRMED orders, none reserved",
                stock.len()
            ))
        } else {
            Verdict::Violated(bad)
        }
    }
}

/// No reservation is still held past its TTL.
pub fn reservations_expire(overdue: &[String]) -> Verdict {
    if overdue.is_empty() {
        Verdict::Holds("none held past its TTL".into())
    } else {
        Verdict::Violated(
            overdue
                .iter()
                .map(|id| format!("order {id}: reservation held past its TTL"))
                .collect(),
        )
    }
}

/// Every consumer group has been delivered every event of its subjects and acked it.
pub fn groups_caught_up(groups: &[GroupState]) -> Verdict {
    let bad: Vec<_> = groups
        .iter()
        .filter(|g| g.lag != 0 || g.pending != 0)
        .map(|g| format!("group {}: lag {}, pending {}", g.name, g.lag, g.pending))
        .collect();
    if bad.is_empty() {
        Verdict::Holds(format!(
            "{} groups, every event delivered and acknowledged",
            groups.len()
        ))
    } else {
        Verdict::Violated(bad)
    }
}

/// No event was given up on.
pub fn no_dead_letters(dead: &[Logged]) -> Verdict {
    if dead.is_empty() {
        return Verdict::Holds("none".into());
    }
    Verdict::Violated(
        dead.iter()
            .map(|d| {
                format!(
                    "dead letter {} on {}: event {} ({})",
                    d.seq, d.subject, d.event.id, d.event.kind
                )
            })
            .collect(),
    )
}

/// The events one consumer group applied, from its service's inbox.
#[derive(Debug, Clone, Default)]
pub struct Inbox {
    /// The group it consumes as.
    pub group: String,
    /// The ids of the events it applied (its inbox's primary key: each at most once).
    pub applied: BTreeSet<String>,
}

/// Every event on a consumer group's subjects is in that group's inbox: with the inbox
/// keyed by event id (at most once), that is exactly once in effect. `events` are the
/// events of each group's subjects, by group.
pub fn applied_once(inboxes: &[Inbox], events: &BTreeMap<String, Vec<Logged>>) -> Verdict {
    let mut bad = Vec::new();
    let mut seen = Vec::new();
    for inbox in inboxes {
        let Some(expected) = events.get(&inbox.group) else {
            bad.push(format!(
                "group {}: the bus has no such consumer group",
                inbox.group
            ));
            continue;
        };
        let missing: Vec<&Logged> = expected
            .iter()
            .filter(|l| !inbox.applied.contains(&l.event.id))
            .collect();
        for l in missing.iter().take(20) {
            bad.push(format!(
                "group {}: event {} ({} on {}) was never applied",
                inbox.group, l.event.id, l.event.kind, l.subject
            ));
        }
        if missing.len() > 20 {
            bad.push(format!(
                "group {}: … {} events never applied in all",
                inbox.group,
                missing.len()
            ));
        }
        seen.push(format!("{} applied {}", inbox.group, expected.len()));
    }
    if bad.is_empty() {
        Verdict::Holds(format!(
            "every event of its subjects in each group's inbox, once: {}",
            seen.join(", ")
        ))
    } else {
        Verdict::Violated(bad)
    }
}

/// The process exit code for `findings`.
pub fn exit_code(findings: &[Finding]) -> u8 {
    if findings
        .iter()
        .any(|f| matches!(f.verdict, Verdict::Violated(_)))
    {
        1
    } else {
        0
    }
}

/// Runs `flotilla verify`.
pub fn verify(args: Verify) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("flotilla verify: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(findings(args.bus.as_deref(), args.deadline)) {
        Ok(findings) => {
            print(&findings);
            ExitCode::from(exit_code(&findings))
        }
        Err(e) => {
            eprintln!("flotilla verify: {e:#}");
            ExitCode::from(3)
        }
    }
}

/// Where to read.
#[derive(Debug)]
struct Targets {
    /// The bus's URL.
    bus: String,
    /// Orders' admin listener.
    orders: String,
    /// Payments' admin listener.
    payments: String,
    /// Inventory's admin listener.
    inventory: String,
    /// The admin listeners of the services that consume events and keep an inbox.
    consumers: Vec<String>,
}

/// The services whose inboxes `verify` reads.
const CONSUMERS: &[&str] = &["notifications", "analytics"];

/// The bus (`--bus`; else `configured`, the configuration's — for the embedded bus, at
/// the address its instance registered) and the admin listeners of orders, payments,
/// inventory and the consumers, from discovery.
async fn targets(bus: Option<String>, configured: &str) -> anyhow::Result<Targets> {
    let client = crate::status::directory()?;
    let services = client.services().await.context("is Flotilla running?")?;
    // A killed instance stays listed (unhealthy) until its lease runs out.
    let first = |name: &str| {
        services
            .iter()
            .find(|s| s.name == name)
            .and_then(|s| s.instances.iter().find(|i| i.healthy))
    };
    let bus = match bus {
        Some(url) => url,
        None => match first("bus") {
            Some(i) if kit::store::scheme(configured) == "bus" => format!("bus://{}", i.addr),
            _ => configured.to_owned(),
        },
    };
    let admin = |name: &str| {
        first(name)
            .and_then(|i| i.metadata.get("admin_addr"))
            .map(|a| format!("http://{a}"))
            .with_context(|| format!("no {name} instance with an admin address is registered"))
    };
    Ok(Targets {
        bus,
        orders: admin("orders")?,
        payments: admin("payments")?,
        inventory: admin("inventory")?,
        consumers: CONSUMERS
            .iter()
            .map(|n| admin(n))
            .collect::<Result<_, _>>()?,
    })
}

/// Where the event log has been read up to, and what it said so far.
#[derive(Debug, Default)]
struct Reading {
    ledger: Ledger,
    orders_at: u64,
    /// The bus, once connected.
    bus: Option<(String, std::sync::Arc<dyn Inspect>)>,
    /// The bus the configuration names, read once.
    configured_bus: String,
}

/// Every payment in payments' ledger, a thousand at a time.
async fn payment_lines(http: &reqwest::Client, admin: &str) -> anyhow::Result<Vec<PaymentLine>> {
    let mut out: Vec<PaymentLine> = Vec::new();
    loop {
        let url = match out.last() {
            Some(last) => format!("{admin}/admin/payments?limit=1000&after={}", last.id),
            None => format!("{admin}/admin/payments?limit=1000"),
        };
        let page: Vec<PaymentLine> = get_json(http, url).await?;
        let full = page.len() == 1000;
        out.extend(page);
        if !full {
            return Ok(out);
        }
    }
}

/// A consumer's whole inbox, page by page.
async fn inbox(http: &reqwest::Client, admin: &str) -> anyhow::Result<Inbox> {
    let mut out = Inbox::default();
    let mut after: Option<String> = None;
    loop {
        let url = match &after {
            Some(a) => reqwest::Url::parse_with_params(
                &format!("{admin}/admin/inbox"),
                &[("after", a.as_str())],
            )?,
            None => reqwest::Url::parse(&format!("{admin}/admin/inbox"))?,
        };
        let page: InboxPage = get_json(http, url.to_string()).await?;
        out.group = page.group;
        out.applied
            .extend(page.events.into_iter().map(|e| e.event_id));
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(out),
        }
    }
}

/// The events of each group's subjects, by group name, each event once.
async fn events_by_group(
    bus: &dyn Inspect,
    groups: &[GroupState],
    wanted: &[Inbox],
) -> anyhow::Result<BTreeMap<String, Vec<Logged>>> {
    let mut cache: BTreeMap<String, Vec<Logged>> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for g in groups
        .iter()
        .filter(|g| wanted.iter().any(|w| w.group == g.name))
    {
        let mut events: BTreeMap<u64, Logged> = BTreeMap::new();
        for subject in &g.subjects {
            if !cache.contains_key(subject) {
                cache.insert(
                    subject.clone(),
                    inspect::every_event(bus, subject, 0).await?,
                );
            }
            for l in &cache[subject] {
                events.entry(l.seq).or_insert_with(|| l.clone());
            }
        }
        out.insert(g.name.clone(), events.into_values().collect());
    }
    Ok(out)
}

/// Reads everything once and judges every invariant.
async fn observe(
    bus: Option<&str>,
    http: &reqwest::Client,
    r: &mut Reading,
) -> anyhow::Result<Vec<Finding>> {
    let Targets {
        bus: url,
        orders,
        payments,
        inventory,
        consumers,
    } = targets(bus.map(str::to_owned), &r.configured_bus).await?;
    let bus = match &r.bus {
        Some((known, bus)) if *known == url => bus.clone(),
        _ => {
            let bus = inspect::connect(&url, "FLOTILLA_BUS")
                .await
                .with_context(|| format!("cannot read the bus {}", kit::store::redact(&url)))?;
            r.bus = Some((url, bus.clone()));
            bus
        }
    };
    for line in inspect::every_event(bus.as_ref(), "orders.>", r.orders_at).await? {
        r.orders_at = r.orders_at.max(line.seq);
        r.ledger.add(&line);
    }
    let groups = bus.groups().await?;
    let dead = bus.dead_letters().await?;
    let paid = payment_lines(http, &payments).await?;
    let in_flight: Vec<String> = get_json(http, format!("{orders}/admin/orders/in-flight")).await?;
    let stock: Vec<StockLine> = get_json(http, format!("{inventory}/admin/stock")).await?;
    let overdue: Vec<String> =
        get_json(http, format!("{inventory}/admin/reservations/overdue")).await?;
    let mut inboxes = Vec::new();
    for admin in &consumers {
        inboxes.push(inbox(http, admin).await?);
    }
    let expected = events_by_group(bus.as_ref(), &groups, &inboxes).await?;
    let ledger = &r.ledger;
    Ok(vec![
        Finding {
            invariant: "every accepted order is CONFIRMED or CANCELLED, once",
            verdict: ledger.orders_settled(&in_flight),
        },
        Finding {
            invariant: "a confirmed order has one captured payment; a cancelled one none left captured",
            verdict: ledger.payments_match(&paid),
        },
        Finding {
            invariant: "every consumer group handled every event of its subjects",
            verdict: groups_caught_up(&groups),
        },
        Finding {
            invariant: "stock accounts for every order (sold = CONFIRMED units, nothing left reserved)",
            verdict: ledger.stock_accounts(&stock),
        },
        Finding {
            invariant: "no reservation outlives its TTL",
            verdict: reservations_expire(&overdue),
        },
        Finding {
            invariant: "every event was applied exactly once by each consumer group",
            verdict: applied_once(&inboxes, &expected),
        },
        Finding {
            invariant: "no dead letters",
            verdict: no_dead_letters(&dead),
        },
    ])
}

/// Judges every invariant, waiting up to `deadline` for what is still settling; an error
/// when the system could not be read by then. `bus` as `--bus`.
pub async fn findings(bus: Option<&str>, deadline: Duration) -> anyhow::Result<Vec<Finding>> {
    // Admin listeners take plain HTTP on loopback.
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()?;
    let deadline = tokio::time::Instant::now() + deadline;
    let mut reading = Reading {
        configured_bus: kit_events::url_from_config(&kit::config::Config::load()),
        ..Reading::default()
    };
    loop {
        let past = tokio::time::Instant::now() >= deadline;
        // A service just killed is restarting, orders in flight settle, lagging groups
        // catch up, the sweeper expires reservations: wait for them until the deadline
        // (a dead letter stays one).
        match observe(bus, &http, &mut reading).await {
            Ok(findings) => {
                let settling = findings[..6]
                    .iter()
                    .any(|f| matches!(f.verdict, Verdict::Violated(_)));
                if !settling || past {
                    return Ok(findings);
                }
            }
            Err(e) if past => return Err(e),
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Prints a verdict per finding.
pub fn print(findings: &[Finding]) {
    for f in findings {
        match &f.verdict {
            Verdict::Holds(what) => println!("holds        {}\n             {what}", f.invariant),
            Verdict::Violated(lines) => {
                println!("VIOLATED     {} ({} cases)", f.invariant, lines.len());
                for l in lines.iter().take(20) {
                    println!("             {l}");
                }
                if lines.len() > 20 {
                    println!("             … and {} more", lines.len() - 20);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use kit_events::Event;
    use serde_json::json;

    use super::*;

    fn line(seq: u64, subject: &str, id: &str, data: serde_json::Value) -> Logged {
        let mut event = Event::new("test", subject, data);
        event.id = id.into();
        Logged {
            seq,
            subject: subject.into(),
            event,
        }
    }

    fn order(seq: u64, subject: &str, order: &str) -> Logged {
        line(seq, subject, &format!("e{seq}"), json!({"orderId": order}))
    }

    fn pay(order: &str, status: &str, refunded: i64, captures: i64) -> PaymentLine {
        PaymentLine {
            id: format!("p-{order}"),
            order_id: order.into(),
            status: status.into(),
            amount_cents: 100,
            refunded_cents: refunded,
            captures,
        }
    }

    fn ledger(lines: &[Logged]) -> Ledger {
        let mut l = Ledger::default();
        for line in lines {
            l.add(line);
        }
        l
    }

    #[test]
    fn a_confirmed_and_a_refunded_cancelled_order_hold() {
        let l = ledger(&[
            order(1, "orders.created", "a"),
            order(2, "orders.created", "b"),
            order(4, "orders.confirmed", "a"),
            order(8, "orders.cancelled", "b"),
        ]);
        let paid = [pay("a", "captured", 0, 1), pay("b", "voided", 0, 0)];
        assert_eq!(
            l.orders_settled(&[]),
            Verdict::Holds(
                "2 orders: 1 CONFIRMED, 1 CANCELLED, none in flight in orders' store".into()
            )
        );
        assert!(matches!(l.payments_match(&paid), Verdict::Holds(_)));
    }

    #[test]
    fn a_redelivered_event_is_not_a_second_ending() {
        let confirmed = order(2, "orders.confirmed", "a");
        let l = ledger(&[
            order(1, "orders.created", "a"),
            confirmed.clone(),
            Logged {
                seq: 3,
                ..confirmed
            },
        ]);
        assert!(matches!(l.orders_settled(&[]), Verdict::Holds(_)));
    }

    #[test]
    fn unsettled_and_doubly_ended_orders_are_violations() {
        let l = ledger(&[
            order(1, "orders.created", "open"),
            order(2, "orders.created", "both"),
            order(3, "orders.confirmed", "both"),
            order(4, "orders.cancelled", "both"),
            order(5, "orders.confirmed", "ghost"),
        ]);
        let Verdict::Violated(lines) = l.orders_settled(&["open".into()]) else {
            panic!("holds")
        };
        assert_eq!(lines.len(), 4, "{lines:?}");
        assert_eq!(lines[0], "order open: still PENDING in orders' store");
        assert!(
            lines
                .iter()
                .any(|l| l.contains("open") && l.contains("neither"))
        );
        assert!(
            lines
                .iter()
                .any(|l| l.contains("both") && l.contains("2 endings"))
        );
        assert!(
            lines
                .iter()
                .any(|l| l.contains("ghost") && l.contains("without"))
        );
    }

    #[test]
    fn money_left_captured_on_a_cancelled_order_or_missing_on_a_confirmed_one() {
        let l = ledger(&[
            order(1, "orders.created", "c"),
            order(3, "orders.cancelled", "c"),
            order(4, "orders.created", "d"),
            order(5, "orders.confirmed", "d"),
        ]);
        let Verdict::Violated(lines) = l.payments_match(&[pay("c", "captured", 40, 1)]) else {
            panic!("holds")
        };
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].contains("cancelled order c") && lines[0].contains("40 of 100"));
        assert!(lines[1].contains("confirmed order d: no captured payment"));
        // Refunded in full, the cancelled order holds.
        let l = ledger(&[
            order(1, "orders.created", "c"),
            order(4, "orders.cancelled", "c"),
        ]);
        assert!(matches!(
            l.payments_match(&[pay("c", "refunded", 100, 1)]),
            Verdict::Holds(_)
        ));
    }

    #[test]
    fn a_payment_captured_twice_is_a_violation() {
        let l = ledger(&[
            order(1, "orders.created", "a"),
            order(2, "orders.confirmed", "a"),
        ]);
        let Verdict::Violated(lines) = l.payments_match(&[pay("a", "captured", 0, 2)]) else {
            panic!("holds")
        };
        assert!(lines[0].contains("captured 2 times"), "{lines:?}");
    }

    #[test]
    fn lagging_groups_and_dead_letters_are_violations() {
        let group = |name: &str, lag, pending| GroupState {
            name: name.into(),
            subjects: vec![">".into()],
            lag,
            pending,
        };
        assert!(matches!(
            groups_caught_up(&[group("analytics", 0, 0)]),
            Verdict::Holds(_)
        ));
        let Verdict::Violated(lines) =
            groups_caught_up(&[group("analytics", 0, 0), group("notifications", 3, 1)])
        else {
            panic!("holds")
        };
        assert_eq!(lines, ["group notifications: lag 3, pending 1"]);
        assert_eq!(no_dead_letters(&[]), Verdict::Holds("none".into()));
        let dead = [order(9, "deadletter.notifications.orders.confirmed", "a")];
        assert!(matches!(no_dead_letters(&dead), Verdict::Violated(v) if v.len() == 1));
    }

    #[test]
    fn an_event_missing_from_a_groups_inbox_is_a_violation() {
        let events: BTreeMap<String, Vec<Logged>> = [
            (
                "notifications".to_owned(),
                vec![
                    order(1, "orders.confirmed", "a"),
                    order(2, "orders.cancelled", "b"),
                ],
            ),
            (
                "analytics-g1".to_owned(),
                vec![order(1, "orders.confirmed", "a")],
            ),
        ]
        .into();
        let inbox = |group: &str, ids: &[&str]| Inbox {
            group: group.into(),
            applied: ids.iter().map(|s| s.to_string()).collect(),
        };
        assert!(matches!(
            applied_once(
                &[
                    inbox("notifications", &["e1", "e2"]),
                    inbox("analytics-g1", &["e1"])
                ],
                &events
            ),
            Verdict::Holds(_)
        ));
        let Verdict::Violated(lines) = applied_once(
            &[inbox("notifications", &["e1"]), inbox("analytics-g2", &[])],
            &events,
        ) else {
            panic!("holds")
        };
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].contains("event e2"), "{lines:?}");
        assert!(lines[1].contains("no such consumer group"), "{lines:?}");
    }

    fn stock(sku: &str, reserved: i64, sold: i64) -> StockLine {
        StockLine {
            sku: sku.into(),
            stock: 10,
            reserved,
            sold,
        }
    }

    fn created(seq: u64, id: &str, sku: &str, quantity: i64) -> Logged {
        line(
            seq,
            "orders.created",
            &format!("e{seq}"),
            json!({"orderId": id, "items": [{"sku": sku, "quantity": quantity}]}),
        )
    }

    #[test]
    fn sold_units_are_the_units_of_confirmed_orders() {
        let l = ledger(&[
            created(1, "a", "BOAT", 2),
            order(2, "orders.confirmed", "a"),
            created(3, "b", "BOAT", 1),
            order(4, "orders.cancelled", "b"),
            created(5, "c", "DECK", 3),
            order(6, "orders.confirmed", "c"),
        ]);
        assert!(matches!(
            l.stock_accounts(&[stock("BOAT", 0, 2), stock("DECK", 0, 3), stock("NAV", 0, 0)]),
            Verdict::Holds(_)
        ));
        let Verdict::Violated(lines) = l.stock_accounts(&[stock("BOAT", 1, 3)]) else {
            panic!("holds")
        };
        assert_eq!(
            lines,
            [
                "BOAT: 3 sold, but CONFIRMED orders hold 2",
                "BOAT: 1 units still reserved",
                "DECK: CONFIRMED orders hold 3 units of a product inventory does not have",
            ]
        );
    }

    #[test]
    fn a_reservation_held_past_its_ttl_is_a_violation() {
        assert!(matches!(reservations_expire(&[]), Verdict::Holds(_)));
        assert!(
            matches!(reservations_expire(&["o-1".into()]), Verdict::Violated(v) if v[0].contains("o-1"))
        );
    }

    #[test]
    fn the_exit_code_says_violated_or_clean() {
        let f = |verdict| Finding {
            invariant: "x",
            verdict,
        };
        let holds = f(Verdict::Holds(String::new()));
        let violated = f(Verdict::Violated(vec![String::new()]));
        assert_eq!(exit_code(std::slice::from_ref(&holds)), 0);
        assert_eq!(exit_code(&[holds, violated]), 1);
    }
}
