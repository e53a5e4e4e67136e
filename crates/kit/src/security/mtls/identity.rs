//! Service identities: SPIFFE ids (`spiffe://flotilla.local/orders`) carried in a
//! certificate's URI subject alternative name, and the peer identity a listener hands
//! to its handlers.

use std::fmt;

use axum::extract::FromRequestParts;
use http::request::Parts;

use crate::errors::Problem;

/// The trust domain of a Flotilla system unless `FLOTILLA_TLS__TRUST_DOMAIN` says otherwise.
pub const DEFAULT_TRUST_DOMAIN: &str = "flotilla.local";

/// A string that is not a Flotilla SPIFFE id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a SPIFFE id of the form spiffe://<trust domain>/<service>")]
pub struct InvalidSpiffeId(pub String);

/// `spiffe://<trust domain>/<service>`: who a certificate says its holder is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    trust_domain: String,
    service: String,
}

/// Trust domains and service names: lowercase letters, digits, `-`, `_` and `.`.
fn valid_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
}

impl SpiffeId {
    /// The id of `service` in `trust_domain`.
    pub fn new(trust_domain: &str, service: &str) -> Result<Self, InvalidSpiffeId> {
        if valid_part(trust_domain) && valid_part(service) {
            Ok(Self {
                trust_domain: trust_domain.to_owned(),
                service: service.to_owned(),
            })
        } else {
            Err(InvalidSpiffeId(format!(
                "spiffe://{trust_domain}/{service}"
            )))
        }
    }

    /// Parses `spiffe://<trust domain>/<service>` (exactly one path segment, no query,
    /// fragment, port or user info).
    pub fn parse(uri: &str) -> Result<Self, InvalidSpiffeId> {
        let bad = || InvalidSpiffeId(uri.to_owned());
        let rest = uri.strip_prefix("spiffe://").ok_or_else(bad)?;
        let (domain, service) = rest.split_once('/').ok_or_else(bad)?;
        Self::new(domain, service).map_err(|_| bad())
    }

    /// The trust domain (`flotilla.local`).
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The service name (`orders`).
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The first SPIFFE id among the URI subject alternative names of a DER
    /// certificate; `None` when it has none (or does not parse).
    pub fn from_certificate(der: &rustls_pki_types::CertificateDer<'_>) -> Option<Self> {
        let cert = webpki::EndEntityCert::try_from(der).ok()?;
        cert.valid_uri_names().find_map(|uri| Self::parse(uri).ok())
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spiffe://{}/{}", self.trust_domain, self.service)
    }
}

/// The verified identity of the service on the other end of an mTLS connection, as a
/// request extension on every request of an internal listener (absent on plain-text
/// listeners). Handlers can take it as an extractor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity(pub SpiffeId);

impl<S: Send + Sync> FromRequestParts<S> for PeerIdentity {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<PeerIdentity>()
            .cloned()
            .ok_or_else(|| Problem::forbidden("this needs a service identity (mTLS)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_flotilla_spiffe_ids() {
        let id = SpiffeId::parse("spiffe://flotilla.local/orders").unwrap();
        assert_eq!(id.trust_domain(), "flotilla.local");
        assert_eq!(id.service(), "orders");
        assert_eq!(id.to_string(), "spiffe://flotilla.local/orders");
        assert_eq!(SpiffeId::new("flotilla.local", "orders").unwrap(), id);
    }

    #[test]
    fn rejects_what_is_not_one() {
        for bad in [
            "",
            "orders",
            "http://flotilla.local/orders",
            "spiffe://flotilla.local",
            "spiffe://flotilla.local/",
            "spiffe:///orders",
            "spiffe://flotilla.local/orders/extra",
            "spiffe://flotilla.local/Orders",
            "spiffe://flotilla.local:443/orders",
            "spiffe://user@flotilla.local/orders",
            "spiffe://flotilla.local/orders?x=1",
            "spiffe://flotilla.local/..",
            "SPIFFE://flotilla.local/orders",
        ] {
            assert!(SpiffeId::parse(bad).is_err(), "{bad:?} parsed");
        }
    }
}
