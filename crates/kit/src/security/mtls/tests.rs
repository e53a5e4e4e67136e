//! mTLS against a real listener built by the kit: a client without a certificate, with
//! a self-signed one, and with a valid one for a service the policy does not allow are
//! all refused; an allowed service gets through, over HTTP and gRPC.

use std::net::SocketAddr;

use axum::Router;
use axum::routing::{get, post};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::dev_ca::DevCa;
use super::*;
use crate::config::Config;
use crate::service::{Context, Running, Service};

struct System {
    _dir: tempfile::TempDir,
    data_dir: PathBuf,
    inventory: Running,
    grpc: SocketAddr,
}

const TD: &str = DEFAULT_TRUST_DOMAIN;

fn id(service: &str) -> SpiffeId {
    SpiffeId::new(TD, service).unwrap()
}

/// Inventory (callee) with a dev CA that also issued certificates for orders (allowed
/// to call inventory by the default policy) and payments (not allowed).
async fn start() -> System {
    crate::telemetry::init_for_tests();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_owned();
    let ca = DevCa::load_or_create(&data_dir.join("tls")).unwrap();
    ca.issue(&id("inventory")).unwrap();
    // The callers' certificates come from the CA as a later `flotilla up` loads it.
    let ca = DevCa::load_or_create(&data_dir.join("tls")).unwrap();
    for s in ["orders", "payments"] {
        ca.issue(&id(s)).unwrap();
    }
    let ctx = Context::new("inventory", Config::for_tests(&data_dir)).unwrap();
    assert!(ctx.transport.mtls().is_some(), "mTLS is the default");
    let router = Router::new().route(
        "/whoami",
        get(|peer: PeerIdentity| async move { peer.0.to_string() }),
    );
    let grpc = Router::new().route(
        "/flotilla.test.Test/Ping",
        post(|| async {
            (
                [("content-type", "application/grpc"), ("grpc-status", "0")],
                "",
            )
        }),
    );
    let service = Service::bind(&ctx, ([127, 0, 0, 1], 0).into(), ([127, 0, 0, 1], 0).into())
        .await
        .unwrap()
        .without_registration()
        .router(router)
        .grpc(([127, 0, 0, 1], 0).into(), grpc)
        .await
        .unwrap();
    let grpc = service.grpc_addr().unwrap();
    System {
        _dir: dir,
        data_dir,
        inventory: service.spawn(),
        grpc,
    }
}

impl System {
    fn transport(&self, service: &str) -> InternalTransport {
        let tls = TlsConfig::default();
        let (ca, cert, key) = tls.files(&self.data_dir, service);
        InternalTransport::Mtls(Arc::new(
            Mtls::from_files(id(service), &ca, &cert, &key, CallPolicy::default()).unwrap(),
        ))
    }

    fn url(&self) -> String {
        format!("https://{}/whoami", self.inventory.public_addr())
    }

    /// A verifier of the system's servers, for hand-made client configurations.
    fn server_verifier(&self) -> Arc<SpiffeServerVerifier> {
        let mut roots = RootCertStore::empty();
        for c in read_certs(&self.data_dir.join("tls/ca.crt"), "CA").unwrap() {
            roots.add(c).unwrap();
        }
        Arc::new(SpiffeServerVerifier {
            roots: Arc::new(roots),
            algorithms: provider().signature_verification_algorithms,
            trust_domain: TD.to_owned(),
        })
    }

    async fn get_with(&self, config: ClientConfig) -> Result<reqwest::Response, reqwest::Error> {
        reqwest::Client::builder()
            .use_preconfigured_tls(config)
            .no_proxy()
            .build()
            .unwrap()
            .get(self.url())
            .send()
            .await
    }

    /// A gRPC-shaped call on the gRPC listener: the `grpc-status` answered.
    async fn grpc_status(&self, service: &str) -> String {
        let client = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build::<_, Full<Bytes>>(self.transport(service).connector(HttpConnector::new()));
        let req = http::Request::post(format!("https://{}/flotilla.test.Test/Ping", self.grpc))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
            .unwrap();
        let res = client.request(req).await.unwrap();
        let status = res.headers().get("grpc-status").cloned();
        let _ = res.into_body().collect().await;
        status.unwrap().to_str().unwrap().to_owned()
    }
}

fn builder() -> rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert> {
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServer))
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    let sys = start().await;
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(sys.server_verifier())
        .with_no_client_auth();
    let err = sys.get_with(config).await.unwrap_err();
    assert!(err.is_connect() || err.is_request(), "{err:?}");

    // Nor does plain text get an answer.
    let plain = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = sys.url().replace("https://", "http://");
    assert!(plain.get(url).send().await.is_err());
}

#[tokio::test]
async fn a_self_signed_certificate_is_refused() {
    let sys = start().await;
    // It even claims to be orders, which the policy would allow.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = vec![rcgen::SanType::URI(
        id("orders").to_string().try_into().unwrap(),
    )];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.self_signed(&key).unwrap();
    let config = builder()
        .with_client_auth_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
    let err = sys.get_with(config).await.unwrap_err();
    assert!(err.is_connect() || err.is_request(), "{err:?}");
}

#[tokio::test]
async fn a_service_the_policy_does_not_allow_is_refused() {
    let sys = start().await;
    let http = sys.transport("payments").reqwest_builder().build().unwrap();
    let res = http.get(sys.url()).send().await.unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(
        res.headers()["content-type"],
        "application/problem+json",
        "a problem document"
    );
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["status"], 403);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("payments may not call inventory"),
        "{body}"
    );

    assert_eq!(sys.grpc_status("payments").await, "7", "PERMISSION_DENIED");
}

#[tokio::test]
async fn an_allowed_service_gets_through_with_its_identity() {
    let sys = start().await;
    let http = sys.transport("orders").reqwest_builder().build().unwrap();
    let res = http.get(sys.url()).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "spiffe://flotilla.local/orders");
    assert_eq!(sys.grpc_status("orders").await, "0");
}

#[tokio::test]
async fn clients_refuse_a_server_outside_the_ca() {
    let sys = start().await;
    // Another CA's inventory is not the system's inventory.
    let other = tempfile::tempdir().unwrap();
    let rogue = DevCa::load_or_create(other.path()).unwrap();
    let issued = rogue.issue(&id("inventory")).unwrap();
    let rogue_mtls = Mtls::from_files(
        id("inventory"),
        &rogue.cert_path(),
        &issued.cert,
        &issued.key,
        CallPolicy::default(),
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_stop, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(crate::service::serve_with(
        listener,
        Router::new().route("/whoami", get(|| async { "rogue" })),
        Some(rogue_mtls.server_config()),
        stop,
        std::time::Duration::from_secs(1),
    ));
    let http = sys.transport("orders").reqwest_builder().build().unwrap();
    let err = http
        .get(format!("https://{addr}/whoami"))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_connect() || err.is_request(), "{err:?}");
}

#[test]
fn loading_names_the_setting_at_fault() {
    let dir = tempfile::tempdir().unwrap();
    let err = Context::new("orders", Config::for_tests(dir.path())).unwrap_err();
    assert!(err.to_string().contains("FLOTILLA_TLS__CA"), "{err}");

    let ca = DevCa::load_or_create(&dir.path().join("tls")).unwrap();
    ca.issue(&id("payments")).unwrap();
    let cfg = Config::for_tests(dir.path())
        .merged("tls", serde_json::json!({"cert": dir.path().join("tls/payments.crt"), "key": dir.path().join("tls/payments.key")}));
    let err = Context::new("orders", cfg).unwrap_err().to_string();
    assert!(err.contains("FLOTILLA_TLS__CERT"), "{err}");
    assert!(err.contains("not spiffe://flotilla.local/orders"), "{err}");

    let ctx = Context::new("orders", Config::for_tests(dir.path()).insecure_internal()).unwrap();
    assert!(ctx.transport.mtls().is_none(), "plain only when asked for");
}

/// Accepts any server: for clients whose own certificate is what is under test.
#[derive(Debug)]
struct AcceptAnyServer;

impl ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
