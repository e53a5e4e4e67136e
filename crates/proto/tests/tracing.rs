//! A gRPC call through `channel::resilient` to a real tonic server behind the kit's
//! gRPC stack: the client span and the server span are one trace, the server's a child
//! of the client's, both with their `rpc.*` attributes.

use std::time::Duration;

use kit::resilience::{ClientStack, Policy, ResilienceConfig};
use opentelemetry::trace::{SpanKind, Status, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use proto::users::users_client::UsersClient;
use proto::users::users_server::{Users, UsersServer};
use proto::users::{CreateProfileRequest, GetProfileRequest, Profile};
use tracing_subscriber::layer::SubscriberExt;

struct Directory;

#[tonic::async_trait]
impl Users for Directory {
    async fn create_profile(
        &self,
        req: tonic::Request<CreateProfileRequest>,
    ) -> Result<tonic::Response<Profile>, tonic::Status> {
        let r = req.into_inner();
        Ok(tonic::Response::new(Profile {
            id: r.user_id,
            email: r.email,
            name: r.name,
            created_at: String::new(),
            updated_at: String::new(),
        }))
    }

    async fn get_profile(
        &self,
        req: tonic::Request<GetProfileRequest>,
    ) -> Result<tonic::Response<Profile>, tonic::Status> {
        Err(tonic::Status::not_found(format!(
            "no profile {}",
            req.into_inner().user_id
        )))
    }
}

fn attr(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

fn names(spans: &[SpanData]) -> Vec<(String, SpanKind)> {
    spans
        .iter()
        .map(|s| (s.name.to_string(), s.span_kind.clone()))
        .collect()
}

#[tokio::test]
async fn a_call_is_a_client_span_with_the_server_span_as_its_child() {
    kit::security::mtls::install_crypto_provider();
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    // The current-thread runtime runs the server and the client on this thread.
    let _guard = tracing::subscriber::set_default(subscriber);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let routes = tonic::service::Routes::new(UsersServer::new(Directory)).into_axum_router();
    let app = kit::service::grpc_stack(routes);
    tokio::spawn(async move { axum::serve(listener, app).await });

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    let policy = Policy::new("users-trace-test", &ResilienceConfig::default());
    let stack = ClientStack::new(&policy, Duration::from_secs(5)).idempotent();
    let mut client = UsersClient::new(proto::channel::resilient(
        channel,
        &stack,
        &addr.to_string(),
    ));

    let profile = client
        .create_profile(CreateProfileRequest {
            user_id: "u-1".to_owned(),
            email: "a@example.com".to_owned(),
            name: "A".to_owned(),
        })
        .await
        .expect("the server answers")
        .into_inner();
    assert_eq!(profile.id, "u-1");
    let missing = client
        .get_profile(GetProfileRequest {
            user_id: "u-2".to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    provider.force_flush().unwrap();

    let spans = exporter.get_finished_spans().unwrap();
    let client_span = spans
        .iter()
        .find(|s| {
            s.span_kind == SpanKind::Client && s.name == "flotilla.users.v1.Users/CreateProfile"
        })
        .unwrap_or_else(|| panic!("no client span: {:?}", names(&spans)));
    let server_span = spans
        .iter()
        .find(|s| s.span_kind == SpanKind::Server && s.name == client_span.name)
        .expect("a server span");
    assert_eq!(
        server_span.span_context.trace_id(),
        client_span.span_context.trace_id(),
        "one trace"
    );
    assert_eq!(
        server_span.parent_span_id,
        client_span.span_context.span_id()
    );
    for span in [client_span, server_span] {
        assert_eq!(attr(span, "rpc.system").as_deref(), Some("grpc"));
        assert_eq!(
            attr(span, "rpc.service").as_deref(),
            Some("flotilla.users.v1.Users")
        );
        assert_eq!(attr(span, "rpc.method").as_deref(), Some("CreateProfile"));
        assert_eq!(
            attr(span, "rpc.grpc.status_code").as_deref(),
            Some("0"),
            "{span:?}"
        );
    }
    assert_eq!(
        attr(client_span, "server.address").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        attr(client_span, "server.port"),
        Some(addr.port().to_string())
    );

    // NOT_FOUND: an error for the caller, not for the server.
    let failed: Vec<_> = spans
        .iter()
        .filter(|s| s.name == "flotilla.users.v1.Users/GetProfile")
        .collect();
    assert_eq!(failed.len(), 2, "client and server");
    for span in failed {
        assert_eq!(attr(span, "rpc.grpc.status_code").as_deref(), Some("5"));
        let is_error = matches!(span.status, Status::Error { .. });
        assert_eq!(is_error, span.span_kind == SpanKind::Client, "{span:?}");
    }
}
