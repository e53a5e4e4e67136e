//! The bus's HTTP API: publish, declare groups, stream deliveries (NDJSON over one
//! chunked response per consumer), ack/nack, and the read-only views `flotilla bus` uses.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use bytes::Bytes;
use kit::Problem;
use kit_events::embedded::wire::{
    AckRequest, DeliveryLine, GroupRequest, NackRequest, PublishResponse,
};
use kit_events::{Event, valid_group_name, valid_subject};
use serde::Deserialize;

use crate::log::{Claimed, Log, LogError, now_ms};

/// How often an idle delivery stream sends a heartbeat line.
pub const HEARTBEAT: Duration = Duration::from_secs(5);

/// The routes.
pub fn router(log: Arc<Log>) -> Router {
    Router::new()
        .route("/v1/subjects", get(subjects))
        .route("/v1/subjects/{subject}/events", post(publish))
        .route("/v1/events", get(peek))
        .route("/v1/groups", get(groups))
        .route("/v1/deadletters/{seq}/replay", post(replay))
        .route("/v1/groups/{group}", put(put_group))
        .route("/v1/groups/{group}/deliveries", get(deliveries))
        .route("/v1/groups/{group}/ack", post(ack))
        .route("/v1/groups/{group}/nack", post(nack))
        .with_state(log)
}

fn problem(e: LogError) -> Problem {
    match e {
        LogError::NoGroup(g) => Problem::not_found(format!("no consumer group {g:?}")),
        e @ LogError::NoDeadLetter(_) => Problem::not_found(e.to_string()),
        e @ LogError::Gone(_) => Problem::conflict(e.to_string()),
        LogError::Db(e) => {
            tracing::error!(error = %e, "bus database failed");
            Problem::internal("the bus database failed")
        }
    }
}

fn check_group(group: &str) -> Result<(), Problem> {
    if valid_group_name(group) {
        Ok(())
    } else {
        Err(Problem::bad_request(format!(
            "invalid group name {group:?}"
        )))
    }
}

async fn publish(
    State(log): State<Arc<Log>>,
    Path(subject): Path<String>,
    body: Bytes,
) -> Result<Response, Problem> {
    if !valid_subject(&subject, false) {
        return Err(Problem::bad_request(format!("invalid subject {subject:?}")));
    }
    let event: Event = serde_json::from_slice(&body)
        .map_err(|e| Problem::bad_request(format!("not a CloudEvents JSON event: {e}")))?;
    if event.id.is_empty() {
        return Err(Problem::bad_request("the event has no id"));
    }
    // Stored as sent (it parsed as an event), so consumers see the producer's bytes.
    let payload = std::str::from_utf8(&body).map_err(|_| Problem::bad_request("not UTF-8"))?;
    let (seq, duplicate) = log
        .publish(&subject, &event.id, payload)
        .await
        .map_err(problem)?;
    let status = if duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, axum::Json(PublishResponse { seq, duplicate })).into_response())
}

async fn put_group(
    State(log): State<Arc<Log>>,
    Path(group): Path<String>,
    axum::Json(req): axum::Json<GroupRequest>,
) -> Result<StatusCode, Problem> {
    check_group(&group)?;
    if req.subjects.is_empty() || !req.subjects.iter().all(|s| valid_subject(s, true)) {
        return Err(Problem::bad_request(
            "subjects must be one or more valid filters",
        ));
    }
    log.put_group(&group, &req).await.map_err(problem)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
struct DeliveriesQuery {
    consumer: String,
    #[serde(default = "default_in_flight")]
    max_in_flight: u32,
}

fn default_in_flight() -> u32 {
    64
}

async fn deliveries(
    State(log): State<Arc<Log>>,
    Path(group): Path<String>,
    Query(q): Query<DeliveriesQuery>,
) -> Result<Response, Problem> {
    check_group(&group)?;
    if q.consumer.is_empty() || q.consumer.len() > 64 {
        return Err(Problem::bad_request("consumer must be 1 to 64 characters"));
    }
    // Fail now (404) rather than in the stream if the group does not exist.
    log.claim(&group, &q.consumer, 0).await.map_err(problem)?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    tokio::spawn(stream_deliveries(
        log,
        group,
        q.consumer,
        q.max_in_flight.clamp(1, 10_000),
        tx,
    ));
    let body = futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx).map(|o| o.map(Ok::<_, Infallible>))
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

fn lines(claimed: &[Claimed]) -> Bytes {
    let mut out = String::new();
    for c in claimed {
        // The payload is already JSON; it is spliced in rather than parsed again.
        out.push_str(&format!(
            "{{\"seq\":{},\"subject\":{},\"attempt\":{},\"event\":{}}}\n",
            c.seq,
            serde_json::to_string(&c.subject).expect("strings serialize"),
            c.attempt,
            c.payload
        ));
    }
    Bytes::from(out)
}

/// Feeds one consumer's stream: claims what is due, sends it, then sleeps until the log
/// changes, a pending delivery comes due, or a heartbeat is owed.
async fn stream_deliveries(
    log: Arc<Log>,
    group: String,
    consumer: String,
    max_in_flight: u32,
    tx: tokio::sync::mpsc::Sender<Bytes>,
) {
    let mut changes = log.watch();
    loop {
        changes.borrow_and_update();
        let claimed = match log.claim(&group, &consumer, max_in_flight).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(group, error = %e, "cannot claim deliveries; closing the stream");
                return;
            }
        };
        if !claimed.is_empty() {
            if tx.send(lines(&claimed)).await.is_err() {
                let seqs: Vec<i64> = claimed.iter().map(|c| c.seq).collect();
                let _ = log.release(&group, &consumer, &seqs).await;
                return;
            }
            continue;
        }
        let wait = match log.next_due(&group).await {
            Ok(Some(due)) => {
                Duration::from_millis(u64::try_from(due - now_ms()).unwrap_or(0).max(5))
                    .min(HEARTBEAT)
            }
            _ => HEARTBEAT,
        };
        match tokio::time::timeout(wait, changes.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                if wait == HEARTBEAT && tx.send(Bytes::from_static(b"\n")).await.is_err() {
                    return;
                }
            }
        }
        if tx.is_closed() {
            return;
        }
    }
}

async fn ack(
    State(log): State<Arc<Log>>,
    Path(group): Path<String>,
    axum::Json(req): axum::Json<AckRequest>,
) -> Result<StatusCode, Problem> {
    check_group(&group)?;
    log.ack(&group, &req.seqs).await.map_err(problem)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn nack(
    State(log): State<Arc<Log>>,
    Path(group): Path<String>,
    axum::Json(req): axum::Json<NackRequest>,
) -> Result<StatusCode, Problem> {
    check_group(&group)?;
    log.nack(&group, req.seq, Duration::from_millis(req.delay_ms))
        .await
        .map_err(problem)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn replay(State(log): State<Arc<Log>>, Path(seq): Path<i64>) -> Result<Response, Problem> {
    let (group, original) = log.replay_dead_letter(seq).await.map_err(problem)?;
    Ok(axum::Json(serde_json::json!({"group": group, "seq": original})).into_response())
}

async fn subjects(State(log): State<Arc<Log>>) -> Result<Response, Problem> {
    Ok(axum::Json(log.subjects().await.map_err(problem)?).into_response())
}

async fn groups(State(log): State<Arc<Log>>) -> Result<Response, Problem> {
    Ok(axum::Json(log.groups().await.map_err(problem)?).into_response())
}

#[derive(Debug, Deserialize)]
struct PeekQuery {
    #[serde(default = "all_subjects")]
    subject: String,
    #[serde(default)]
    after: i64,
    #[serde(default = "default_limit")]
    limit: i64,
}

fn all_subjects() -> String {
    ">".to_owned()
}

fn default_limit() -> i64 {
    20
}

async fn peek(
    State(log): State<Arc<Log>>,
    Query(q): Query<PeekQuery>,
) -> Result<Response, Problem> {
    if !valid_subject(&q.subject, true) {
        return Err(Problem::bad_request(format!(
            "invalid subject filter {:?}",
            q.subject
        )));
    }
    let events = log
        .peek(&q.subject, q.after, q.limit.clamp(1, 1000))
        .await
        .map_err(problem)?;
    let items: Vec<DeliveryLine> = events
        .into_iter()
        .filter_map(|e| {
            Some(DeliveryLine {
                seq: e.seq,
                subject: e.subject,
                attempt: 0,
                event: serde_json::from_str(&e.payload).ok()?,
            })
        })
        .collect();
    Ok(axum::Json(items).into_response())
}
