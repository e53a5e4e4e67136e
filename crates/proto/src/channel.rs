//! gRPC channels behind the kit's standard client stack (bulkhead, deadline, retry,
//! circuit breaker), so every internal gRPC call is protected the same way as the
//! gateway's HTTP calls.

use http_body_util::Full;
use kit::resilience::stack::BoxError;
use kit::resilience::{CallError, ClientStack};
use tonic::body::Body;
use tonic::transport::Channel;
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;

/// A channel with the resilience layers around it; tonic clients take it as their
/// transport (`InventoryClient::new(channel)`).
pub type ResilientChannel =
    BoxCloneSyncService<http::Request<Body>, http::Response<Body>, tonic::Status>;

/// The connector for internal gRPC channels: TCP with `TCP_NODELAY`, then mTLS with the
/// process's identity (plain text only with `FLOTILLA_INSECURE_INTERNAL=1`). Use it with
/// `Endpoint::connect_with_connector_lazy`, the URI's scheme from
/// `kit::security::mtls::scheme()`.
pub fn connector() -> kit::security::mtls::InternalConnector {
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.set_nodelay(true);
    kit::security::mtls::connector(http)
}

/// Puts `channel` behind `stack`: answers with a server-side failure code
/// (`UNAVAILABLE`, `INTERNAL`, …) count against the breaker, safe calls are retried, and
/// the call's budget travels as `grpc-timeout`. A call a layer refuses fails with the
/// status a gRPC caller expects: `UNAVAILABLE` for an open breaker, a full bulkhead or
/// a broken connection, `DEADLINE_EXCEEDED` for a spent budget.
pub fn resilient(channel: Channel, stack: &ClientStack) -> ResilientChannel {
    let svc = stack
        .clone()
        .grpc()
        .layer(channel, |bytes| Body::new(Full::new(bytes)));
    BoxCloneSyncService::new(svc.map_err(to_status))
}

/// The gRPC status for an error of the client stack.
pub fn to_status(e: BoxError) -> tonic::Status {
    let Some(call) = CallError::find(&e) else {
        return tonic::Status::from_error(e);
    };
    let message = call.to_string();
    match call {
        CallError::TimedOut { .. } => tonic::Status::deadline_exceeded(message),
        CallError::BreakerOpen { .. }
        | CallError::BulkheadFull { .. }
        | CallError::Transport { .. } => tonic::Status::unavailable(message),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[test]
    fn stack_errors_map_to_the_codes_callers_retry_on() {
        let target: Arc<str> = Arc::from("inventory");
        let open: BoxError = Box::new(CallError::BreakerOpen {
            target: target.clone(),
            retry_after: Duration::from_secs(3),
        });
        assert_eq!(to_status(open).code(), tonic::Code::Unavailable);
        let late: BoxError = Box::new(CallError::TimedOut {
            target,
            after: Duration::from_secs(1),
        });
        assert_eq!(to_status(late).code(), tonic::Code::DeadlineExceeded);
    }
}
