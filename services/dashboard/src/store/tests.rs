//! The store and retention against a real SQLite file.

use std::time::Duration;

use serde_json::json;

use super::*;
use crate::retention::{Policy, run_once};

const SECOND: i64 = 1_000_000_000;

async fn store() -> (tempfile::TempDir, TelemetryStore) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/dashboard.db", dir.path().display());
    (dir, TelemetryStore::open(&url, "TEST").await.unwrap())
}

fn span(trace: u32, span: u32, parent: Option<u32>, service: &str, start_s: i64) -> SpanRow {
    SpanRow {
        trace_id: format!("{trace:032x}"),
        span_id: format!("{span:016x}"),
        parent_span_id: parent.map(|p| format!("{p:016x}")),
        service: service.to_owned(),
        instance: Some(format!("{service}-1")),
        name: format!("op {span}"),
        kind: 2,
        start_ns: start_s * SECOND,
        end_ns: start_s * SECOND + 5_000_000,
        status: 0,
        status_message: None,
        attributes: json!({"http.route": "/api/orders", "pad": "x".repeat(200)}),
        events: json!([]),
    }
}

fn log(time_s: i64, trace: Option<(u32, u32)>) -> LogRow {
    LogRow {
        time_ns: time_s * SECOND,
        service: "orders".to_owned(),
        instance: None,
        severity: 9,
        severity_text: None,
        message: format!("at {time_s} {}", "y".repeat(200)),
        trace_id: trace.map(|(t, _)| format!("{t:032x}")),
        span_id: trace.map(|(_, s)| format!("{s:016x}")),
        attributes: json!({}),
    }
}

async fn write(store: &TelemetryStore, spans: &[SpanRow], logs: &[LogRow]) -> Written {
    let spans: Vec<&SpanRow> = spans.iter().collect();
    let logs: Vec<&LogRow> = logs.iter().collect();
    store.write(&spans, &logs).await.unwrap()
}

#[tokio::test]
async fn a_trace_summary_follows_its_spans_in_any_order() {
    let (_dir, store) = store().await;
    // A child first: the trace's root is the earliest span so far.
    let mut child = span(1, 2, Some(1), "orders", 101);
    child.status = 2;
    write(&store, &[child.clone()], &[]).await;
    let t = &store
        .traces(&TraceFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap()[0];
    assert_eq!(
        (t.root_service.as_str(), t.span_count, t.error),
        ("orders", 1, true)
    );
    // Then the root: it takes over, the summary widens.
    let mut root = span(1, 1, None, "gateway", 100);
    root.end_ns = 103 * SECOND;
    root.attributes = json!({"http.route": "/api/orders/{id}"});
    let w = write(&store, &[root.clone(), child.clone()], &[]).await;
    assert_eq!(w.spans, 1, "the child was stored already");
    let t = &store
        .traces(&TraceFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap()[0];
    assert_eq!(t.root_service, "gateway");
    assert_eq!(t.root_name, "op 1");
    assert_eq!(t.route.as_deref(), Some("/api/orders/{id}"));
    assert_eq!((t.start_ns, t.end_ns), (100 * SECOND, 103 * SECOND));
    assert_eq!(t.span_count, 2);
    assert_eq!(t.services, vec!["gateway", "orders"]);
    assert!(t.error);
    // A span with a parent that started earlier moves the start, not the root.
    write(&store, &[span(1, 3, Some(1), "inventory", 99)], &[]).await;
    let t = &store
        .traces(&TraceFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap()[0];
    assert_eq!(t.root_service, "gateway");
    assert_eq!(t.start_ns, 99 * SECOND);
    assert_eq!(t.services, vec!["gateway", "inventory", "orders"]);
}

#[tokio::test]
async fn filters_select_traces_and_logs() {
    let (_dir, store) = store().await;
    let mut slow = span(2, 1, None, "gateway", 200);
    slow.end_ns = 202 * SECOND;
    let mut failed = span(3, 1, None, "gateway", 300);
    failed.status = 2;
    failed.attributes = json!({"url.path": "/api/x"});
    write(
        &store,
        &[
            span(1, 1, None, "gateway", 100),
            span(1, 2, Some(1), "orders", 100),
            slow,
            failed,
        ],
        &[
            log(100, Some((1, 2))),
            log(101, Some((1, 2))),
            log(102, None),
        ],
    )
    .await;
    let ids = |ts: Vec<TraceSummary>| ts.into_iter().map(|t| t.trace_id).collect::<Vec<_>>();
    let all = TraceFilter {
        limit: 10,
        ..Default::default()
    };
    assert_eq!(
        ids(store.traces(&all).await.unwrap()),
        vec![
            format!("{:032x}", 3),
            format!("{:032x}", 2),
            format!("{:032x}", 1)
        ],
        "newest first"
    );
    let orders = TraceFilter {
        service: Some("orders".into()),
        ..all.clone()
    };
    assert_eq!(
        ids(store.traces(&orders).await.unwrap()),
        vec![format!("{:032x}", 1)]
    );
    let errors = TraceFilter {
        error: Some(true),
        ..all.clone()
    };
    assert_eq!(
        ids(store.traces(&errors).await.unwrap()),
        vec![format!("{:032x}", 3)]
    );
    let ok = TraceFilter {
        error: Some(false),
        ..all.clone()
    };
    assert_eq!(store.traces(&ok).await.unwrap().len(), 2);
    let long = TraceFilter {
        min_duration_ns: Some(SECOND),
        ..all.clone()
    };
    assert_eq!(
        ids(store.traces(&long).await.unwrap()),
        vec![format!("{:032x}", 2)]
    );
    let path = TraceFilter {
        route: Some("/api/x".into()),
        ..all.clone()
    };
    assert_eq!(
        ids(store.traces(&path).await.unwrap()),
        vec![format!("{:032x}", 3)]
    );
    let page = TraceFilter {
        before_ns: Some(300 * SECOND),
        limit: 1,
        ..all.clone()
    };
    assert_eq!(
        ids(store.traces(&page).await.unwrap()),
        vec![format!("{:032x}", 2)]
    );

    let spans = store.trace(&format!("{:032x}", 1)).await.unwrap();
    let counts: Vec<i64> = spans.iter().map(|s| s.log_count).collect();
    assert_eq!(counts, vec![0, 2], "the orders span's two records");
    let in_span = LogFilter {
        trace_id: Some(format!("{:032x}", 1)),
        span_id: Some(format!("{:016x}", 2)),
        limit: 10,
        ..Default::default()
    };
    assert_eq!(store.logs(&in_span).await.unwrap().len(), 2);
    let text = LogFilter {
        text: Some("AT 102".into()),
        limit: 10,
        ..Default::default()
    };
    assert_eq!(
        store.logs(&text).await.unwrap().len(),
        1,
        "case-insensitive"
    );
    let wildcard = LogFilter {
        text: Some("%".into()),
        limit: 10,
        ..Default::default()
    };
    assert!(
        store.logs(&wildcard).await.unwrap().is_empty(),
        "% is literal"
    );
    let newest = store
        .logs(&LogFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(newest[0].id > newest[2].id, "newest first");
    let follow = LogFilter {
        after_id: Some(newest[2].id),
        limit: 10,
        ..Default::default()
    };
    let after: Vec<i64> = store
        .logs(&follow)
        .await
        .unwrap()
        .iter()
        .map(|l| l.id)
        .collect();
    assert_eq!(
        after,
        vec![newest[1].id, newest[0].id],
        "oldest first after the id"
    );
}

#[tokio::test]
async fn retention_by_age_deletes_old_traces_and_logs_and_keeps_new_ones() {
    let (_dir, store) = store().await;
    let now = 10_000 * SECOND;
    write(
        &store,
        &[
            span(1, 1, None, "a", 1_000),
            span(1, 2, Some(1), "b", 1_001),
            span(2, 1, None, "a", 9_990),
        ],
        &[log(1_000, None), log(9_995, None)],
    )
    .await;
    let policy = Policy {
        age: Duration::from_secs(60),
        size: u64::MAX,
        interval: Duration::from_secs(1),
    };
    let pass = run_once(&store, &policy, now).await.unwrap();
    assert_eq!((pass.old_traces, pass.old_logs), (1, 1));
    assert_eq!(store.counts().await.unwrap(), (1, 1));
    assert!(
        store
            .trace(&format!("{:032x}", 1))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.trace(&format!("{:032x}", 2)).await.unwrap().len(), 1);
    let traces = store
        .traces(&TraceFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(traces.len(), 1);
    assert_eq!(
        traces[0].services,
        vec!["a"],
        "the services of deleted traces go too"
    );
    assert_eq!(run_once(&store, &policy, now).await.unwrap().deleted(), 0);
}

#[tokio::test]
async fn retention_by_size_brings_the_database_under_the_limit_oldest_first() {
    let (_dir, store) = store().await;
    for batch in 0..20u32 {
        let spans: Vec<SpanRow> = (0..250u32)
            .map(|i| {
                span(
                    batch * 1000 + i + 1,
                    1,
                    None,
                    "gateway",
                    i64::from(batch * 1000 + i),
                )
            })
            .collect();
        let logs: Vec<LogRow> = (0..250)
            .map(|i| log(i64::from(batch * 1000) + i, None))
            .collect();
        write(&store, &spans, &logs).await;
    }
    let before = store.used_bytes().await.unwrap();
    let limit = before / 3;
    let policy = Policy {
        age: Duration::from_secs(1_000_000_000),
        size: limit,
        interval: Duration::from_secs(1),
    };
    let pass = run_once(&store, &policy, 20_000 * SECOND).await.unwrap();
    assert!(
        pass.traces_for_size > 0 && pass.logs_for_size > 0,
        "{pass:?}"
    );
    let after = store.used_bytes().await.unwrap();
    assert!(after <= limit, "{after} > {limit} (was {before})");
    // The newest are kept.
    let newest = store
        .traces(&TraceFilter {
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(newest[0].trace_id, format!("{:032x}", 19 * 1000 + 250));
    // The file shrinks with it (freed pages go back to the file system).
    let (pages, free): (i64, i64) = sqlx::query_as(
        "SELECT p.page_count, f.freelist_count FROM pragma_page_count() p, pragma_freelist_count() f",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(free, 0, "{pages} pages");
}
