//! What the breakers, retries and load shedding did during an experiment, from every
//! instance's own `/metrics`: `breaker_transitions_total`, `retries_total` and
//! `rejected_total`. Counters start over in a new process, so every instance (by its
//! id, unique per process) is sampled every [`EVERY`] and its last sample kept: a
//! killed instance's counts are in the total up to at most that long before its death.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use kit::discovery::registry::ServiceEntry;
use serde::Serialize;

use crate::up::fleet::label;

/// How often every instance is sampled.
pub const EVERY: Duration = Duration::from_secs(2);

/// The counters this report adds up.
const SERIES: &[&str] = &[
    "breaker_transitions_total",
    "retries_total",
    "rejected_total",
];

/// One counter of one instance: `(series, target, detail)` → value; the detail is
/// `from→to` for a breaker transition, the reason for a rejection.
type Sample = BTreeMap<(String, String, String), f64>;

/// Reads the counters this report wants from the Prometheus text format.
pub fn parse(text: &str) -> Sample {
    let mut out = Sample::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let Some(name) = SERIES
            .iter()
            .find(|n| series.strip_prefix(**n).is_some_and(|r| r.starts_with('{')))
        else {
            continue;
        };
        let target = label(series, "target").unwrap_or_default().to_owned();
        let detail = match *name {
            "breaker_transitions_total" => format!(
                "{}→{}",
                label(series, "from").unwrap_or("?"),
                label(series, "to").unwrap_or("?")
            ),
            "rejected_total" => label(series, "reason").unwrap_or("?").to_owned(),
            _ => String::new(),
        };
        *out.entry(((*name).to_owned(), target, detail)).or_default() += value;
    }
    out
}

/// One line of the report: a service's counter towards one target.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Line {
    /// The service whose instances counted.
    pub service: String,
    /// `breaker`, `retries` or `rejected`.
    pub what: &'static str,
    /// The service called.
    pub target: String,
    /// `closed→open` for a breaker transition, the reason for a rejection.
    pub detail: String,
    /// Summed over the service's instances, live and gone.
    pub count: u64,
}

/// The last sample of every instance seen.
#[derive(Debug, Default)]
pub struct Tracker {
    last: HashMap<String, (String, Sample)>,
}

impl Tracker {
    /// Samples every healthy instance of `services` once.
    pub async fn sample(&mut self, services: &[ServiceEntry], http: &reqwest::Client) {
        for s in services {
            for i in s.instances.iter().filter(|i| i.healthy) {
                let Some(admin) = i.metadata.get("admin_addr") else {
                    continue;
                };
                let Ok(res) = http.get(format!("http://{admin}/metrics")).send().await else {
                    continue;
                };
                if let Ok(text) = res.text().await {
                    self.last
                        .insert(i.id.clone(), (s.name.clone(), parse(&text)));
                }
            }
        }
    }

    /// Every non-zero counter, summed per service, by service, kind and target.
    pub fn lines(&self) -> Vec<Line> {
        let mut sums: BTreeMap<(String, String, String, String), f64> = BTreeMap::new();
        for (service, sample) in self.last.values() {
            for ((series, target, detail), v) in sample {
                *sums
                    .entry((
                        service.clone(),
                        series.clone(),
                        target.clone(),
                        detail.clone(),
                    ))
                    .or_default() += v;
            }
        }
        sums.into_iter()
            .filter(|(_, v)| *v >= 1.0)
            .map(|((service, series, target, detail), v)| Line {
                service,
                what: match series.as_str() {
                    "breaker_transitions_total" => "breaker",
                    "retries_total" => "retries",
                    _ => "rejected",
                },
                target,
                detail,
                count: v as u64,
            })
            .collect()
    }
}

/// The report as lines of text.
pub fn render(lines: &[Line]) -> String {
    if lines.is_empty() {
        return "  no breaker opened, no call was retried or rejected\n".into();
    }
    lines
        .iter()
        .map(|l| {
            let what = match l.what {
                "breaker" => format!("breaker {}", l.detail),
                "rejected" => format!("rejected ({})", l.detail),
                other => other.to_owned(),
            };
            format!(
                "  {:<13} → {:<13} {:<28} {}\n",
                l.service, l.target, what, l.count
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const METRICS: &str = r#"# TYPE breaker_transitions_total counter
breaker_transitions_total{service="gateway",target="inventory",from="closed",to="open"} 2
breaker_transitions_total{service="gateway",target="inventory",from="open",to="half_open"} 2
retries_total{service="gateway",target="inventory"} 14
rejected_total{service="gateway",target="inventory",reason="breaker_open"} 31
http_requests_total{service="gateway",status="2xx"} 900
"#;

    #[test]
    fn counters_of_gone_and_live_instances_add_up_per_service() {
        let mut t = Tracker::default();
        t.last
            .insert("gateway-1".into(), ("gateway".into(), parse(METRICS)));
        t.last
            .insert("gateway-2".into(), ("gateway".into(), parse(METRICS)));
        let lines = t.lines();
        let find = |what: &str, detail: &str| {
            lines
                .iter()
                .find(|l| l.what == what && l.detail == detail)
                .map(|l| l.count)
        };
        assert_eq!(find("breaker", "closed→open"), Some(4));
        assert_eq!(find("retries", ""), Some(28));
        assert_eq!(find("rejected", "breaker_open"), Some(62));
        assert_eq!(lines.len(), 4, "{lines:?}");
        let text = render(&lines);
        assert!(text.contains("breaker closed→open"), "{text}");
    }

    #[test]
    fn junk_and_other_series_are_ignored() {
        assert!(
            parse("retries_total{target=\"x\"} nope\nretries_totalx{a=\"b\"} 3\n\n").is_empty()
        );
        assert!(render(&[]).contains("no breaker opened"));
    }
}
