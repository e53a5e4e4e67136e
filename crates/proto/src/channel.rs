//! gRPC channels behind the kit's standard client stack (bulkhead, deadline, retry,
//! circuit breaker), so every internal gRPC call is protected the same way as the
//! gateway's HTTP calls, and traced: each call is a client span whose context travels
//! as `traceparent` in the request metadata, so the server's span is its child.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use http_body_util::Full;
use kit::resilience::stack::BoxError;
use kit::resilience::{CallError, ClientStack};
use kit::telemetry::trace as otel;
use tonic::body::Body;
use tonic::transport::Channel;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceExt};
use tracing::Instrument;

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

/// Puts `channel` to `server` (`host:port`, for the spans' `server.address` and
/// `server.port`) behind `stack`: answers with a server-side failure code
/// (`UNAVAILABLE`, `INTERNAL`, …) count against the breaker, safe calls are retried, and
/// the call's budget travels as `grpc-timeout`. A call a layer refuses fails with the
/// status a gRPC caller expects: `UNAVAILABLE` for an open breaker, a full bulkhead or
/// a broken connection, `DEADLINE_EXCEEDED` for a spent budget.
///
/// Each call is one client span (see [`kit::telemetry::trace::grpc_client_span`])
/// around its attempts, ending when the answer's body is read; it carries the
/// `rpc.grpc.status_code` of the answer (headers or trailers) or of the refusal.
pub fn resilient(channel: Channel, stack: &ClientStack, server: &str) -> ResilientChannel {
    let svc = stack
        .clone()
        .grpc()
        .layer(channel, |bytes| Body::new(Full::new(bytes)));
    BoxCloneSyncService::new(Traced::new(svc.map_err(to_status), server))
}

/// A gRPC client service that traces every call (the outermost layer of
/// [`resilient`]; usable around any other gRPC transport).
#[derive(Debug, Clone)]
pub struct Traced<S> {
    inner: S,
    server: Arc<str>,
}

impl<S> Traced<S> {
    /// Traces the calls `inner` makes to `server` (`host:port`).
    pub fn new(inner: S, server: &str) -> Self {
        Self {
            inner,
            server: Arc::from(server),
        }
    }
}

impl<S> Service<http::Request<Body>> for Traced<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = tonic::Status>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = tonic::Status;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        let span = otel::grpc_client_span(req.uri().path(), Some(&self.server));
        otel::inject(&span, req.headers_mut());
        let call = self.inner.call(req);
        Box::pin(async move {
            match call.instrument(span.clone()).await {
                Ok(res) => match kit::resilience::stack::grpc_code(res.headers()) {
                    // Trailers-only: the status is in the headers, the body is empty.
                    Some(code) => {
                        otel::record_grpc_status(&span, code, false);
                        Ok(res)
                    }
                    None => Ok(res.map(|b| Body::new(otel::GrpcStatusBody::new(b, span, false)))),
                },
                Err(status) => {
                    otel::record_grpc_status(&span, status.code() as u32, false);
                    Err(status)
                }
            }
        })
    }
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
