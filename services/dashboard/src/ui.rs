//! The web UI: one page (`assets/index.html`) served at every page path, which routes
//! on `location.pathname` with the history API, and its assets under `/assets/`, all
//! embedded in the binary so the UI works with no network beyond the dashboard.
//!
//! `index.html` names each asset with a version query string (`app.js?v=<content
//! hash>`): a versioned asset is cached for a year, and a new build changes the URL. The
//! page itself and unversioned asset URLs are revalidated with an `ETag`. Every answer
//! carries a `Content-Security-Policy` that allows this origin only.

use std::sync::LazyLock;

use axum::Router;
use axum::extract::{Path, RawQuery};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

/// The page paths of the UI; each serves `index.html`.
pub const PAGES: [&str; 6] = [
    "/services",
    "/traces",
    "/traces/{trace_id}",
    "/logs",
    "/sagas",
    "/bus",
];

/// Scripts, styles, images, fonts and API calls from this origin only; no inline
/// script, no framing, no plugin, no form posting elsewhere. Style changes the script
/// makes through the CSSOM (`el.style.left`) are not inline styles and stay allowed.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; font-src 'self'; \
     manifest-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// One embedded file under `/assets/`.
#[derive(Debug)]
struct Asset {
    name: &'static str,
    body: &'static [u8],
    content_type: &'static str,
    /// FNV-1a of the body, computed at compile time: the version and the `ETag`.
    hash: u64,
}

impl Asset {
    const fn new(name: &'static str, body: &'static [u8], content_type: &'static str) -> Self {
        Self {
            name,
            body,
            content_type,
            hash: fnv1a(body),
        }
    }

    fn version(&self) -> String {
        format!("{:016x}", self.hash)
    }
}

/// FNV-1a, 64-bit: a content fingerprint for cache validation, not a security hash.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

static ASSETS: [Asset; 3] = [
    Asset::new(
        "app.js",
        include_bytes!("../assets/app.js"),
        "text/javascript; charset=utf-8",
    ),
    Asset::new(
        "app.css",
        include_bytes!("../assets/app.css"),
        "text/css; charset=utf-8",
    ),
    Asset::new(
        "favicon.svg",
        include_bytes!("../assets/favicon.svg"),
        "image/svg+xml",
    ),
];

/// `index.html` with each `{{name}}` replaced by that asset's version, and its ETag.
static INDEX: LazyLock<(String, String)> = LazyLock::new(|| {
    let mut html = include_str!("../assets/index.html").to_owned();
    for a in &ASSETS {
        html = html.replace(&format!("{{{{{}}}}}", a.name), &a.version());
    }
    let etag = format!("\"{:016x}\"", fnv1a(html.as_bytes()));
    (html, etag)
});

/// The page paths (each serves `index.html`), `/` (to `/services`) and the assets.
pub fn router() -> Router {
    let mut router = Router::new()
        .route("/", get(|| async { Redirect::to("/services") }))
        .route("/assets/{name}", get(asset));
    for page in PAGES {
        router = router.route(page, get(index));
    }
    router
}

async fn index(headers: HeaderMap) -> Response {
    let (html, etag) = &*INDEX;
    respond(
        &headers,
        etag,
        "no-cache",
        "text/html; charset=utf-8",
        html.as_bytes(),
    )
}

async fn asset(
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.name == name) else {
        return with_policy(
            kit::Problem::not_found(format!("no asset named {name:?}")).into_response(),
        );
    };
    let version = asset.version();
    let versioned = query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .any(|pair| pair.strip_prefix("v=") == Some(version.as_str()));
    let cache = if versioned {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    respond(
        &headers,
        &format!("\"{version}\""),
        cache,
        asset.content_type,
        asset.body,
    )
}

/// The body, or `304` when the browser's copy (`If-None-Match`) is current.
fn respond(
    headers: &HeaderMap,
    etag: &str,
    cache: &'static str,
    content_type: &'static str,
    body: &'static [u8],
) -> Response {
    let current = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let etag = HeaderValue::from_str(etag).expect("a quoted hex ETag is a valid header value");
    let validators = [
        (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
        (header::ETAG, etag),
    ];
    let response = if current {
        (StatusCode::NOT_MODIFIED, validators).into_response()
    } else {
        (
            validators,
            [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
            body,
        )
            .into_response()
    };
    with_policy(response)
}

fn with_policy(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serves [`router`] on a free port; returns its base URL.
    async fn serve() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router()).await.unwrap() });
        format!("http://{addr}")
    }

    fn client() -> reqwest::Client {
        kit::security::mtls::install_crypto_provider();
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
    }

    fn header<'a>(res: &'a reqwest::Response, name: &str) -> &'a str {
        res.headers()
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap()
    }

    #[tokio::test]
    async fn every_page_path_serves_the_index_with_versioned_assets() {
        let base = serve().await;
        let http = client();
        let trace = format!("/traces/{}", "0af7651916cd43dd8448eb211c80319c");
        let pages = ["/services", "/traces", &trace, "/logs", "/sagas", "/bus"];
        let mut etags = Vec::new();
        for page in pages {
            let res = http
                .get(format!("{base}{page}?service=orders"))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200, "{page}");
            assert_eq!(header(&res, "content-type"), "text/html; charset=utf-8");
            assert_eq!(header(&res, "cache-control"), "no-cache");
            assert_eq!(
                header(&res, "content-security-policy"),
                CONTENT_SECURITY_POLICY
            );
            etags.push(header(&res, "etag").to_owned());
            let html = res.text().await.unwrap();
            assert!(html.contains(r#"<script type="module" src="/assets/app.js?v="#));
            assert!(!html.contains("{{"), "every asset version was filled in");
            for a in &ASSETS {
                assert!(
                    html.contains(&format!("/assets/{}?v={}", a.name, a.version())),
                    "{page} names {} at its version",
                    a.name
                );
            }
        }
        assert!(
            etags.windows(2).all(|w| w[0] == w[1]),
            "one page: {etags:?}"
        );

        let res = http.get(format!("{base}/")).send().await.unwrap();
        assert!(res.status().is_redirection());
        assert_eq!(header(&res, "location"), "/services");

        for missing in ["/nope", "/traces/x/y"] {
            let res = http.get(format!("{base}{missing}")).send().await.unwrap();
            assert_eq!(res.status(), 404, "{missing}");
        }
    }

    #[tokio::test]
    async fn assets_have_their_types_validators_and_cache_lifetimes() {
        let base = serve().await;
        let http = client();
        for (name, ty) in [
            ("app.js", "text/javascript; charset=utf-8"),
            ("app.css", "text/css; charset=utf-8"),
            ("favicon.svg", "image/svg+xml"),
        ] {
            let asset = ASSETS.iter().find(|a| a.name == name).unwrap();
            let res = http
                .get(format!("{base}/assets/{name}"))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200, "{name}");
            assert_eq!(header(&res, "content-type"), ty, "{name}");
            assert_eq!(header(&res, "cache-control"), "no-cache", "{name}");
            assert_eq!(header(&res, "x-content-type-options"), "nosniff");
            let etag = header(&res, "etag").to_owned();
            assert_eq!(etag, format!("\"{}\"", asset.version()));
            assert_eq!(res.bytes().await.unwrap().as_ref(), asset.body);

            let res = http
                .get(format!("{base}/assets/{name}"))
                .header("if-none-match", &etag)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 304, "{name} revalidated");
            assert!(res.bytes().await.unwrap().is_empty());

            let res = http
                .get(format!("{base}/assets/{name}?v={}", asset.version()))
                .send()
                .await
                .unwrap();
            assert_eq!(
                header(&res, "cache-control"),
                "public, max-age=31536000, immutable"
            );
            // An old version's URL is served (the current body) but not cached as it.
            let res = http
                .get(format!("{base}/assets/{name}?v=0000000000000000"))
                .send()
                .await
                .unwrap();
            assert_eq!(header(&res, "cache-control"), "no-cache");
        }
    }

    #[tokio::test]
    async fn an_unknown_asset_is_a_404_problem() {
        let base = serve().await;
        let res = client()
            .get(format!("{base}/assets/secret.js"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 404);
        assert_eq!(header(&res, "content-type"), "application/problem+json");
        assert_eq!(
            header(&res, "content-security-policy"),
            CONTENT_SECURITY_POLICY
        );
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["status"], 404);
        assert!(body["detail"].as_str().unwrap().contains("secret.js"));
    }

    #[test]
    fn the_policy_allows_no_other_origin() {
        for directive in CONTENT_SECURITY_POLICY.split(';') {
            let sources: Vec<_> = directive.split_whitespace().skip(1).collect();
            assert!(
                sources.iter().all(|s| ["'self'", "'none'"].contains(s)),
                "{directive}"
            );
        }
    }

    #[test]
    fn the_ui_loads_nothing_from_elsewhere() {
        let sources = [
            include_str!("../assets/index.html"),
            include_str!("../assets/app.js"),
            include_str!("../assets/app.css"),
        ];
        for text in sources {
            for scheme in ["http://", "https://", "//cdn", "@import"] {
                assert!(!text.contains(scheme), "an external reference: {scheme}");
            }
            assert!(
                !text.contains("innerHTML"),
                "data reaches the DOM as text only"
            );
        }
    }
}
