//! Internal contracts shared between Flotilla services.
//!
//! Services never depend on each other's crates; shapes that cross a process boundary
//! internally are defined here as `.proto` files (`proto/flotilla/*.proto`), compiled at
//! build time by protox into tonic clients and servers. The public REST shapes are
//! described by each service's OpenAPI document instead.
//!
//! [`channel::resilient`] puts a client channel behind the kit's resilience stack.
//! [`grpc_extras`] gives every gRPC server the standard health (`grpc.health.v1`) and
//! reflection services. The generated servers are mounted on a kit service with
//! `kit::service::Service::grpc(addr, routes.into_axum_router())`.
#![forbid(unsafe_code)]

pub mod channel;

/// `flotilla.inventory.v1`: Reserve / Commit / Release, called by the order saga.
pub mod inventory {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("flotilla.inventory.v1");
}

/// `flotilla.payments.v1`: Authorize / Capture / Void / Refund, called by the order saga.
pub mod payments {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("flotilla.payments.v1");
}

/// `flotilla.users.v1`: CreateProfile (idempotent by user id) / GetProfile, called by auth.
pub mod users {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("flotilla.users.v1");
}

/// The encoded descriptor set of every Flotilla service, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/flotilla_descriptor.bin"));

pub use tonic_health;
pub use tonic_reflection;

/// Why the standard gRPC services could not be built.
#[derive(Debug)]
pub struct ReflectionError(tonic_reflection::server::Error);

impl std::fmt::Display for ReflectionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "gRPC reflection: {}", self.0)
    }
}

impl std::error::Error for ReflectionError {}

/// Adds what every Flotilla gRPC server serves besides its own API: `grpc.health.v1`
/// (the server and each of `services` — fully qualified names such as
/// `flotilla.inventory.v1.Inventory` — reported as serving) and server reflection (v1
/// and v1alpha, so `grpcurl` and `grpcui` work without `.proto` files).
pub async fn grpc_extras(
    routes: tonic::service::Routes,
    services: &[&str],
) -> Result<tonic::service::Routes, ReflectionError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    for name in services {
        reporter
            .set_service_status(*name, tonic_health::ServingStatus::Serving)
            .await;
    }
    let v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(ReflectionError)?;
    let v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(ReflectionError)?;
    Ok(routes
        .add_service(health)
        .add_service(v1)
        .add_service(v1alpha))
}
