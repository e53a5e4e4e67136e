//! Service-to-service mTLS, service identity and the call policy, in one place.
//!
//! Every internal listener (a service's HTTP and gRPC listeners, the registry's, the
//! bus's) requires a client certificate signed by the system's CA; each certificate
//! names its holder in a URI SAN, `spiffe://<trust domain>/<service>` ([`SpiffeId`]).
//! The listener puts the peer's id on every request ([`PeerIdentity`]) and lets the
//! request through only if the [`CallPolicy`] allows that caller to call this service
//! (else `403`, or `PERMISSION_DENIED` for gRPC, and a log line).
//!
//! Clients present their own certificate and accept a server whose certificate chains
//! to the CA and carries a SPIFFE id of the trust domain: identities, not host names,
//! since instances are found by address through discovery.
//!
//! The material is read from PEM files (`[tls]`, `FLOTILLA_TLS__CA`, `__CERT`, `__KEY`;
//! defaults under `<data dir>/tls/`, where `flotilla up` keeps its [`dev_ca`]).
//! `FLOTILLA_INSECURE_INTERNAL=1` turns all of it off, with a warning at start.
//!
//! [`InternalTransport`] is the loaded result. [`kit::service::Service`] takes the one
//! of its [`Context`](crate::service::Context) for its listeners; a process's clients
//! take the one [`install`]ed for the process (by [`kit::service::main`] and the
//! `flotilla` binary), through [`reqwest_builder`], [`connector`] and [`scheme`].
//!
//! [`kit::service::Service`]: crate::service::Service
//! [`kit::service::main`]: crate::service::main

mod connector;
pub mod dev_ca;
mod identity;
pub mod policy;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use hyper_util::client::legacy::connect::HttpConnector;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};

pub use connector::{InternalConnector, InternalIo};
pub use identity::{DEFAULT_TRUST_DOMAIN, InvalidSpiffeId, PeerIdentity, SpiffeId};
pub use policy::CallPolicy;

use crate::config::{Common, ConfigError};

/// The environment variable that allows plain-text internal traffic.
pub const INSECURE_ENV: &str = "FLOTILLA_INSECURE_INTERNAL";

/// The identity of the `flotilla` commands (`status`, `chaos`, `bus`) and of `up`.
pub const OPERATOR: &str = "operator";

/// The `[tls]` section: where the internal transport's material is and who may call whom.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct TlsConfig {
    /// PEM certificate(s) of the CA every peer must chain to (`FLOTILLA_TLS__CA`);
    /// default `<data dir>/tls/ca.crt`.
    pub ca: Option<PathBuf>,
    /// This service's PEM certificate chain (`FLOTILLA_TLS__CERT`); default
    /// `<data dir>/tls/<service>.crt`.
    pub cert: Option<PathBuf>,
    /// Its PEM private key (`FLOTILLA_TLS__KEY`); default `<data dir>/tls/<service>.key`.
    pub key: Option<PathBuf>,
    /// The SPIFFE trust domain (`FLOTILLA_TLS__TRUST_DOMAIN`).
    pub trust_domain: String,
    /// Caller → callees (`[tls.policy]`); see [`policy`].
    pub policy: CallPolicy,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            ca: None,
            cert: None,
            key: None,
            trust_domain: DEFAULT_TRUST_DOMAIN.to_owned(),
            policy: CallPolicy::default(),
        }
    }
}

impl TlsConfig {
    /// The CA, certificate and key files for `service`, defaults filled in.
    pub fn files(&self, data_dir: &Path, service: &str) -> (PathBuf, PathBuf, PathBuf) {
        let dir = data_dir.join("tls");
        (
            self.ca.clone().unwrap_or_else(|| dir.join("ca.crt")),
            self.cert
                .clone()
                .unwrap_or_else(|| dir.join(format!("{service}.crt"))),
            self.key
                .clone()
                .unwrap_or_else(|| dir.join(format!("{service}.key"))),
        )
    }
}

/// How internal traffic of one process travels.
#[derive(Debug, Clone, Default)]
pub enum InternalTransport {
    /// Plain text, only with `FLOTILLA_INSECURE_INTERNAL=1` (or for a process that
    /// installed nothing).
    #[default]
    Insecure,
    /// Mutual TLS.
    Mtls(Arc<Mtls>),
}

/// Loaded mTLS material of one identity, and the policy its listeners enforce.
pub struct Mtls {
    identity: SpiffeId,
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    policy: CallPolicy,
}

impl std::fmt::Debug for Mtls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mtls")
            .field("identity", &self.identity.to_string())
            .finish_non_exhaustive()
    }
}

fn setting_err(setting: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Setting {
        setting: setting.to_owned(),
        message: message.into(),
    }
}

/// The one TLS provider of Flotilla (ring).
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// Makes ring the process's default rustls provider (reqwest builds its plain clients'
/// TLS from it). Idempotent; called by the kit wherever a process or test starts.
pub fn install_crypto_provider() {
    let _ = CryptoProvider::install_default(CryptoProvider::clone(&provider()));
}

fn read_certs(path: &Path, setting: &str) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| setting_err(setting, format!("cannot read {}: {e}", path.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| setting_err(setting, format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(setting_err(
            setting,
            format!("{} holds no PEM certificate", path.display()),
        ));
    }
    Ok(certs)
}

impl Mtls {
    /// Loads the material of `identity` from PEM files. The certificate must carry
    /// `identity` as its SPIFFE id; the settings name the files in errors.
    pub fn from_files(
        identity: SpiffeId,
        ca: &Path,
        cert: &Path,
        key: &Path,
        policy: CallPolicy,
    ) -> Result<Self, ConfigError> {
        let (ca_setting, cert_setting, key_setting) = (
            "FLOTILLA_TLS__CA",
            "FLOTILLA_TLS__CERT",
            "FLOTILLA_TLS__KEY",
        );
        let mut roots = RootCertStore::empty();
        for c in read_certs(ca, ca_setting)? {
            roots
                .add(c)
                .map_err(|e| setting_err(ca_setting, format!("{}: {e}", ca.display())))?;
        }
        let chain = read_certs(cert, cert_setting)?;
        match SpiffeId::from_certificate(&chain[0]) {
            Some(id) if id == identity => {}
            Some(other) => {
                return Err(setting_err(
                    cert_setting,
                    format!(
                        "{} is the certificate of {other}, not {identity}",
                        cert.display()
                    ),
                ));
            }
            None => {
                return Err(setting_err(
                    cert_setting,
                    format!("{} carries no spiffe:// URI name", cert.display()),
                ));
            }
        }
        let key_der = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| setting_err(key_setting, format!("{}: {e}", key.display())))?;
        Self::from_parts(identity, roots, chain, key_der, policy)
            .map_err(|e| setting_err(key_setting, e))
    }

    /// Builds the server and client configurations from loaded material.
    pub fn from_parts(
        identity: SpiffeId,
        roots: RootCertStore,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        policy: CallPolicy,
    ) -> Result<Self, String> {
        let provider = provider();
        let roots = Arc::new(roots);
        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(|e| format!("the CA cannot verify clients: {e}"))?;
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| format!("the key does not fit the certificate: {e}"))?;
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let server_verifier = Arc::new(SpiffeServerVerifier {
            roots,
            algorithms: provider.signature_verification_algorithms,
            trust_domain: identity.trust_domain().to_owned(),
        });
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(server_verifier)
            .with_client_auth_cert(chain, key)
            .map_err(|e| format!("the key does not fit the certificate: {e}"))?;
        Ok(Self {
            identity,
            server: Arc::new(server),
            client: Arc::new(client),
            policy,
        })
    }

    /// This identity.
    pub fn identity(&self) -> &SpiffeId {
        &self.identity
    }

    /// The configuration for internal listeners: client certificates from the CA required.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.server.clone()
    }

    /// The configuration for clients: presents this identity, checks servers against the CA.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.client.clone()
    }

    /// The call policy.
    pub fn policy(&self) -> &CallPolicy {
        &self.policy
    }
}

impl InternalTransport {
    /// The transport of `service` from configuration: insecure with
    /// `FLOTILLA_INSECURE_INTERNAL=1`, else mTLS from the `[tls]` files.
    pub fn load(service: &str, common: &Common, tls: &TlsConfig) -> Result<Self, ConfigError> {
        if common.insecure_internal {
            return Ok(Self::Insecure);
        }
        let identity = SpiffeId::new(&tls.trust_domain, service)
            .map_err(|e| setting_err("FLOTILLA_TLS__TRUST_DOMAIN", e.to_string()))?;
        let (ca, cert, key) = tls.files(&common.data_dir, service);
        Ok(Self::Mtls(Arc::new(Mtls::from_files(
            identity,
            &ca,
            &cert,
            &key,
            tls.policy.clone(),
        )?)))
    }

    /// The mTLS material, unless insecure.
    pub fn mtls(&self) -> Option<&Arc<Mtls>> {
        match self {
            Self::Insecure => None,
            Self::Mtls(m) => Some(m),
        }
    }

    /// `https` with mTLS, `http` without: the scheme of internal URLs.
    pub fn scheme(&self) -> &'static str {
        match self {
            Self::Insecure => "http",
            Self::Mtls(_) => "https",
        }
    }

    /// A reqwest builder for internal calls (no proxy; with mTLS, this identity's TLS
    /// configuration, HTTP/1.1).
    pub fn reqwest_builder(&self) -> reqwest::ClientBuilder {
        install_crypto_provider();
        let builder = reqwest::Client::builder().no_proxy();
        match self {
            Self::Insecure => builder,
            Self::Mtls(m) => {
                let mut config = ClientConfig::clone(&m.client);
                config.alpn_protocols = vec![b"http/1.1".to_vec()];
                builder.use_preconfigured_tls(config).https_only(true)
            }
        }
    }

    /// A hyper/tonic connector over `http` (its timeouts and socket options kept).
    pub fn connector(&self, http: HttpConnector) -> InternalConnector {
        InternalConnector::new(http, self.mtls().map(|m| m.client_config()))
    }
}

static PROCESS: OnceLock<InternalTransport> = OnceLock::new();

/// Sets the transport this process's clients use; the first call wins (a process is
/// one service, or one command with the operator identity).
pub fn install(transport: InternalTransport) {
    install_crypto_provider();
    let _ = PROCESS.set(transport);
}

/// The transport [`install`]ed for this process (insecure when none was).
pub fn process() -> InternalTransport {
    PROCESS.get().cloned().unwrap_or_default()
}

/// [`InternalTransport::reqwest_builder`] of the process transport.
pub fn reqwest_builder() -> reqwest::ClientBuilder {
    process().reqwest_builder()
}

/// [`InternalTransport::connector`] of the process transport.
pub fn connector(http: HttpConnector) -> InternalConnector {
    process().connector(http)
}

/// [`InternalTransport::scheme`] of the process transport.
pub fn scheme() -> &'static str {
    process().scheme()
}

/// Accepts a server whose certificate chains to the CA and names a SPIFFE id in the
/// trust domain. Host names are not checked: instances are reached by the address
/// discovery gives, and the identity is what matters.
#[derive(Debug)]
struct SpiffeServerVerifier {
    roots: Arc<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
    trust_domain: String,
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        match SpiffeId::from_certificate(end_entity) {
            Some(id) if id.trust_domain() == self.trust_domain => {
                Ok(ServerCertVerified::assertion())
            }
            _ => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The SPIFFE id of the client of an accepted TLS connection.
pub fn peer_identity(session: &rustls::ServerConnection) -> Option<PeerIdentity> {
    let cert = session.peer_certificates()?.first()?;
    SpiffeId::from_certificate(cert).map(PeerIdentity)
}

#[cfg(test)]
mod tests;
