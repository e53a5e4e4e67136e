//! Notifications' admin API (on the admin listener only, never forwarded by the gateway):
//! its own state as an invariant checker (`flotilla verify`) needs it.
//!
//! - `GET /admin/inbox?after=ID&limit=N`: the events notifications has handled (its
//!   inbox), as the consumer group it joins, in event-id order, at most 1000 a page
//!   ([`InboxPage`]: pass its `next` as `after` for the next page).

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use kit::Problem;
use kit::extract::Query;
use kit_events::outbox::{InboxPage, InboxQuery};

use crate::store::NotificationStore;

/// The admin routes over `store`, for the consumer group `group`.
pub fn router(store: Arc<dyn NotificationStore>, group: String) -> Router {
    Router::new()
        .route("/admin/inbox", get(inbox))
        .with_state((store, Arc::<str>::from(group)))
}

async fn inbox(
    State((store, group)): State<(Arc<dyn NotificationStore>, Arc<str>)>,
    Query(q): Query<InboxQuery>,
) -> Result<Json<InboxPage>, Problem> {
    store
        .inbox(&group, q.after.as_deref(), q.limit)
        .await
        .map(Json)
        .map_err(crate::api::store_failed)
}
