//! The gateway's request checks as one function of raw bytes, for the fuzz target
//! `gateway_request` (`fuzz/`) and the test that replays its corpus.

use http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use kit::security::jwt;

use super::auth::{self, Authn};
use super::{Matched, body, check_request};
use crate::routes::{self, RouteConfig};

/// Reads `data` as a request (`METHOD path` line, `name: value` header lines, an empty
/// line, the body) and runs it through path checks, routing, the route's access rule,
/// the bearer-token precheck and the body checks of the default route table. Answers
/// the status the gateway would refuse it with, or `None` when it would pass them.
/// Never panics.
pub fn request(data: &[u8]) -> Option<u16> {
    let (head, body_bytes) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (data, &b""[..]),
    };
    let head = String::from_utf8_lossy(head);
    let mut lines = head.lines();
    let first = lines.next().unwrap_or("");
    let (method, path) = first.split_once(' ').unwrap_or(("GET", first));
    let method = Method::from_bytes(method.as_bytes()).unwrap_or(Method::GET);
    let mut headers = HeaderMap::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.trim().as_bytes()),
            HeaderValue::from_str(value.trim()),
        ) {
            headers.append(n, v);
        }
    }
    let table: Vec<(RouteConfig, ())> = routes::default_routes()
        .into_iter()
        .map(|r| (r, ()))
        .collect();
    let index = match check_request(&table, path, &headers) {
        Ok(Matched(index)) => index,
        Err(p) => return Some(p.status),
    };
    let authn = match headers.get(header::AUTHORIZATION) {
        None => Authn::Anonymous,
        Some(v) => match jwt::bearer(v).map(|t| jwt::precheck(t, jwt::MAX_TOKEN_BYTES)) {
            // A well-formed token would still need its key; count it as invalid here.
            Some(Ok(_)) => Authn::Invalid(jwt::JwtError::Signature),
            Some(Err(e)) => Authn::Invalid(e),
            None => Authn::Invalid(jwt::JwtError::Malformed),
        },
    };
    let route = &table[index?].0;
    if let Err(res) = auth::decide(Some(route.access(&method)), authn) {
        return Some(res.status().as_u16());
    }
    body::check(route, &method, &headers, body_bytes)
        .err()
        .map(|p| p.status)
}
