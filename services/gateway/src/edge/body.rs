//! Request bodies on JSON routes: `POST`/`PUT`/`PATCH` bodies must be declared JSON
//! (`415` otherwise), and JSON bodies must parse and nest at most [`MAX_JSON_DEPTH`]
//! deep (`400`), so no upstream parser sees a stack-exhausting document.

use http::{HeaderMap, Method, header};
use kit::Problem;

use crate::routes::RouteConfig;

/// Deepest nesting of arrays and objects accepted in a JSON body.
pub const MAX_JSON_DEPTH: usize = 32;

/// Whether a `content-type` value is JSON (`application/json`, `application/*+json`,
/// parameters allowed).
pub fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Whether `body` nests arrays/objects deeper than `max` (strings are skipped, so
/// brackets inside them do not count). Does not validate the rest of the syntax.
pub fn nests_deeper_than(body: &[u8], max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in body {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Checks a buffered request body against its route.
pub fn check(
    route: &RouteConfig,
    method: &Method,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), Problem> {
    if !route.json || body.is_empty() {
        return Ok(());
    }
    let declared_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(is_json);
    if !declared_json {
        if matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
            return Err(Problem::unsupported_media_type(
                "the body must be JSON (content-type: application/json)",
            ));
        }
        return Ok(());
    }
    if nests_deeper_than(body, MAX_JSON_DEPTH) {
        return Err(Problem::bad_request(format!(
            "the JSON body nests deeper than {MAX_JSON_DEPTH} levels"
        )));
    }
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(body) {
        return Err(Problem::bad_request(format!(
            "the body is not valid JSON: {e}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_media_types() {
        for ok in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/merge-patch+json",
        ] {
            assert!(is_json(ok), "{ok}");
        }
        for no in [
            "text/plain",
            "application/jsonx",
            "application/x-www-form-urlencoded",
            "",
        ] {
            assert!(!is_json(no), "{no}");
        }
    }

    #[test]
    fn depth_counts_brackets_outside_strings() {
        let deep = format!("{}{}", "[".repeat(33), "]".repeat(33));
        assert!(nests_deeper_than(deep.as_bytes(), 32));
        let ok = format!("{}{}", "[".repeat(32), "]".repeat(32));
        assert!(!nests_deeper_than(ok.as_bytes(), 32));
        let in_string = format!("{{\"a\": \"{}\\\"{}\"}}", "[".repeat(100), "{".repeat(100));
        assert!(!nests_deeper_than(in_string.as_bytes(), 32));
    }

    #[test]
    fn bodies_on_json_routes() {
        let route = RouteConfig::new("/x", "x");
        let json = {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
            h
        };
        let none = HeaderMap::new();
        assert!(check(&route, &Method::POST, &json, br#"{"a":[1,2]}"#).is_ok());
        assert!(
            check(&route, &Method::POST, &none, b"").is_ok(),
            "no body, no type"
        );
        assert_eq!(
            check(&route, &Method::POST, &none, b"{}")
                .unwrap_err()
                .status,
            415
        );
        assert_eq!(
            check(&route, &Method::POST, &json, b"{")
                .unwrap_err()
                .status,
            400
        );
        let deep = format!("{}{}", "[".repeat(40), "]".repeat(40));
        assert_eq!(
            check(&route, &Method::PUT, &json, deep.as_bytes())
                .unwrap_err()
                .status,
            400
        );
        let mut raw = RouteConfig::new("/x", "x");
        raw.json = false;
        assert!(check(&raw, &Method::POST, &none, b"<xml/>").is_ok());
    }
}
