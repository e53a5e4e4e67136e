//! The Flotilla service kit: everything a Flotilla service needs besides its own business.
//!
//! A service is a library that builds an [`axum::Router`] and hands it to
//! [`service::Service`], which binds the public and admin listeners, wires telemetry,
//! problem errors and request ids, registers the instance with discovery and drains
//! gracefully on shutdown. The patterns live in modules named after them:
//! [`config`], [`service`], [`telemetry`], [`errors`], [`discovery`], [`store`],
//! [`security`].
#![forbid(unsafe_code)]

pub mod config;
pub mod discovery;
pub mod errors;
pub mod extract;
pub mod http;
pub mod openapi;
pub mod resilience;
pub mod security;
pub mod service;
pub mod store;
pub mod telemetry;

pub use errors::Problem;
