//! Authentication (who is calling: a verified bearer token) and authorization (may they
//! call this route: its public/authenticated rule, scope and role).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, header};
use kit::Problem;
use kit::security::Identity;
use kit::security::jwt::{self, JwtError};

use super::{Edge, Matched};
use crate::routes::Access;

/// What authentication found, recorded in the request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authn {
    /// No `authorization` header.
    Anonymous,
    /// A valid token.
    User(Identity),
    /// A token (or another scheme) that does not verify.
    Invalid(JwtError),
}

impl Authn {
    /// The verified caller, if any.
    pub fn identity(&self) -> Option<&Identity> {
        match self {
            Self::User(id) => Some(id),
            _ => None,
        }
    }
}

/// Verifies the bearer token, if any, and records an [`Authn`]; rejects nothing itself.
pub async fn authenticate(State(edge): State<Arc<Edge>>, mut req: Request, next: Next) -> Response {
    let authn = match req.headers().get(header::AUTHORIZATION) {
        None => Authn::Anonymous,
        Some(v) => match jwt::bearer(v) {
            None => Authn::Invalid(JwtError::Malformed),
            Some(token) => match edge.verifier.verify(token).await {
                Ok(claims) => Authn::User(claims.identity()),
                Err(e) => {
                    tracing::debug!(error = %e, "access token refused");
                    Authn::Invalid(e)
                }
            },
        },
    };
    req.extensions_mut().insert(authn);
    next.run(req).await
}

/// Applies the matched route's rule for the request's method; on success the verified
/// [`Identity`] (when there is one) goes into the request's extensions.
pub async fn authorize(State(edge): State<Arc<Edge>>, mut req: Request, next: Next) -> Response {
    let authn = req
        .extensions_mut()
        .remove::<Authn>()
        .unwrap_or(Authn::Anonymous);
    let matched = req.extensions().get::<Matched>().and_then(|m| m.0);
    let access = matched
        .and_then(|i| edge.route(i))
        .map(|r| r.access(req.method()));
    match decide(access, authn) {
        Ok(Some(identity)) => {
            req.extensions_mut().insert(identity);
            next.run(req).await
        }
        Ok(None) => next.run(req).await,
        Err(res) => res,
    }
}

/// The decision of [`authorize`]: `Ok` with the identity to forward, or the rejection.
/// `access` is `None` for paths no route serves (the proxy answers those).
pub fn decide(access: Option<Access<'_>>, authn: Authn) -> Result<Option<Identity>, Response> {
    let Some(access) = access else {
        return Ok(authn.identity().cloned());
    };
    match authn {
        // On a public route a bad token is not an error: the caller is anonymous (a
        // stale token must not lock anyone out of logging in again).
        Authn::Invalid(_) | Authn::Anonymous if access.public => Ok(None),
        Authn::Anonymous => Err(unauthorized(None)),
        Authn::Invalid(e) if e.is_unavailable() => Err(Problem::unavailable(
            "the token cannot be checked now: the signing keys are unavailable",
            Duration::from_secs(2),
        )
        .into_response()),
        Authn::Invalid(e) => Err(unauthorized(Some(&e))),
        Authn::User(id) => {
            if access.public {
                return Ok(Some(id));
            }
            if let Some(role) = access.role
                && !id.has_role(role)
            {
                return Err(forbidden(format!("this needs the {role} role"), None));
            }
            if let Some(scope) = access.scope
                && id.require_scope(scope).is_err()
            {
                return Err(forbidden(
                    format!("this needs the {scope} scope"),
                    Some(scope),
                ));
            }
            Ok(Some(id))
        }
    }
}

/// `401` with the RFC 6750 challenge: no error code when no token was sent,
/// `invalid_token` when one was.
fn unauthorized(error: Option<&JwtError>) -> Response {
    let (detail, challenge) = match error {
        None => (
            "an access token is required (authorization: Bearer …)".to_owned(),
            r#"Bearer realm="flotilla""#.to_owned(),
        ),
        Some(e) => (
            format!("invalid access token: {e}"),
            r#"Bearer realm="flotilla", error="invalid_token""#.to_owned(),
        ),
    };
    challenge_response(Problem::unauthorized(detail), &challenge)
}

fn forbidden(detail: String, scope: Option<&str>) -> Response {
    let challenge = match scope {
        Some(s) => format!(r#"Bearer realm="flotilla", error="insufficient_scope", scope="{s}""#),
        None => r#"Bearer realm="flotilla", error="insufficient_scope""#.to_owned(),
    };
    challenge_response(Problem::forbidden(detail), &challenge)
}

fn challenge_response(problem: Problem, challenge: &str) -> Response {
    let mut res = problem.into_response();
    if let Ok(v) = HeaderValue::from_str(challenge) {
        res.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    res
}
