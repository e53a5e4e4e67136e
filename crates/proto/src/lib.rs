//! Internal contracts shared between Flotilla services.
//!
//! Services never depend on each other's crates; shapes that cross a process boundary
//! internally are defined here (as `.proto` files and their generated code once the
//! internal gRPC APIs exist). The public REST shapes are described by each service's
//! OpenAPI document instead.
#![forbid(unsafe_code)]
