//! The projections: what each event adds to the counters, the summary window, and the
//! summary itself. Pure rules, no I/O.
//!
//! Every event lands in the minute bucket of its own `time` (not of its arrival), so
//! replaying the stream from the beginning rebuilds exactly the same buckets.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// Counter names.
pub mod metric {
    /// Every event (dead letters aside).
    pub const EVENTS: &str = "events";
    /// `orders.created`.
    pub const ORDERS: &str = "orders";
    /// `orders.confirmed`.
    pub const CONFIRMED: &str = "confirmed";
    /// `orders.cancelled`.
    pub const CANCELLED: &str = "cancelled";
    /// Totals of confirmed orders.
    pub const REVENUE_CENTS: &str = "revenue_cents";
    /// `users.registered`.
    pub const REGISTRATIONS: &str = "registrations";
    /// `payments.authorized`.
    pub const PAYMENTS_AUTHORIZED: &str = "payments_authorized";
    /// `payments.declined`.
    pub const PAYMENTS_DECLINED: &str = "payments_declined";
    /// `payments.captured`.
    pub const PAYMENTS_CAPTURED: &str = "payments_captured";
    /// `payments.refunded`.
    pub const PAYMENTS_REFUNDED: &str = "payments_refunded";
    /// Amounts refunded.
    pub const REFUNDED_CENTS: &str = "refunded_cents";
}

/// What one event adds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Projection {
    /// The minute bucket (minutes since the epoch).
    pub bucket: i64,
    /// Counter increments.
    pub counters: Vec<(&'static str, i64)>,
    /// Units sold per SKU.
    pub products: Vec<(String, i64)>,
}

/// Whether a subject is a dead letter (a copy of an event some group gave up on; the
/// original was counted when it was published).
pub fn is_dead_letter(subject: &str) -> bool {
    subject.starts_with("deadletter.")
}

/// The minute bucket of an RFC 3339 time.
pub fn bucket_of(time: &str) -> Option<i64> {
    let t = humantime::parse_rfc3339_weak(time).ok()?;
    let ms = t.duration_since(UNIX_EPOCH).ok()?.as_millis();
    i64::try_from(ms / 60_000).ok()
}

fn int(data: &Value, key: &str) -> i64 {
    data.get(key).and_then(Value::as_i64).unwrap_or(0)
}

/// What the event on `subject` with `time` and `data` adds; `None` for one that counts
/// nowhere (a dead letter, or no readable time).
pub fn project(subject: &str, time: &str, data: &Value) -> Option<Projection> {
    if is_dead_letter(subject) {
        return None;
    }
    let bucket = bucket_of(time)?;
    let mut counters = vec![(metric::EVENTS, 1)];
    let mut products = Vec::new();
    match subject {
        "orders.created" => counters.push((metric::ORDERS, 1)),
        "orders.confirmed" => {
            counters.push((metric::CONFIRMED, 1));
            counters.push((metric::REVENUE_CENTS, int(data, "total_cents")));
            if let Some(items) = data.get("items").and_then(Value::as_array) {
                for item in items {
                    if let (Some(sku), Some(q)) = (
                        item.get("sku").and_then(Value::as_str),
                        item.get("quantity").and_then(Value::as_i64),
                    ) && !sku.is_empty()
                        && q > 0
                    {
                        products.push((sku.to_owned(), q));
                    }
                }
            }
        }
        "orders.cancelled" => counters.push((metric::CANCELLED, 1)),
        "users.registered" => counters.push((metric::REGISTRATIONS, 1)),
        "payments.authorized" => counters.push((metric::PAYMENTS_AUTHORIZED, 1)),
        "payments.declined" => counters.push((metric::PAYMENTS_DECLINED, 1)),
        "payments.captured" => counters.push((metric::PAYMENTS_CAPTURED, 1)),
        "payments.refunded" => {
            counters.push((metric::PAYMENTS_REFUNDED, 1));
            counters.push((metric::REFUNDED_CENTS, int(data, "refund_cents")));
        }
        _ => {}
    }
    Some(Projection {
        bucket,
        counters,
        products,
    })
}

/// Longest summary window.
pub const MAX_WINDOW: Duration = Duration::from_secs(90 * 24 * 3600);

/// The `window` of a summary: `<n>m`, `<n>h` or `<n>d`, from one minute to 90 days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    minutes: u64,
}

impl Window {
    /// Parses `30m`, `1h`, `7d`…
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let expected = "expected a number and a unit: 30m, 1h, 7d";
        if s.len() < 2 || !s.is_ascii() {
            return Err(expected.to_owned());
        }
        let (n, unit) = s.split_at(s.len() - 1);
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
            return Err(expected.to_owned());
        }
        let n: u64 = n
            .parse()
            .map_err(|_| "the number is too large".to_owned())?;
        let per = match unit {
            "m" => 1,
            "h" => 60,
            "d" => 24 * 60,
            _ => return Err(expected.to_owned()),
        };
        let minutes = n.saturating_mul(per);
        if minutes == 0 {
            return Err("must be at least 1m".to_owned());
        }
        if minutes > MAX_WINDOW.as_secs() / 60 {
            return Err("must be at most 90d".to_owned());
        }
        Ok(Self { minutes })
    }

    /// Its length in minutes.
    pub fn minutes(&self) -> u64 {
        self.minutes
    }

    /// The first bucket inside the window ending at `now`.
    pub fn first_bucket(&self, now: SystemTime) -> i64 {
        let now_min = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() / 60)
            .unwrap_or(0);
        // The current minute counts as one of the window's minutes.
        i64::try_from(now_min.saturating_sub(self.minutes - 1)).unwrap_or(i64::MAX)
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.minutes;
        if m.is_multiple_of(24 * 60) {
            write!(f, "{}d", m / (24 * 60))
        } else if m.is_multiple_of(60) {
            write!(f, "{}h", m / 60)
        } else {
            write!(f, "{m}m")
        }
    }
}

/// One product in the summary.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct TopProduct {
    /// The SKU.
    pub sku: String,
    /// Units sold in confirmed orders.
    pub quantity: i64,
}

/// Payment counts in the summary.
#[derive(
    Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
pub struct PaymentCounts {
    /// `payments.authorized`.
    pub authorized: i64,
    /// `payments.declined`.
    pub declined: i64,
    /// `payments.captured`.
    pub captured: i64,
    /// `payments.refunded`.
    pub refunded: i64,
}

/// `GET /api/analytics/summary`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Summary {
    /// The window, normalised (`1h`).
    pub window: String,
    /// Orders placed.
    pub orders: i64,
    /// Orders confirmed.
    pub confirmed: i64,
    /// Orders cancelled.
    pub cancelled: i64,
    /// Totals of confirmed orders, in cents.
    pub revenue_cents: i64,
    /// The ten best-selling products (confirmed orders), most units first.
    pub top_products: Vec<TopProduct>,
    /// Events per minute over the window.
    pub events_per_minute: f64,
    /// Accounts registered.
    pub registrations: i64,
    /// Payment outcomes.
    pub payments: PaymentCounts,
    /// Amounts refunded, in cents.
    pub refunded_cents: i64,
    /// Events counted.
    pub events: i64,
}

/// How many products the summary lists.
pub const TOP_PRODUCTS: usize = 10;

/// The summary of a window from the summed counters and units per SKU.
pub fn summarize(
    window: Window,
    counters: &BTreeMap<String, i64>,
    products: &[(String, i64)],
) -> Summary {
    let get = |m: &str| counters.get(m).copied().unwrap_or(0);
    let mut top: Vec<TopProduct> = products
        .iter()
        .map(|(sku, quantity)| TopProduct {
            sku: sku.clone(),
            quantity: *quantity,
        })
        .collect();
    top.sort_by(|a, b| b.quantity.cmp(&a.quantity).then_with(|| a.sku.cmp(&b.sku)));
    top.truncate(TOP_PRODUCTS);
    let events = get(metric::EVENTS);
    #[allow(clippy::cast_precision_loss)]
    let per_minute = events as f64 / window.minutes() as f64;
    Summary {
        window: window.to_string(),
        orders: get(metric::ORDERS),
        confirmed: get(metric::CONFIRMED),
        cancelled: get(metric::CANCELLED),
        revenue_cents: get(metric::REVENUE_CENTS),
        top_products: top,
        events_per_minute: (per_minute * 100.0).round() / 100.0,
        registrations: get(metric::REGISTRATIONS),
        payments: PaymentCounts {
            authorized: get(metric::PAYMENTS_AUTHORIZED),
            declined: get(metric::PAYMENTS_DECLINED),
            captured: get(metric::PAYMENTS_CAPTURED),
            refunded: get(metric::PAYMENTS_REFUNDED),
        },
        refunded_cents: get(metric::REFUNDED_CENTS),
        events,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const T: &str = "2026-12-01T10:30:15.250Z";

    #[test]
    fn windows_parse_and_are_bounded() {
        assert_eq!(Window::parse("1h").unwrap().minutes(), 60);
        assert_eq!(Window::parse("30m").unwrap().minutes(), 30);
        assert_eq!(Window::parse("7d").unwrap().minutes(), 7 * 24 * 60);
        assert_eq!(Window::parse("90d").unwrap().to_string(), "90d");
        assert_eq!(Window::parse("120m").unwrap().to_string(), "2h");
        for bad in [
            "",
            "h",
            "1",
            "0m",
            "-1h",
            "1.5h",
            "1w",
            "91d",
            "1 h",
            "99999999999999999999d",
            "１h",
        ] {
            assert!(Window::parse(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn the_window_includes_the_current_minute() {
        let now = UNIX_EPOCH + Duration::from_secs(100 * 60 + 30);
        assert_eq!(Window::parse("1m").unwrap().first_bucket(now), 100);
        assert_eq!(Window::parse("1h").unwrap().first_bucket(now), 41);
        assert_eq!(Window::parse("90d").unwrap().first_bucket(now), 0);
    }

    #[test]
    fn events_land_in_the_bucket_of_their_own_time() {
        let p = project("orders.created", T, &json!({})).unwrap();
        let minute = bucket_of(T).unwrap();
        assert_eq!(p.bucket, minute);
        assert_eq!(bucket_of("2026-12-01T10:30:59.999Z"), Some(minute));
        assert_eq!(bucket_of("2026-12-01T10:31:00Z"), Some(minute + 1));
        assert_eq!(p.counters, [(metric::EVENTS, 1), (metric::ORDERS, 1)]);
        assert_eq!(project("orders.created", "yesterday", &json!({})), None);
    }

    #[test]
    fn confirmed_orders_count_revenue_and_products() {
        let p = project(
            "orders.confirmed",
            T,
            &json!({"total_cents": 2500, "items": [{"sku": "A", "quantity": 2}, {"sku": "", "quantity": 1}, {"sku": "B", "quantity": -3}]}),
        )
        .unwrap();
        assert!(p.counters.contains(&(metric::REVENUE_CENTS, 2500)));
        assert_eq!(p.products, [("A".to_owned(), 2)]);
        let r = project("payments.refunded", T, &json!({"refund_cents": 700})).unwrap();
        assert!(r.counters.contains(&(metric::REFUNDED_CENTS, 700)));
        let other = project("inventory.reserved", T, &json!({})).unwrap();
        assert_eq!(other.counters, [(metric::EVENTS, 1)]);
    }

    #[test]
    fn dead_letters_are_not_counted_twice() {
        assert_eq!(
            project("deadletter.notifications.orders.confirmed", T, &json!({})),
            None
        );
    }

    #[test]
    fn summaries_rank_products_and_rate_events() {
        let counters: BTreeMap<String, i64> = [
            ("events", 120),
            ("orders", 3),
            ("confirmed", 2),
            ("revenue_cents", 9000),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let products: Vec<(String, i64)> = (0..12)
            .map(|i| (format!("SKU-{i:02}"), i64::from(i % 5)))
            .collect();
        let s = summarize(Window::parse("1h").unwrap(), &counters, &products);
        assert_eq!((s.orders, s.confirmed, s.cancelled), (3, 2, 0));
        assert_eq!(s.revenue_cents, 9000);
        assert!((s.events_per_minute - 2.0).abs() < f64::EPSILON);
        assert_eq!(s.top_products.len(), TOP_PRODUCTS);
        assert_eq!(
            s.top_products[0],
            TopProduct {
                sku: "SKU-04".into(),
                quantity: 4
            }
        );
        assert_eq!(s.top_products[1].sku, "SKU-09", "ties by SKU");
        let v = serde_json::to_value(&s).unwrap();
        for key in [
            "orders",
            "confirmed",
            "cancelled",
            "revenue_cents",
            "top_products",
            "events_per_minute",
        ] {
            assert!(v.get(key).is_some(), "API.md field {key}");
        }
    }
}
