//! The web UI: one page (`assets/index.html`) served at every page path, which routes
//! on `location.pathname` with the history API, and its assets under `/assets/`, all
//! embedded in the binary.

use std::hash::{Hash, Hasher};
use std::sync::OnceLock;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../assets/app.css");
const FAVICON_SVG: &str = include_str!("../assets/favicon.svg");

/// The page paths (each serves `index.html`) and the assets.
pub fn router() -> Router {
    let page = || get(|headers: HeaderMap| async move { asset(&headers, &INDEX) });
    Router::new()
        .route("/", get(|| async { Redirect::to("/services") }))
        .route("/services", page())
        .route("/traces", page())
        .route("/traces/{trace_id}", page())
        .route("/logs", page())
        .route("/sagas", page())
        .route("/bus", page())
        .route(
            "/assets/app.js",
            get(|headers: HeaderMap| async move { asset(&headers, &JS) }),
        )
        .route(
            "/assets/app.css",
            get(|headers: HeaderMap| async move { asset(&headers, &CSS) }),
        )
        .route(
            "/assets/favicon.svg",
            get(|headers: HeaderMap| async move { asset(&headers, &FAVICON) }),
        )
}

/// One embedded file.
struct Asset {
    body: &'static str,
    content_type: &'static str,
    etag: OnceLock<String>,
}

static INDEX: Asset = Asset::new(INDEX_HTML, "text/html; charset=utf-8");
static JS: Asset = Asset::new(APP_JS, "text/javascript; charset=utf-8");
static CSS: Asset = Asset::new(APP_CSS, "text/css; charset=utf-8");
static FAVICON: Asset = Asset::new(FAVICON_SVG, "image/svg+xml");

impl Asset {
    const fn new(body: &'static str, content_type: &'static str) -> Self {
        Self {
            body,
            content_type,
            etag: OnceLock::new(),
        }
    }

    /// A validator that changes with the content (the URLs carry no version).
    fn etag(&self) -> &str {
        self.etag.get_or_init(|| {
            let mut h = std::hash::DefaultHasher::new();
            self.body.hash(&mut h);
            format!("\"{:016x}\"", h.finish())
        })
    }
}

/// The asset, or `304` when the browser's copy is current. `no-cache`: the browser keeps
/// a copy but revalidates it, so a new build's UI shows at the next load.
fn asset(headers: &HeaderMap, asset: &'static Asset) -> Response {
    let etag = asset.etag();
    let cache = [
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            header::ETAG,
            HeaderValue::from_str(etag).expect("a hex etag is a valid header value"),
        ),
    ];
    let current = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if current {
        return (StatusCode::NOT_MODIFIED, cache).into_response();
    }
    (
        cache,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        )],
        asset.body,
    )
        .into_response()
}
