//! Notifications' public HTTP API: the caller's own messages, newest first.
//!
//! Identity comes from the gateway ([`Identity`]); a caller only ever sees messages sent
//! to their own user id.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use garde::Validate;
use kit::Problem;
use kit::extract::Query;
use kit::security::Identity;
use serde::{Deserialize, Serialize};

use crate::store::{NotificationStore, NotificationStoreError, Sent};

/// The public routes.
pub fn router(store: Arc<dyn NotificationStore>) -> Router {
    Router::new()
        .route("/api/notifications", get(list))
        .with_state(store)
}

/// The OpenAPI description of these routes, served on the admin listener at
/// `/openapi.json` and merged into the gateway's.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "notifications", description = "Messages sent to the caller."),
    paths(list),
    components(schemas(NotificationView, NotificationPage))
)]
pub struct ApiDoc;

/// One message as its recipient sees it.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct NotificationView {
    /// The message id (UUIDv7).
    pub id: String,
    /// `email`.
    pub channel: String,
    /// The address it went to.
    pub to: String,
    /// Subject line.
    pub subject: String,
    /// Plain-text body.
    pub body: String,
    /// When it was sent (RFC 3339 UTC).
    pub sent_at: String,
    /// The event it answers (`orders.confirmed`).
    pub event_type: String,
}

impl From<Sent> for NotificationView {
    fn from(s: Sent) -> Self {
        Self {
            id: s.id,
            channel: s.channel,
            to: s.recipient,
            subject: s.subject,
            body: s.body,
            sent_at: s.created_at,
            event_type: s.event_type,
        }
    }
}

/// One page of the caller's messages.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NotificationPage {
    /// This page, newest first.
    pub items: Vec<NotificationView>,
    /// Pass as `cursor` for the next page; `null` on the last.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, Validate)]
struct ListQuery {
    #[garde(range(min = 1, max = 100))]
    #[serde(default = "default_limit")]
    limit: u32,
    #[garde(length(max = 64))]
    cursor: Option<String>,
}

fn default_limit() -> u32 {
    20
}

/// The problem for a failed store (logged with its cause).
pub(crate) fn store_failed(e: NotificationStoreError) -> Problem {
    tracing::error!(error = %e, "notifications store failed");
    Problem::unavailable(
        "the notifications store is unavailable",
        Duration::from_secs(1),
    )
}

/// The caller's messages, newest first.
#[utoipa::path(get, path = "/api/notifications", tag = "notifications",
    params(
        ("limit" = Option<u32>, Query, description = "1-100, default 20", minimum = 1, maximum = 100),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page", max_length = 64),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of the caller's messages", body = NotificationPage),
        (status = 401, description = "No access token (problem document)"),
        (status = 422, description = "Invalid limit or cursor (problem document)"),
    ))]
async fn list(
    caller: Identity,
    State(store): State<Arc<dyn NotificationStore>>,
    Query(q): Query<ListQuery>,
) -> Result<Json<NotificationPage>, Problem> {
    let before = match q.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => Some(
            uuid::Uuid::parse_str(c)
                .map_err(|_| Problem::invalid_field("cursor", "not a cursor from a previous page"))?
                .hyphenated()
                .to_string(),
        ),
    };
    // One extra row tells whether there is a next page.
    let mut items = store
        .list(&caller.user_id, before.as_deref(), q.limit + 1)
        .await
        .map_err(store_failed)?;
    let next_cursor = if items.len() > q.limit as usize {
        items.truncate(q.limit as usize);
        items.last().map(|s| s.id.clone())
    } else {
        None
    };
    Ok(Json(NotificationPage {
        items: items.into_iter().map(NotificationView::from).collect(),
        next_cursor,
    }))
}
