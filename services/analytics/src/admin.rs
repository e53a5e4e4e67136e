//! Analytics' admin API (on the admin listener only, never forwarded by the gateway):
//! its own state as an invariant checker (`flotilla verify`) needs it.
//!
//! - `GET /admin/inbox?after=ID&limit=N`: the events the current generation's consumer
//!   group (`<prefix>-g<generation>`) has counted (its inbox), in event-id order, at
//!   most 1000 a page ([`InboxPage`]: pass its `next` as `after` for the next page). A
//!   rebuild empties it and names a new group.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use kit::Problem;
use kit::extract::Query;
use kit_events::outbox::{InboxPage, InboxQuery};

use crate::store::{AnalyticsStore, AnalyticsStoreError};

/// The admin routes over `store`, whose groups are named after `group_prefix`.
pub fn router(store: Arc<dyn AnalyticsStore>, group_prefix: String) -> Router {
    Router::new()
        .route("/admin/inbox", get(inbox))
        .with_state((store, Arc::<str>::from(group_prefix)))
}

fn unavailable(e: AnalyticsStoreError) -> Problem {
    tracing::error!(error = %e, "analytics store failed");
    Problem::unavailable("the analytics store is unavailable", Duration::from_secs(1))
}

async fn inbox(
    State((store, prefix)): State<(Arc<dyn AnalyticsStore>, Arc<str>)>,
    Query(q): Query<InboxQuery>,
) -> Result<Json<InboxPage>, Problem> {
    let generation = store.generation().await.map_err(unavailable)?;
    let group = crate::events::group_name(&prefix, generation);
    store
        .inbox(&group, q.after.as_deref(), q.limit)
        .await
        .map(Json)
        .map_err(unavailable)
}
