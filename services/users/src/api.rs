//! Users' public HTTP API: the caller's own profile, and any profile for an
//! administrator.
//!
//! Identity comes from the gateway ([`Identity`]); nothing in a body can say who the
//! caller is. `PATCH /api/users/me` accepts `name` and nothing else: any other member
//! (`id`, `email`, `roles`, `created_at`…) is a `422` naming it, so a client can never
//! assign a field it does not own.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use kit::Problem;
use kit::extract::Json as Validated;
use kit::security::Identity;
use serde::{Deserialize, Serialize};

use crate::domain::{Name, Profile, now_rfc3339};
use crate::store::{ProfileStore, ProfileStoreError};

/// The public routes.
pub fn router(store: Arc<dyn ProfileStore>) -> Router {
    Router::new()
        .route("/api/users/me", get(me).patch(update_me))
        .route("/api/users/{id}", get(by_id))
        .with_state(store)
}

/// The OpenAPI description of these routes, served on the admin listener at
/// `/openapi.json` and merged into the gateway's.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "users", description = "User profiles."),
    paths(me, update_me, by_id),
    components(schemas(ProfileView, ProfilePatchDoc))
)]
pub struct ApiDoc;

/// A profile as clients see it.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct ProfileView {
    /// The user id (UUIDv7).
    pub id: String,
    /// The account's email.
    pub email: String,
    /// The display name.
    pub name: String,
    /// RFC 3339 UTC.
    pub created_at: String,
}

impl From<Profile> for ProfileView {
    fn from(p: Profile) -> Self {
        Self {
            id: p.id,
            email: p.email,
            name: p.name,
            created_at: p.created_at,
        }
    }
}

/// What `PATCH /api/users/me` may change (documentation of the body).
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ProfilePatchDoc {
    /// 1–100 characters.
    #[schema(min_length = 1, max_length = 100)]
    name: Option<String>,
}

/// The fields a client may change on its own profile.
pub const WRITABLE: &[&str] = &["name"];

/// The body of `PATCH /api/users/me`: `name`, and every other member kept aside so
/// validation can name it.
#[derive(Debug, Deserialize)]
pub struct ProfilePatch {
    /// The new display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Anything else the client sent: each one is refused.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

impl garde::Validate for ProfilePatch {
    type Context = ();

    fn validate_into(
        &self,
        _: &Self::Context,
        parent: &mut dyn FnMut() -> garde::Path,
        report: &mut garde::Report,
    ) {
        for key in self.other.keys() {
            let message = match key.as_str() {
                "id" | "email" | "roles" | "scope" | "scopes" | "created_at" | "updated_at" => {
                    "cannot be changed"
                }
                _ => "is not a field of a profile",
            };
            report.append(parent().join(key.as_str()), garde::Error::new(message));
        }
        if let Some(name) = &self.name
            && let Err(why) = Name::parse(name)
        {
            report.append(parent().join("name"), garde::Error::new(why));
        }
    }
}

fn store_failed(e: ProfileStoreError) -> Problem {
    tracing::error!(error = %e, "users store failed");
    Problem::unavailable("the users store is unavailable", Duration::from_secs(1))
}

/// The caller's profile.
#[utoipa::path(get, path = "/api/users/me", tag = "users",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's profile", body = ProfileView),
        (status = 401, description = "No access token (problem document)"),
        (status = 404, description = "No profile yet (problem document)"),
    ))]
async fn me(
    caller: Identity,
    State(store): State<Arc<dyn ProfileStore>>,
) -> Result<Json<ProfileView>, Problem> {
    match store.get(caller.user_id).await.map_err(store_failed)? {
        Some(p) => Ok(Json(p.into())),
        None => Err(Problem::not_found("the caller has no profile yet")),
    }
}

/// Changes the caller's own profile; only `name` is writable.
#[utoipa::path(patch, path = "/api/users/me", tag = "users",
    security(("bearer" = [])),
    request_body = ProfilePatchDoc,
    responses(
        (status = 200, description = "The updated profile", body = ProfileView),
        (status = 401, description = "No access token (problem document)"),
        (status = 404, description = "No profile yet (problem document)"),
        (status = 422, description = "A field that is invalid or not writable, named in `errors` (problem document)"),
    ))]
async fn update_me(
    caller: Identity,
    State(store): State<Arc<dyn ProfileStore>>,
    Validated(patch): Validated<ProfilePatch>,
) -> Result<Json<ProfileView>, Problem> {
    let current = match patch.name {
        Some(name) => {
            // Validated above; parse again to hold the trimmed value.
            let name = Name::parse(&name).map_err(|why| Problem::invalid_field("name", why))?;
            store
                .rename(caller.user_id, name.into_inner(), now_rfc3339())
                .await
        }
        None => store.get(caller.user_id).await,
    }
    .map_err(store_failed)?;
    match current {
        Some(p) => Ok(Json(p.into())),
        None => Err(Problem::not_found("the caller has no profile yet")),
    }
}

/// Any profile, for an administrator.
#[utoipa::path(get, path = "/api/users/{id}", tag = "users",
    params(("id" = String, Path, description = "The user id (UUIDv7)")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The profile", body = ProfileView),
        (status = 401, description = "No access token (problem document)"),
        (status = 403, description = "The caller is not an administrator (problem document)"),
        (status = 404, description = "No such profile (problem document)"),
    ))]
async fn by_id(
    caller: Identity,
    State(store): State<Arc<dyn ProfileStore>>,
    Path(id): Path<String>,
) -> Result<Json<ProfileView>, Problem> {
    caller.require_role("admin")?;
    let not_found = || Problem::not_found(format!("no user {id:?}"));
    let Ok(uuid) = uuid::Uuid::parse_str(&id) else {
        return Err(not_found());
    };
    match store
        .get(uuid.hyphenated().to_string())
        .await
        .map_err(store_failed)?
    {
        Some(p) => Ok(Json(p.into())),
        None => Err(not_found()),
    }
}
