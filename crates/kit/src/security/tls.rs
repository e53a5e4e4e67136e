//! TLS for listeners: a rustls server configuration (ring provider) from PEM files.
//!
//! [`server_config`] reads a certificate chain and its private key (PKCS#8, PKCS#1 or
//! SEC1 PEM), offers ALPN `h2` and `http/1.1`, and fails with an error naming the
//! setting whose file is missing or unusable.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::ConfigError;

/// Builds a server configuration from PEM files; `cert_setting` and `key_setting` are
/// the settings that named them (for the error message).
pub fn server_config(
    cert: &Path,
    key: &Path,
    cert_setting: &str,
    key_setting: &str,
) -> Result<Arc<ServerConfig>, ConfigError> {
    let bad = |setting: &str, message: String| ConfigError::Setting {
        setting: setting.to_owned(),
        message,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad(cert_setting, format!("cannot read {}: {e}", cert.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(cert_setting, format!("{}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(bad(
            cert_setting,
            format!("{} holds no PEM certificate", cert.display()),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| bad(key_setting, format!("{}: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(cert_setting, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            bad(
                key_setting,
                format!("the key does not fit the certificate: {e}"),
            )
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_a_generated_certificate_and_names_bad_settings() {
        let dir = tempfile::tempdir().unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let (c, k) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&c, cert.cert.pem()).unwrap();
        std::fs::write(&k, cert.signing_key.serialize_pem()).unwrap();
        let config = server_config(&c, &k, "CERT", "KEY").unwrap();
        assert_eq!(config.alpn_protocols[0], b"h2");

        let missing = dir.path().join("nope.pem");
        let err = server_config(&missing, &k, "CERT", "KEY").unwrap_err();
        assert!(err.to_string().contains("CERT"), "{err}");
        let err = server_config(&c, &c, "CERT", "KEY").unwrap_err();
        assert!(err.to_string().contains("KEY"), "{err}");
    }
}
