//! Inventory's internal gRPC API (`flotilla.inventory.v1.Inventory`), called by the
//! order saga: Reserve, Commit, Release. Every call is idempotent by `order_id`.

use std::sync::Arc;
use std::time::Duration;

use proto::inventory as pb;
use proto::inventory::inventory_server::{Inventory, InventoryServer};
use tonic::{Request, Response, Status};

use crate::domain::{
    Action, Reservation, ReservationError, ReservationStatus, check_order_id, normalize_request,
    now_ms,
};
use crate::store::CatalogStore;

/// The fully qualified service name (for health reporting).
pub const SERVICE_NAME: &str = "flotilla.inventory.v1.Inventory";

/// The gRPC server.
#[derive(Clone)]
pub struct InventoryGrpc {
    store: Arc<dyn CatalogStore>,
    ttl: Duration,
}

impl InventoryGrpc {
    /// A server over `store`; reservations hold stock for `ttl`.
    pub fn new(store: Arc<dyn CatalogStore>, ttl: Duration) -> InventoryServer<Self> {
        InventoryServer::new(Self { store, ttl })
    }
}

/// Maps a refusal onto the gRPC status the saga acts on: `INVALID_ARGUMENT` names the
/// field, `FAILED_PRECONDITION` is a business refusal (no stock, wrong state),
/// `UNAVAILABLE` is worth retrying.
fn status(e: ReservationError) -> Status {
    match e {
        ReservationError::Invalid { field, message } => {
            Status::invalid_argument(format!("{field}: {message}"))
        }
        ReservationError::NotFound(_) | ReservationError::UnknownSku(_) => {
            Status::not_found(e.to_string())
        }
        ReservationError::Mismatch(_) => Status::already_exists(e.to_string()),
        ReservationError::Insufficient(_)
        | ReservationError::Committed(_)
        | ReservationError::NotHeld { .. } => Status::failed_precondition(e.to_string()),
        ReservationError::Backend(cause) => {
            tracing::error!(error = %cause, "inventory store failed");
            Status::unavailable("the inventory store is unavailable")
        }
    }
}

fn to_pb(r: Reservation) -> pb::Reservation {
    let status = match r.status {
        ReservationStatus::Reserved => pb::ReservationStatus::Reserved,
        ReservationStatus::Committed => pb::ReservationStatus::Committed,
        ReservationStatus::Released => pb::ReservationStatus::Released,
        ReservationStatus::Expired => pb::ReservationStatus::Expired,
    };
    let expires =
        std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(r.expires_at_ms).unwrap_or(0));
    pb::Reservation {
        order_id: r.order_id,
        items: r
            .lines
            .into_iter()
            .map(|l| pb::Line {
                sku: l.sku.to_string(),
                quantity: u32::try_from(l.quantity).unwrap_or(u32::MAX),
            })
            .collect(),
        status: status as i32,
        expires_at: humantime::format_rfc3339_millis(expires).to_string(),
    }
}

impl InventoryGrpc {
    async fn finish(
        &self,
        order_id: String,
        action: Action,
    ) -> Result<Response<pb::Reservation>, Status> {
        check_order_id(&order_id).map_err(status)?;
        let store = self.store.clone();
        let id = order_id.clone();
        let r = kit::store::detached(async move { store.finish(id, action, now_ms()).await })
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(status)?
            .ok_or_else(|| status(ReservationError::NotFound(order_id)))?;
        Ok(Response::new(to_pb(r)))
    }
}

#[tonic::async_trait]
impl Inventory for InventoryGrpc {
    async fn reserve(
        &self,
        request: Request<pb::ReserveRequest>,
    ) -> Result<Response<pb::Reservation>, Status> {
        let req = request.into_inner();
        let lines = normalize_request(
            &req.order_id,
            req.items
                .into_iter()
                .map(|l| (l.sku, i64::from(l.quantity)))
                .collect(),
        )
        .map_err(status)?;
        let ttl_ms = i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX / 4);
        let store = self.store.clone();
        let expires = now_ms().saturating_add(ttl_ms);
        let r =
            kit::store::detached(async move { store.reserve(req.order_id, lines, expires).await })
                .await
                .map_err(|e| Status::internal(e.to_string()))?
                .map_err(status)?;
        Ok(Response::new(to_pb(r)))
    }

    async fn commit(
        &self,
        request: Request<pb::CommitRequest>,
    ) -> Result<Response<pb::Reservation>, Status> {
        self.finish(request.into_inner().order_id, Action::Commit)
            .await
    }

    async fn release(
        &self,
        request: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::Reservation>, Status> {
        self.finish(request.into_inner().order_id, Action::Release)
            .await
    }
}
