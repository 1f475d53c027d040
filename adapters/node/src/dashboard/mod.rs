//! The web dashboard, served by the node at `/` and `/dashboard/FILE`.
//!
//! Three hand-written files (`index.html`, `app.js`, `style.css`) are
//! compiled into the binary: a cluster often has no internet and no place
//! to unpack assets, so nothing is loaded from anywhere but the node, and
//! there is no build step. The page talks to the same HTTP API as every
//! other client (reads open, writes with the bearer token it asks for).

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::sync::OnceLock;

/// One embedded file: its bytes, type and validator.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset { name: "index.html", content_type: "text/html; charset=utf-8", body: include_bytes!("index.html") },
    Asset { name: "app.js", content_type: "text/javascript; charset=utf-8", body: include_bytes!("app.js") },
    Asset { name: "style.css", content_type: "text/css; charset=utf-8", body: include_bytes!("style.css") },
];

/// What the page may load and talk to: only this node. A record's TXT data
/// or a torrent's name is hostile text the page shows; the script writes
/// it with `textContent`, and this policy is the second wall (no inline
/// script, no outside origin, no framing).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'";

/// The routes, to be merged into the API's router (any state).
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/", get(index)).route("/dashboard/{file}", get(asset))
}

async fn index(headers: HeaderMap) -> Response {
    serve(&ASSETS[0], &headers)
}

async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().find(|a| a.name == file) {
        Some(a) => serve(a, &headers),
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({ "error": format!("no such dashboard file: {file}") })),
        )
            .into_response(),
    }
}

/// An entity tag per file, from its bytes: a browser revalidates every time
/// (`no-cache`) and gets a bodiless 304 while the binary is the same, so a
/// node upgraded in place never serves a page with a stale script.
fn etag(index: usize) -> &'static str {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                use sha1::Digest;
                let d = sha1::Sha1::digest(a.body);
                format!("\"{}\"", hex::encode(&d[..8]))
            })
            .collect()
    });
    &tags[index]
}

fn serve(a: &'static Asset, headers: &HeaderMap) -> Response {
    let i = ASSETS.iter().position(|x| std::ptr::eq(x, a)).unwrap_or(0);
    let tag = etag(i);
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
    let common = [
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (header::ETAG, HeaderValue::from_static(tag)),
        (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP)),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
    ];
    if fresh {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (common, [(header::CONTENT_TYPE, HeaderValue::from_static(a.content_type))], a.body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_nothing_from_outside_the_node() {
        for a in ASSETS {
            let text = std::str::from_utf8(a.body).expect("the dashboard files are UTF-8");
            for outside in ["http://", "https://", "//cdn", "@import", "fonts.g"] {
                assert!(!text.contains(outside), "{} mentions {outside:?}", a.name);
            }
        }
        let page = std::str::from_utf8(ASSETS[0].body).unwrap();
        assert!(page.contains("src=\"/dashboard/app.js\""));
        assert!(page.contains("href=\"/dashboard/style.css\""));
        assert!(!page.contains("<script>"), "no inline script: the CSP forbids it");
        assert!(!page.contains("style=\""), "no inline style: the CSP forbids it");
    }

    #[test]
    fn every_file_has_its_own_tag_and_the_tags_are_quoted() {
        let tags: Vec<&str> = (0..ASSETS.len()).map(etag).collect();
        for t in &tags {
            assert!(t.starts_with('"') && t.ends_with('"') && t.len() == 18, "{t}");
        }
        assert!(tags[0] != tags[1] && tags[1] != tags[2]);
    }
}
