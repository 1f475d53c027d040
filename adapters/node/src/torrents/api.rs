//! The session's routes on the node's HTTP API (see the module
//! [`super`]): `/torrents`, `/torrents/{infohash}` and its actions,
//! `/session`, and `/events` (server-sent events). Reads are open; writes
//! need the node's API token, exactly as `/add` does. Errors are
//! `{"error": "..."}` with a 4xx/5xx status.

use super::{Action, AddRequest, Given, Patch, Refusal, SessionHandle, SessionPatch};
use crate::rt;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rumor_core::bt::metainfo::InfoHash;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// A `: keepalive` comment this often on `/events`.
pub const KEEPALIVE: Duration = Duration::from_secs(15);

/// What the handlers share.
#[derive(Clone)]
pub struct TorrentApi {
    /// The session, if the node runs one (`--downloads`).
    pub session: Option<SessionHandle>,
    /// The node's API token for writes.
    pub token: Option<Arc<str>>,
    /// The node (for `/events` without a session: members and records).
    pub node: crate::node::NodeHandle,
    /// `/events` clients of a node without a session, at most
    /// [`super::EVENT_CLIENTS_MAX`].
    pub node_only_clients: Arc<std::sync::atomic::AtomicUsize>,
}

/// A refusal as JSON.
pub struct Error(StatusCode, Value);

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

fn err(status: StatusCode, msg: impl Into<String>) -> Error {
    Error(status, json!({ "error": msg.into() }))
}

impl From<Refusal> for Error {
    fn from(r: Refusal) -> Error {
        match r {
            Refusal::Bad(m) => err(StatusCode::BAD_REQUEST, m),
            Refusal::NotFound(m) => err(StatusCode::NOT_FOUND, m),
            Refusal::Exists(ih) => Error(
                StatusCode::CONFLICT,
                json!({ "error": format!("torrent {ih} is already in the session"), "infohash": ih.to_hex() }),
            ),
            Refusal::Gone => err(StatusCode::SERVICE_UNAVAILABLE, "the session is shutting down"),
        }
    }
}

/// The routes (merged into the node's router by [`crate::api::router`]).
pub fn router(state: TorrentApi) -> Router {
    Router::new()
        .route("/torrents", get(list).post(add))
        .route("/torrents/{infohash}", get(show).patch(patch).delete(remove))
        .route("/torrents/{infohash}/{action}", post(act))
        .route("/session", get(show_session).patch(patch_session))
        .route("/events", get(events))
        // Inside the node's 1 MiB default: the server already bounded
        // this body (`http::Limits::torrent_body_max_bytes`).
        .layer(axum::extract::DefaultBodyLimit::max(crate::http::TORRENT_BODY_MAX_BYTES))
        .with_state(state)
}

fn session(state: &TorrentApi) -> Result<&SessionHandle, Error> {
    state
        .session
        .as_ref()
        .ok_or_else(|| err(StatusCode::NOT_FOUND, "this node has no torrent session (start it with --downloads DIR)"))
}

fn write_access<'a>(state: &'a TorrentApi, headers: &HeaderMap) -> Result<&'a SessionHandle, Error> {
    let s = session(state)?;
    if !crate::api::token_ok(state.token.as_deref(), headers) {
        return Err(err(StatusCode::UNAUTHORIZED, crate::api::TOKEN_NEEDED));
    }
    Ok(s)
}

fn infohash(text: &str) -> Result<InfoHash, Error> {
    InfoHash::from_hex(text).ok_or_else(|| err(StatusCode::BAD_REQUEST, "an infohash is 40 hex digits"))
}

/// Options of `POST /torrents`, in the JSON body or the query.
#[derive(Deserialize, Default)]
struct AddOptions {
    torrent: Option<String>,
    magnet: Option<String>,
    infohash: Option<String>,
    #[serde(default)]
    paused: bool,
    download_limit: Option<u64>,
    upload_limit: Option<u64>,
    file_priorities: Option<Vec<u8>>,
}

/// Query options for a raw .torrent body (`?paused=true&download_limit=N`).
#[derive(Deserialize, Default)]
struct AddQuery {
    paused: Option<bool>,
    download_limit: Option<u64>,
    upload_limit: Option<u64>,
    /// Comma separated.
    file_priorities: Option<String>,
}

async fn add(
    State(state): State<TorrentApi>,
    headers: HeaderMap,
    Query(q): Query<AddQuery>,
    body: Bytes,
) -> Result<Response, Error> {
    let s = write_access(&state, &headers)?;
    let json_body = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json"))
        || body.first() == Some(&b'{');
    let req = if json_body {
        let o: AddOptions =
            serde_json::from_slice(&body).map_err(|e| err(StatusCode::BAD_REQUEST, format!("bad JSON body: {e}")))?;
        let source = match (o.torrent, o.magnet, o.infohash) {
            (Some(b64), None, None) => Given::Torrent(
                base64_decode(&b64).ok_or_else(|| err(StatusCode::BAD_REQUEST, "\"torrent\" is not base64"))?,
            ),
            (None, Some(m), None) => Given::Magnet(m),
            (None, None, Some(h)) => Given::InfoHash(h),
            _ => {
                let why = "give exactly one of \"torrent\" (base64), \"magnet\", \"infohash\"";
                return Err(err(StatusCode::BAD_REQUEST, why));
            }
        };
        AddRequest {
            source,
            paused: o.paused,
            download_limit: o.download_limit,
            upload_limit: o.upload_limit,
            file_priorities: o.file_priorities,
        }
    } else {
        let fp = match q.file_priorities {
            None => None,
            Some(t) => Some(
                t.split(',')
                    .map(|p| p.trim().parse::<u8>())
                    .collect::<Result<Vec<u8>, _>>()
                    .map_err(|_| err(StatusCode::BAD_REQUEST, "file_priorities: numbers separated by commas"))?,
            ),
        };
        AddRequest {
            source: Given::Torrent(body.to_vec()),
            paused: q.paused.unwrap_or(false),
            download_limit: q.download_limit,
            upload_limit: q.upload_limit,
            file_priorities: fp,
        }
    };
    let v = s.add(req).await?;
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

async fn list(State(state): State<TorrentApi>) -> Result<Json<Value>, Error> {
    Ok(Json(session(&state)?.list().await?))
}

async fn show(State(state): State<TorrentApi>, Path(ih): Path<String>) -> Result<Json<Value>, Error> {
    let s = session(&state)?;
    Ok(Json(s.get(infohash(&ih)?).await?))
}

async fn act(
    State(state): State<TorrentApi>,
    headers: HeaderMap,
    Path((ih, action)): Path<(String, String)>,
) -> Result<Json<Value>, Error> {
    let s = write_access(&state, &headers)?;
    let ih = infohash(&ih)?;
    let a = match action.as_str() {
        "pause" => Action::Pause,
        "resume" => Action::Resume,
        "recheck" => Action::Recheck,
        other => return Err(err(StatusCode::NOT_FOUND, format!("no action {other:?}: pause, resume or recheck"))),
    };
    Ok(Json(s.act(ih, a).await?))
}

/// A limit in a PATCH body: absent (unchanged), null (none) or a number.
fn limit(v: &Value, key: &str) -> Result<Option<Option<u64>>, Error> {
    match v.get(key) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(n) => n
            .as_u64()
            .map(|n| Some(Some(n)))
            .ok_or_else(|| err(StatusCode::BAD_REQUEST, format!("{key}: bytes per second, or null"))),
    }
}

async fn patch(
    State(state): State<TorrentApi>,
    headers: HeaderMap,
    Path(ih): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, Error> {
    let s = write_access(&state, &headers)?;
    let ih = infohash(&ih)?;
    let v: Value =
        serde_json::from_slice(&body).map_err(|e| err(StatusCode::BAD_REQUEST, format!("bad JSON body: {e}")))?;
    let file_priorities = match v.get("file_priorities") {
        None => None,
        Some(fp) => Some(
            serde_json::from_value::<Vec<u8>>(fp.clone())
                .map_err(|_| err(StatusCode::BAD_REQUEST, "file_priorities: a list of 0, 1 or 2"))?,
        ),
    };
    let p = Patch {
        download_limit: limit(&v, "download_limit")?,
        upload_limit: limit(&v, "upload_limit")?,
        file_priorities,
    };
    Ok(Json(s.patch(ih, p).await?))
}

async fn remove(
    State(state): State<TorrentApi>,
    headers: HeaderMap,
    Path(ih): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, Error> {
    let s = write_access(&state, &headers)?;
    let ih = infohash(&ih)?;
    let delete_data = q.get("delete_data").is_some_and(|v| v == "true" || v == "1");
    Ok(Json(s.remove(ih, delete_data).await?))
}

async fn show_session(State(state): State<TorrentApi>) -> Result<Json<Value>, Error> {
    Ok(Json(session(&state)?.session().await?))
}

async fn patch_session(State(state): State<TorrentApi>, headers: HeaderMap, body: Bytes) -> Result<Json<Value>, Error> {
    let s = write_access(&state, &headers)?;
    let v: Value =
        serde_json::from_slice(&body).map_err(|e| err(StatusCode::BAD_REQUEST, format!("bad JSON body: {e}")))?;
    let max_active = match v.get("max_active_downloads") {
        None => None,
        Some(n) => Some(
            n.as_u64()
                .map(|n| n as usize)
                .ok_or_else(|| err(StatusCode::BAD_REQUEST, "max_active_downloads: a number"))?,
        ),
    };
    let p = SessionPatch {
        download_limit: limit(&v, "download_limit")?,
        upload_limit: limit(&v, "upload_limit")?,
        max_active,
    };
    Ok(Json(s.patch_session(p).await?))
}

/// `GET /events`: `event: NAME\ndata: JSON\n\n` as the session sends them,
/// and a `: keepalive` comment every [`KEEPALIVE`].
async fn events(State(state): State<TorrentApi>) -> Result<Response, Error> {
    let Some(s) = state.session.as_ref() else { return node_only_events(&state) };
    let rx = s
        .subscribe()
        .await
        .ok_or_else(|| err(StatusCode::SERVICE_UNAVAILABLE, "too many /events clients; try again later"))?;
    let stream = futures::stream::unfold(rx, |rx| async move {
        use futures::FutureExt;
        let chunk = futures::select! {
            ev = rx.recv().fuse() => match ev {
                Ok((name, data)) => format!("event: {name}\ndata: {data}\n\n"),
                Err(_) => return None,
            },
            _ = rt::sleep(KEEPALIVE).fuse() => ": keepalive\n\n".to_string(),
        };
        Some((Ok::<_, std::convert::Infallible>(Bytes::from(chunk)), rx))
    });
    Ok(([(header::CONTENT_TYPE, "text/event-stream"), (header::CACHE_CONTROL, "no-cache")], Body::from_stream(stream))
        .into_response())
}

/// `/events` of a node without a torrent session: the cluster's
/// `members` and `records` events, polled once a second per client.
fn node_only_events(state: &TorrentApi) -> Result<Response, Error> {
    use std::sync::atomic::Ordering;
    /// Gives the client's slot back when its stream ends.
    struct Slot(Arc<std::sync::atomic::AtomicUsize>);
    impl Drop for Slot {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::Relaxed);
        }
    }
    let clients = state.node_only_clients.clone();
    if clients.fetch_add(1, Ordering::Relaxed) >= super::EVENT_CLIENTS_MAX {
        clients.fetch_sub(1, Ordering::Relaxed);
        return Err(err(StatusCode::SERVICE_UNAVAILABLE, "too many /events clients; try again later"));
    }
    struct Client {
        _slot: Slot,
        node: crate::node::NodeHandle,
        watch: super::NodeWatch,
        pending: std::collections::VecDeque<String>,
        quiet: Duration,
    }
    let client = Client {
        _slot: Slot(clients),
        node: state.node.clone(),
        watch: super::NodeWatch::default(),
        pending: Default::default(),
        quiet: Duration::ZERO,
    };
    let stream = futures::stream::unfold(client, |mut c| async move {
        loop {
            if let Some(chunk) = c.pending.pop_front() {
                return Some((Ok::<_, std::convert::Infallible>(Bytes::from(chunk)), c));
            }
            for (name, data) in c.watch.poll(&c.node).await {
                c.pending.push_back(format!("event: {name}\ndata: {data}\n\n"));
            }
            if c.pending.is_empty() {
                rt::sleep(Duration::from_secs(1)).await;
                c.quiet += Duration::from_secs(1);
                if c.quiet >= KEEPALIVE {
                    c.quiet = Duration::ZERO;
                    c.pending.push_back(": keepalive\n\n".to_string());
                }
            } else {
                c.quiet = Duration::ZERO;
            }
        }
    });
    Ok(([(header::CONTENT_TYPE, "text/event-stream"), (header::CACHE_CONTROL, "no-cache")], Body::from_stream(stream))
        .into_response())
}

/// Standard base64 (with or without padding; whitespace ignored).
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter(|c| !c.is_ascii_whitespace()) {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::base64_decode;

    #[test]
    fn base64_decodes_with_and_without_padding() {
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("aGVsbG8").unwrap(), b"hello");
        assert_eq!(base64_decode("ZDg6").unwrap(), b"d8:");
        assert!(base64_decode("not base64!").is_none());
    }
}
