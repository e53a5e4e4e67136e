//! Orders' admin API (on the admin listener only, never forwarded by the gateway): its
//! own state as an invariant checker (`flotilla verify`) and the dashboard need it.
//!
//! - `GET /admin/orders/in-flight`: the ids of the orders whose saga has not ended yet
//!   (still `PENDING`: running forward or compensating).
//! - `GET /admin/sagas?limit=`: recent sagas with their steps, in-flight first, then
//!   the most recently updated (limit 1-1000, default 50).

use ::saga::{SagaState, SagaStore, StepState};
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use kit::Problem;
use serde::{Deserialize, Serialize};

use crate::domain::rfc3339_ms;
use crate::store::OrderStore;

/// The most sagas one listing returns.
pub const MAX_SAGAS: u32 = 1000;

/// The admin routes over `store`.
pub fn router(store: OrderStore) -> Router {
    Router::new()
        .route("/admin/orders/in-flight", get(in_flight))
        .route("/admin/sagas", get(sagas))
        .with_state(store)
}

fn unavailable(e: impl std::fmt::Display) -> Problem {
    tracing::error!(error = %e, "orders store failed");
    Problem::unavailable(
        "the orders store is unavailable",
        std::time::Duration::from_secs(1),
    )
}

async fn in_flight(State(store): State<OrderStore>) -> Result<Json<Vec<String>>, Problem> {
    store.in_flight().await.map(Json).map_err(unavailable)
}

/// `GET /admin/sagas`'s answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SagaList {
    /// In-flight first, then the most recently updated.
    pub sagas: Vec<SagaSummary>,
}

/// One saga as operators see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SagaSummary {
    /// The saga id (the order id).
    pub id: String,
    /// Its kind.
    pub kind: String,
    /// `running`, `compensating`, `completed` or `compensated`.
    pub status: String,
    /// Why it is compensating.
    pub reason: Option<String>,
    /// Whether an operator should look at it.
    pub stuck: bool,
    /// RFC 3339.
    pub created: String,
    /// RFC 3339, of the last transition.
    pub updated: String,
    /// Its steps, in order.
    pub steps: Vec<StepSummary>,
}

/// One step of a saga.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepSummary {
    /// The step's name.
    pub name: String,
    /// `pending`, `done`, `failed` or `compensated`.
    pub status: String,
    /// Attempts of its action.
    pub attempts: u32,
    /// Attempts of its compensation.
    pub compensation_attempts: u32,
    /// When its status last changed (RFC 3339).
    pub at: Option<String>,
    /// Its last error.
    pub error: Option<String>,
}

fn as_text<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

impl From<&StepState> for StepSummary {
    fn from(s: &StepState) -> Self {
        Self {
            name: s.name.clone(),
            status: as_text(&s.status),
            attempts: s.attempts,
            compensation_attempts: s.compensation_attempts,
            at: s.at_ms.map(rfc3339_ms),
            error: s.error.clone(),
        }
    }
}

impl From<&SagaState> for SagaSummary {
    fn from(s: &SagaState) -> Self {
        Self {
            id: s.id.clone(),
            kind: s.kind.clone(),
            status: s.status.as_str().to_owned(),
            reason: s.reason.clone(),
            stuck: s.stuck,
            created: rfc3339_ms(s.created_ms),
            updated: rfc3339_ms(s.updated_ms),
            steps: s.steps.iter().map(StepSummary::from).collect(),
        }
    }
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    limit: Option<String>,
}

async fn sagas(
    State(store): State<OrderStore>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<SagaList>, Problem> {
    let Query(query) = query.map_err(|e| Problem::bad_request(e.body_text()))?;
    let limit = match query.limit.as_deref() {
        None | Some("") => 50,
        Some(v) => match v.parse::<u32>() {
            Ok(n) if (1..=MAX_SAGAS).contains(&n) => n,
            _ => {
                return Err(Problem::invalid_field(
                    "limit",
                    format!("must be an integer from 1 to {MAX_SAGAS}"),
                ));
            }
        },
    };
    let sagas = store.recent_sagas(limit).await.map_err(unavailable)?;
    Ok(Json(SagaList {
        sagas: sagas.iter().map(SagaSummary::from).collect(),
    }))
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    async fn get(store: &OrderStore, uri: &str) -> (u16, serde_json::Value) {
        let res = router(store.clone())
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = res.status().as_u16();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap_or_default())
    }

    #[tokio::test]
    async fn sagas_are_listed_with_their_steps_and_the_limit_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("orders.db").display());
        let store = OrderStore::open(&url, "orders.store").await.unwrap();
        let (status, body) = get(&store, "/admin/sagas").await;
        assert_eq!((status, body), (200, serde_json::json!({"sagas": []})));
        for bad in ["0", "1001", "x", "-1"] {
            let (status, body) = get(&store, &format!("/admin/sagas?limit={bad}")).await;
            assert_eq!(status, 422, "{bad}");
            assert_eq!(body["errors"][0]["field"], "limit");
        }
        let state = SagaState {
            id: "0190a0b0-0000-7000-8000-000000000001".into(),
            kind: "place_order".into(),
            data: serde_json::json!({}),
            status: ::saga::SagaStatus::Compensating,
            current: 1,
            steps: vec![StepState {
                name: "reserve_stock".into(),
                status: ::saga::StepStatus::Done,
                attempts: 2,
                deadline_ms: None,
                result: None,
                error: Some("timeout".into()),
                compensation_attempts: 1,
                at_ms: Some(1_700_000_000_000),
            }],
            reason: Some("card declined".into()),
            cancel_requested: None,
            stuck: false,
            traceparent: None,
            version: 0,
            created_ms: 1_700_000_000_000,
            updated_ms: 1_700_000_000_500,
        };
        let summary = SagaSummary::from(&state);
        assert_eq!(summary.status, "compensating");
        assert_eq!(summary.updated, "2023-11-14T22:13:20.500Z");
        assert_eq!(
            summary.steps[0],
            StepSummary {
                name: "reserve_stock".into(),
                status: "done".into(),
                attempts: 2,
                compensation_attempts: 1,
                at: Some("2023-11-14T22:13:20.000Z".into()),
                error: Some("timeout".into()),
            }
        );
    }
}
