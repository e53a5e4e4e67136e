//! The caller's identity as services see it.
//!
//! The gateway verifies the client's access token and forwards who the caller is in the
//! `x-flotilla-*` identity headers, after removing any copies the client sent, so a
//! client cannot forge them. Services read them with the [`Identity`] extractor and
//! check ownership and roles themselves (a user gets `404` for another user's objects).
//!
//! [`jwt`] verifies the access tokens themselves (EdDSA against the issuer's JWKS), for
//! the gateway or any service that sees tokens; [`tls`] loads certificates for the
//! public (edge) TLS listener; [`mtls`] is service-to-service mutual TLS, service
//! identity and the call policy.

pub mod jwt;
pub mod mtls;
pub mod tls;

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use http::HeaderName;
use http::request::Parts;

use crate::errors::Problem;

/// The verified user id (`sub` of the access token).
pub const USER_ID: HeaderName = HeaderName::from_static("x-flotilla-user-id");
/// Space-separated roles (`customer`, `admin`).
pub const ROLES: HeaderName = HeaderName::from_static("x-flotilla-roles");
/// Space-separated scopes (`orders:write`).
pub const SCOPES: HeaderName = HeaderName::from_static("x-flotilla-scopes");
/// Every identity header; the gateway strips these from incoming requests.
pub const IDENTITY_HEADERS: [HeaderName; 3] = [USER_ID, ROLES, SCOPES];

/// Who is calling, as verified by the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user id.
    pub user_id: String,
    /// Roles.
    pub roles: Vec<String>,
    /// Scopes.
    pub scopes: Vec<String>,
}

fn words(parts: &Parts, name: &HeaderName) -> Vec<String> {
    parts
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

impl Identity {
    /// Reads the identity headers; `None` when the request is anonymous.
    pub fn from_parts(parts: &Parts) -> Option<Self> {
        let user_id = parts.headers.get(USER_ID)?.to_str().ok()?.trim();
        if user_id.is_empty() {
            return None;
        }
        Some(Self {
            user_id: user_id.to_owned(),
            roles: words(parts, &ROLES),
            scopes: words(parts, &SCOPES),
        })
    }

    /// Whether the caller has `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// Whether the caller is an administrator.
    pub fn is_admin(&self) -> bool {
        self.has_role("admin")
    }

    /// `403` unless the caller has `role`.
    pub fn require_role(&self, role: &str) -> Result<(), Problem> {
        if self.has_role(role) {
            Ok(())
        } else {
            Err(Problem::forbidden(format!("this needs the {role} role")))
        }
    }

    /// `403` unless the caller has `scope`.
    pub fn require_scope(&self, scope: &str) -> Result<(), Problem> {
        if self.scopes.iter().any(|s| s == scope) {
            Ok(())
        } else {
            Err(Problem::forbidden(format!("this needs the {scope} scope")))
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Identity {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Identity::from_parts(parts)
            .ok_or_else(|| Problem::unauthorized("an access token is required"))
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for Identity {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, Self::Rejection> {
        Ok(Identity::from_parts(parts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(headers: &[(&HeaderName, &str)]) -> Parts {
        let mut b = http::Request::builder();
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn reads_identity_headers() {
        let p = parts(&[
            (&USER_ID, "u1"),
            (&ROLES, "customer admin"),
            (&SCOPES, "orders:write"),
        ]);
        let id = Identity::from_parts(&p).unwrap();
        assert!(id.is_admin());
        assert!(id.require_scope("orders:write").is_ok());
        assert_eq!(id.require_scope("x").unwrap_err().status, 403);
        assert!(Identity::from_parts(&parts(&[])).is_none());
        assert!(Identity::from_parts(&parts(&[(&USER_ID, " ")])).is_none());
    }
}
