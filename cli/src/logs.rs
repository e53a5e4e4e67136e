//! `flotilla logs [service]`: the fleet's aggregated logs from the dashboard, oldest
//! first; `--follow` keeps printing new records as they arrive (it asks for the records
//! after the last id it printed, so none is shown twice or skipped).

use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::time::Duration;

use anstyle::{AnsiColor, Style};
use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::trace::{DEFAULT_DASHBOARD, Dashboard};

/// How often `--follow` asks for new records.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);

/// `flotilla logs …`
#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// Only this service's records.
    service: Option<String>,
    /// Only the records of this trace (32 hex digits).
    #[arg(long = "trace", value_name = "ID")]
    trace_id: Option<String>,
    /// Minimum level: `warn` shows WARN and ERROR.
    #[arg(long, value_parser = ["trace", "debug", "info", "warn", "error"], ignore_case = true)]
    level: Option<String>,
    /// Only records whose message contains this text (case-insensitive).
    #[arg(long)]
    grep: Option<String>,
    /// Keep printing new records until interrupted.
    #[arg(long, short)]
    follow: bool,
    /// How many of the most recent records to show first (at most 1000).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    limit: u32,
    /// One JSON object per line, as the dashboard returns them.
    #[arg(long)]
    json: bool,
    /// The dashboard's base URL.
    #[arg(long, env = "FLOTILLA_DASHBOARD", default_value = DEFAULT_DASHBOARD)]
    dashboard: String,
}

/// Runs `flotilla logs`.
pub fn logs(args: LogsArgs) -> ExitCode {
    crate::block_on("logs", run(args))
}

async fn run(args: LogsArgs) -> anyhow::Result<()> {
    let dashboard = Dashboard::new(&args.dashboard)?;
    let mut query: Vec<(&str, String)> = Vec::new();
    if let Some(s) = &args.service {
        query.push(("service", s.clone()));
    }
    if let Some(t) = &args.trace_id {
        let t = t.trim().to_ascii_lowercase();
        if t.len() != 32 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!("--trace {t:?} is not a trace id (32 hex digits)");
        }
        query.push(("trace_id", t));
    }
    if let Some(l) = &args.level {
        query.push(("level", l.to_ascii_lowercase()));
    }
    if let Some(q) = &args.grep {
        query.push(("q", q.clone()));
    }
    let colour = !args.json && std::io::stdout().is_terminal();

    let mut first = query.clone();
    first.push(("limit", args.limit.to_string()));
    // newest first: print them the other way round
    let mut records = fetch(&dashboard, &first).await?;
    records.reverse();
    let mut last_id = print(&records, args.json, colour, 0)?;
    if !args.follow {
        return Ok(());
    }
    let mut unreachable = false;
    loop {
        tokio::time::sleep(FOLLOW_EVERY).await;
        let mut next = query.clone();
        next.push(("after_id", last_id.to_string()));
        next.push(("limit", "1000".to_owned()));
        match fetch(&dashboard, &next).await {
            // after_id: oldest first already
            Ok(records) => {
                if std::mem::take(&mut unreachable) {
                    eprintln!("flotilla logs: the dashboard answers again");
                }
                last_id = print(&records, args.json, colour, last_id)?;
            }
            Err(e) if !unreachable => {
                eprintln!("flotilla logs: {e:#}; still trying");
                unreachable = true;
            }
            Err(_) => {}
        }
    }
}

async fn fetch(dashboard: &Dashboard, query: &[(&str, String)]) -> anyhow::Result<Vec<Value>> {
    let body = dashboard
        .get("/api/logs", query)
        .await?
        .context("the dashboard has no /api/logs (is it a Flotilla dashboard?)")?;
    match body {
        Value::Object(mut o) => match o.remove("logs") {
            Some(Value::Array(logs)) => Ok(logs),
            _ => bail!("the dashboard's /api/logs answer has no \"logs\" list"),
        },
        _ => bail!("the dashboard's /api/logs answer is not an object"),
    }
}

/// Prints the records; returns the highest id seen (at least `last_id`).
fn print(records: &[Value], json: bool, colour: bool, last_id: i64) -> anyhow::Result<i64> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let mut last = last_id;
    for r in records {
        last = last.max(r["id"].as_i64().unwrap_or(last));
        let line = if json { r.to_string() } else { line(r, colour) };
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    Ok(last)
}

/// One record as a terminal line: time, level, service, message, attributes, trace.
fn line(r: &Value, colour: bool) -> String {
    let text = |k: &str| r[k].as_str().unwrap_or("");
    let paint = |style: Style, t: &str| {
        if colour {
            format!("{style}{t}{style:#}")
        } else {
            t.to_owned()
        }
    };
    // RFC 3339 with milliseconds: show the time of day (the date is in --json)
    let time = text("time").get(11..23).unwrap_or(text("time"));
    let level = text("level");
    let level_style = match level {
        "ERROR" => Style::new().fg_color(Some(AnsiColor::Red.into())).bold(),
        "WARN" => Style::new().fg_color(Some(AnsiColor::Yellow.into())),
        "INFO" => Style::new().fg_color(Some(AnsiColor::Green.into())),
        _ => Style::new().dimmed(),
    };
    let mut out = format!(
        "{} {} {:>13} {}",
        paint(Style::new().dimmed(), time),
        paint(level_style, &format!("{level:<5}")),
        text("service"),
        text("message")
    );
    if let Some(attributes) = r["attributes"].as_object() {
        for (k, v) in attributes {
            match v {
                Value::String(s) => {
                    let _ = write!(out, " {k}={s}");
                }
                other => {
                    let _ = write!(out, " {k}={other}");
                }
            }
        }
    }
    if let Some(t) = r["trace_id"].as_str() {
        let span = r["span_id"]
            .as_str()
            .map(|s| format!("/{s}"))
            .unwrap_or_default();
        let _ = write!(
            out,
            " {}",
            paint(Style::new().dimmed(), &format!("trace={t}{span}"))
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_record_reads_as_one_line() {
        let r = json!({"id": 7, "time": "2026-12-01T19:45:10.123Z", "service": "orders",
            "instance": "orders-1", "level": "WARN", "message": "payment slow",
            "trace_id": "0af7651916cd43dd8448eb211c80319c", "span_id": "b7ad6b7169203331",
            "attributes": {"order_id": "o-1", "ms": 812}});
        assert_eq!(
            line(&r, false),
            "19:45:10.123 WARN         orders payment slow ms=812 order_id=o-1 \
             trace=0af7651916cd43dd8448eb211c80319c/b7ad6b7169203331"
        );
        let plain = json!({"id": 8, "time": "2026-12-01T19:45:11.000Z", "service": "gateway",
            "level": "INFO", "message": "up", "trace_id": null, "span_id": null, "attributes": {}});
        assert_eq!(line(&plain, false), "19:45:11.000 INFO        gateway up");
        assert!(line(&plain, true).contains('\x1b'));
    }
}
