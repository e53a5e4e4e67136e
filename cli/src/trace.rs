//! `flotilla trace <trace-id>`: one trace from the dashboard as a waterfall in the
//! terminal — the spans as a tree by parent, each with its service, name, duration,
//! status and a bar on the trace's time axis. Also the dashboard client `flotilla logs`
//! shares.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::time::Duration;

use anstyle::{AnsiColor, Style};
use anyhow::{Context as _, bail};
use serde::Deserialize;
use serde_json::Value;

/// Where `flotilla up` serves the dashboard.
pub const DEFAULT_DASHBOARD: &str = "http://127.0.0.1:8081";

/// `flotilla trace …`
#[derive(Debug, clap::Args)]
pub struct TraceArgs {
    /// The trace id: 32 hex digits (the middle part of a `traceparent` header).
    trace_id: String,
    /// The dashboard's base URL.
    #[arg(long, env = "FLOTILLA_DASHBOARD", default_value = DEFAULT_DASHBOARD)]
    dashboard: String,
    /// Width of the output in columns; by default `COLUMNS`, else 120.
    #[arg(long)]
    width: Option<usize>,
}

/// Runs `flotilla trace`.
pub fn trace(args: TraceArgs) -> ExitCode {
    crate::block_on("trace", run(args))
}

async fn run(args: TraceArgs) -> anyhow::Result<()> {
    let id = args.trace_id.trim().to_ascii_lowercase();
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("{:?} is not a trace id (32 hex digits)", args.trace_id);
    }
    let dashboard = Dashboard::new(&args.dashboard)?;
    let Some(trace) = dashboard.get(&format!("/api/traces/{id}"), &[]).await? else {
        bail!(
            "the dashboard at {} has no trace {id} (not received yet, or dropped by retention)",
            dashboard.base
        );
    };
    let trace: Trace = serde_json::from_value(trace).context("the dashboard's trace")?;
    let width = args
        .width
        .or_else(|| std::env::var("COLUMNS").ok()?.parse().ok())
        .unwrap_or(120);
    print!("{}", render(&trace, width, std::io::stdout().is_terminal()));
    Ok(())
}

/// A client of the dashboard's JSON API.
pub struct Dashboard {
    pub base: String,
    http: reqwest::Client,
}

impl Dashboard {
    pub fn new(base: &str) -> anyhow::Result<Self> {
        let base = base.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("--dashboard {base:?} is not an http:// or https:// URL");
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(Self { base, http })
    }

    /// `GET path?query`: the JSON body, `None` on 404; other failures name the
    /// dashboard and say what it answered.
    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<Option<Value>> {
        let res = self
            .http
            .get(format!("{}{path}{}", self.base, query_string(query)))
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "the dashboard does not answer at {} ({e}); is `flotilla up` running? \
                     (--dashboard or FLOTILLA_DASHBOARD)",
                    self.base
                )
            })?;
        let status = res.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let body: Value = res
            .json()
            .await
            .with_context(|| format!("the dashboard's answer to {path} ({status}) is not JSON"))?;
        if !status.is_success() {
            let detail = body["detail"]
                .as_str()
                .or(body["title"].as_str())
                .unwrap_or("");
            let fields = body["errors"]
                .as_array()
                .map(|errors| {
                    errors
                        .iter()
                        .map(|e| {
                            format!(
                                " {}: {}",
                                e["field"].as_str().unwrap_or("?"),
                                e["message"].as_str().unwrap_or("")
                            )
                        })
                        .collect::<String>()
                })
                .unwrap_or_default();
            bail!("the dashboard refused {path}: {status} {detail}{fields}");
        }
        Ok(Some(body))
    }
}

/// `?k=v&…` with the values percent-encoded (everything but RFC 3986's unreserved
/// characters), or nothing for no pairs.
fn query_string(pairs: &[(&str, String)]) -> String {
    let mut out = String::new();
    for (n, (k, v)) in pairs.iter().enumerate() {
        out.push(if n == 0 { '?' } else { '&' });
        out.push_str(k);
        out.push('=');
        for b in v.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                out.push(b as char);
            } else {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

#[derive(Debug, Deserialize)]
struct Trace {
    trace_id: String,
    duration_ms: f64,
    spans: Vec<Span>,
}

#[derive(Debug, Clone, Deserialize)]
struct Span {
    span_id: String,
    parent_span_id: Option<String>,
    service: String,
    name: String,
    #[serde(default)]
    kind: String,
    offset_ms: f64,
    duration_ms: f64,
    status: String,
    #[serde(default)]
    status_message: Option<String>,
}

/// One line of the waterfall: a span, its place in the tree, and how it relates to its
/// parent.
#[derive(Debug, PartialEq)]
struct Row {
    /// Index into the trace's spans.
    span: usize,
    /// Box-drawing prefix drawing the tree (`├─ `, `│  └─ `…).
    prefix: String,
    /// Its parent is named but not in the trace (not received, or dropped).
    orphan: bool,
    /// A consumer span that starts after its parent ended: an asynchronous hop.
    async_hop: bool,
}

/// The spans depth-first by parent, siblings by start. A span whose parent is missing is
/// shown as a root and marked; a cycle of parents (a broken exporter) cannot loop.
fn tree(spans: &[Span]) -> Vec<Row> {
    let index: HashMap<&str, usize> = spans
        .iter()
        .enumerate()
        .map(|(i, s)| (s.span_id.as_str(), i))
        .collect();
    let mut children: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut roots = Vec::new();
    for (i, s) in spans.iter().enumerate() {
        match s.parent_span_id.as_deref().and_then(|p| index.get(p)) {
            Some(&p) if p != i => children.entry(p).or_default().push(i),
            _ => roots.push(i),
        }
    }
    let by_start = |a: &usize, b: &usize| spans[*a].offset_ms.total_cmp(&spans[*b].offset_ms);
    roots.sort_by(by_start);
    for list in children.values_mut() {
        list.sort_by(by_start);
    }
    let mut rows = Vec::new();
    let mut seen = vec![false; spans.len()];
    // Roots first; then whatever a cycle of parents kept unreachable, so no span is lost.
    let mut by_start_all: Vec<usize> = (0..spans.len()).collect();
    by_start_all.sort_by(by_start);
    for start in roots.iter().chain(&by_start_all).copied() {
        // (span, the prefix its children continue, its own connector)
        let mut stack = vec![(start, String::new(), String::new())];
        while let Some((i, indent, connector)) = stack.pop() {
            if std::mem::replace(&mut seen[i], true) {
                continue;
            }
            let s = &spans[i];
            let parent = s
                .parent_span_id
                .as_deref()
                .and_then(|p| index.get(p))
                .copied()
                .filter(|&p| p != i);
            let async_hop = parent.is_some_and(|p| {
                let p = &spans[p];
                s.offset_ms >= p.offset_ms + p.duration_ms
                    && (s.kind == "consumer" || p.kind == "producer")
            });
            rows.push(Row {
                span: i,
                prefix: format!("{indent}{connector}"),
                orphan: s.parent_span_id.is_some() && parent.is_none(),
                async_hop,
            });
            let kids = children.get(&i).map(Vec::as_slice).unwrap_or(&[]);
            let below = match connector.as_str() {
                "" => indent.clone(),
                "└─ " => format!("{indent}   "),
                _ => format!("{indent}│  "),
            };
            for (n, &c) in kids.iter().enumerate().rev() {
                let last = n + 1 == kids.len();
                stack.push((
                    c,
                    below.clone(),
                    if last { "└─ " } else { "├─ " }.to_owned(),
                ));
            }
        }
    }
    rows
}

/// Where a span's bar starts and how many columns it fills on a `cols`-wide axis for a
/// trace of `total_ms`: at least one column, never past the axis's end.
fn bar(offset_ms: f64, duration_ms: f64, total_ms: f64, cols: usize) -> (usize, usize) {
    if cols == 0 {
        return (0, 0);
    }
    let total = if total_ms > 0.0 { total_ms } else { 1.0 };
    let scale = |ms: f64| ((ms.max(0.0) / total) * cols as f64).round() as usize;
    let start = scale(offset_ms).min(cols - 1);
    let end = scale(offset_ms + duration_ms).clamp(start + 1, cols);
    (start, end - start)
}

/// A duration as the UI shows it: µs under a millisecond, seconds past one.
fn duration(ms: f64) -> String {
    if ms < 1.0 {
        format!("{:.0} µs", ms * 1000.0)
    } else if ms < 1000.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{:.2} s", ms / 1000.0)
    }
}

fn service_style(service: &str) -> Style {
    const PALETTE: [AnsiColor; 6] = [
        AnsiColor::Cyan,
        AnsiColor::Magenta,
        AnsiColor::Yellow,
        AnsiColor::Green,
        AnsiColor::Blue,
        AnsiColor::BrightRed,
    ];
    let hash = service
        .bytes()
        .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
    Style::new().fg_color(Some(PALETTE[hash % PALETTE.len()].into()))
}

/// Truncates to `width` characters, marking the cut with `…`.
fn fit(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The waterfall, `width` columns wide, with ANSI colours when `colour`.
fn render(trace: &Trace, width: usize, colour: bool) -> String {
    let paint = |style: Style, text: &str| {
        if colour {
            format!("{style}{text}{style:#}")
        } else {
            text.to_owned()
        }
    };
    let bold = Style::new().bold();
    let dim = Style::new().dimmed();
    let red = Style::new().fg_color(Some(AnsiColor::Red.into())).bold();
    let rows = tree(&trace.spans);
    let mut services: Vec<&str> = trace.spans.iter().map(|s| s.service.as_str()).collect();
    services.sort_unstable();
    services.dedup();
    let errors = trace.spans.iter().filter(|s| s.status == "error").count();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} {}  {}  {} spans  {} error{}  {}",
        paint(bold, "trace"),
        trace.trace_id,
        duration(trace.duration_ms),
        trace.spans.len(),
        errors,
        if errors == 1 { "" } else { "s" },
        services.join(", ")
    );
    if rows.is_empty() {
        out.push_str("(no spans)\n");
        return out;
    }
    // label | duration (9) | status (5) | bar
    let labels: Vec<String> = rows
        .iter()
        .map(|r| {
            let s = &trace.spans[r.span];
            format!("{}{} {}", r.prefix, s.service, s.name)
        })
        .collect();
    let widest = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0);
    let label_cols = widest.min(width / 2).max(12);
    let cols = width.saturating_sub(label_cols + 9 + 5 + 5).max(10);
    let axis_end = duration(trace.duration_ms);
    let _ = writeln!(
        out,
        "{:label_cols$} {:>9} {:<5} |{}{}|",
        "",
        "",
        "",
        paint(dim, "0"),
        paint(dim, &format!("{axis_end:>w$}", w = cols - 1))
    );
    for (row, label) in rows.iter().zip(&labels) {
        let s = &trace.spans[row.span];
        let (start, len) = bar(s.offset_ms, s.duration_ms, trace.duration_ms, cols);
        let fill = if row.async_hop { "▒" } else { "█" };
        let gap = if row.async_hop { "·" } else { " " };
        // an async hop's dotted lead-in starts where its parent ended
        let lead = if row.async_hop {
            let parent = s
                .parent_span_id
                .as_deref()
                .and_then(|p| trace.spans.iter().find(|x| x.span_id == p))
                .map_or(0, |p| {
                    let (from, len) = bar(p.offset_ms, p.duration_ms, trace.duration_ms, cols);
                    from + len
                });
            parent.min(start)
        } else {
            start
        };
        let track = format!(
            "{}{}{}{}",
            " ".repeat(lead),
            gap.repeat(start - lead),
            paint(
                if s.status == "error" {
                    red
                } else {
                    service_style(&s.service)
                },
                &fill.repeat(len)
            ),
            " ".repeat(cols - start - len),
        );
        let label = fit(label, label_cols);
        let pad = label_cols - label.chars().count();
        let label = match label.split_once(&s.service) {
            Some((tree, rest)) if colour => format!(
                "{tree}{}{rest}",
                paint(service_style(&s.service), &s.service)
            ),
            _ => label,
        };
        let status = match s.status.as_str() {
            "error" => paint(red, "ERROR"),
            "ok" => "ok   ".to_owned(),
            _ => paint(dim, "-    "),
        };
        let mut note = String::new();
        if row.async_hop {
            note.push_str(" async");
        }
        if row.orphan {
            note.push_str(" (parent missing)");
        }
        if let Some(m) = s.status_message.as_deref().filter(|_| s.status == "error") {
            let _ = write!(note, " {m}");
        }
        let _ = writeln!(
            out,
            "{label}{} {:>9} {status} |{track}|{}",
            " ".repeat(pad),
            duration(s.duration_ms),
            paint(dim, &note)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(id: &str, parent: Option<&str>, service: &str, offset: f64, dur: f64) -> Span {
        Span {
            span_id: id.into(),
            parent_span_id: parent.map(Into::into),
            service: service.into(),
            name: format!("{service} op"),
            kind: "internal".into(),
            offset_ms: offset,
            duration_ms: dur,
            status: "ok".into(),
            status_message: None,
        }
    }

    fn order(rows: &[Row], spans: &[Span]) -> Vec<String> {
        rows.iter()
            .map(|r| format!("{}{}", r.prefix, spans[r.span].span_id))
            .collect()
    }

    #[test]
    fn tree_nests_children_under_parents_by_start() {
        // given out of order: children before their parent, siblings reversed
        let spans = vec![
            span("c2", Some("b"), "payments", 6.0, 1.0),
            span("c1", Some("b"), "inventory", 2.0, 1.0),
            span("b", Some("a"), "orders", 1.0, 8.0),
            span("a", None, "gateway", 0.0, 10.0),
            span("d", Some("a"), "orders", 9.5, 0.2),
        ];
        let rows = tree(&spans);
        assert_eq!(
            order(&rows, &spans),
            ["a", "├─ b", "│  ├─ c1", "│  └─ c2", "└─ d"]
        );
        assert!(rows.iter().all(|r| !r.orphan && !r.async_hop));
    }

    #[test]
    fn orphans_are_roots_marked_as_such() {
        let spans = vec![
            span("a", None, "gateway", 0.0, 10.0),
            span("x", Some("missing"), "notifications", 3.0, 1.0),
            span("y", Some("x"), "notifications", 3.5, 0.1),
            span("self", Some("self"), "analytics", 4.0, 1.0),
        ];
        let rows = tree(&spans);
        assert_eq!(order(&rows, &spans), ["a", "x", "└─ y", "self"]);
        let orphan: Vec<bool> = rows.iter().map(|r| r.orphan).collect();
        assert_eq!(orphan, [false, true, false, true]);
    }

    #[test]
    fn a_cycle_of_parents_does_not_loop_or_drop_spans() {
        let spans = vec![
            span("a", Some("b"), "orders", 0.0, 1.0),
            span("b", Some("a"), "orders", 1.0, 1.0),
        ];
        // neither is a root: both are reachable only through each other
        let rows = tree(&spans);
        assert_eq!(order(&rows, &spans), ["a", "└─ b"]);
    }

    #[test]
    fn a_consumer_starting_after_its_parent_ended_is_an_async_hop() {
        let mut consumer = span("c", Some("p"), "notifications", 12.0, 2.0);
        consumer.kind = "consumer".into();
        let mut sync = span("s", Some("p"), "inventory", 1.0, 2.0);
        sync.kind = "consumer".into();
        let spans = vec![span("p", None, "orders", 0.0, 5.0), sync, consumer];
        let rows = tree(&spans);
        let hops: Vec<bool> = rows.iter().map(|r| r.async_hop).collect();
        assert_eq!(hops, [false, false, true]);
    }

    #[test]
    fn bars_scale_to_the_axis_and_stay_visible() {
        assert_eq!(bar(0.0, 10.0, 10.0, 50), (0, 50));
        assert_eq!(bar(5.0, 5.0, 10.0, 50), (25, 25));
        assert_eq!(bar(2.5, 2.5, 10.0, 40), (10, 10));
        // a span far shorter than a column still shows
        assert_eq!(bar(3.0, 0.0001, 10.0, 40), (12, 1));
        // the last instant still fits on the axis
        assert_eq!(bar(10.0, 0.0, 10.0, 40), (39, 1));
        // a span reported past the trace's end is clipped, not overflowing
        assert_eq!(bar(8.0, 50.0, 10.0, 40), (32, 8));
        assert_eq!(bar(0.0, 0.0, 0.0, 20), (0, 1));
        assert_eq!(bar(1.0, 1.0, 10.0, 0), (0, 0));
    }

    #[test]
    fn renders_every_span_within_the_width() {
        let mut failed = span("b", Some("a"), "payments", 2.0, 3.0);
        failed.status = "error".into();
        failed.status_message = Some("card declined".into());
        let trace = Trace {
            trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
            duration_ms: 10.0,
            spans: vec![span("a", None, "gateway", 0.0, 10.0), failed],
        };
        let out = render(&trace, 100, false);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4, "{out}");
        assert!(
            lines[0].contains("2 spans  1 error  gateway, payments"),
            "{out}"
        );
        assert!(lines[2].starts_with("gateway gateway op"), "{out}");
        assert!(lines[3].starts_with("└─ payments payments op"), "{out}");
        assert!(
            lines[3].contains("ERROR") && lines[3].contains("card declined"),
            "{out}"
        );
        // every line's axis ends at the last column; notes may follow it
        for l in &lines[1..] {
            let axis_end = l.chars().position(|c| c == '|').unwrap()
                + l.split('|').nth(1).unwrap().chars().count()
                + 2;
            assert_eq!(axis_end, 100, "{l:?}");
        }
        assert!(!out.contains('\x1b'), "no colour unless asked");
        assert!(render(&trace, 100, true).contains('\x1b'));
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(query_string(&[]), "");
        let q = query_string(&[("q", "a b&c=d/é".into()), ("limit", "5".into())]);
        assert_eq!(q, "?q=a%20b%26c%3Dd%2F%C3%A9&limit=5");
    }

    #[test]
    fn durations_read_like_the_ui() {
        assert_eq!(duration(0.25), "250 µs");
        assert_eq!(duration(12.345), "12.3 ms");
        assert_eq!(duration(1234.0), "1.23 s");
    }
}
