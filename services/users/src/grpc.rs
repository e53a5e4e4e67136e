//! Users' internal gRPC API (`flotilla.users.v1.Users`), called by auth: CreateProfile
//! (idempotent by user id) and GetProfile.

use std::sync::Arc;

use proto::users as pb;
use proto::users::users_server::{Users as UsersApi, UsersServer};
use tonic::{Request, Response, Status};

use crate::domain::{Name, Profile, now_rfc3339, parse_email, parse_user_id};
use crate::store::{ProfileStore, ProfileStoreError};

/// The fully qualified service name (for health reporting).
pub const SERVICE_NAME: &str = "flotilla.users.v1.Users";

/// The gRPC server.
#[derive(Clone)]
pub struct UsersGrpc {
    store: Arc<dyn ProfileStore>,
}

impl UsersGrpc {
    /// A server over `store`.
    pub fn new(store: Arc<dyn ProfileStore>) -> UsersServer<Self> {
        UsersServer::new(Self { store })
    }
}

fn unavailable(e: ProfileStoreError) -> Status {
    tracing::error!(error = %e, "users store failed");
    Status::unavailable("the users store is unavailable")
}

fn invalid(field: &str, why: &str) -> Status {
    Status::invalid_argument(format!("{field}: {why}"))
}

fn to_pb(p: Profile) -> pb::Profile {
    pb::Profile {
        id: p.id,
        email: p.email,
        name: p.name,
        created_at: p.created_at,
        updated_at: p.updated_at,
    }
}

#[tonic::async_trait]
impl UsersApi for UsersGrpc {
    async fn create_profile(
        &self,
        request: Request<pb::CreateProfileRequest>,
    ) -> Result<Response<pb::Profile>, Status> {
        let req = request.into_inner();
        let id = parse_user_id(&req.user_id).map_err(|w| invalid("user_id", w))?;
        let email = parse_email(&req.email).map_err(|w| invalid("email", w))?;
        let name = Name::parse(&req.name).map_err(|w| invalid("name", w))?;
        let now = now_rfc3339();
        let created = self
            .store
            .create(Profile {
                id,
                email,
                name: name.into_inner(),
                created_at: now.clone(),
                updated_at: now,
            })
            .await
            .map_err(unavailable)?;
        Ok(Response::new(to_pb(created.profile())))
    }

    async fn get_profile(
        &self,
        request: Request<pb::GetProfileRequest>,
    ) -> Result<Response<pb::Profile>, Status> {
        let id = parse_user_id(&request.into_inner().user_id).map_err(|w| invalid("user_id", w))?;
        match self.store.get(id).await.map_err(unavailable)? {
            Some(p) => Ok(Response::new(to_pb(p))),
            None => Err(Status::not_found("no such profile")),
        }
    }
}
