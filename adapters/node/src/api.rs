//! The HTTP API on port 6969: the original system's `/add`, `/del`,
//! `/list`, a REST form for every record type, and health.
//!
//! Bodies are read as JSON whatever the Content-Type says, because the
//! original examples post with curl's default form type. Every refusal is
//! a JSON object `{"error": "..."}` with a 4xx status, and changes nothing.

use crate::node::{Command, NodeHandle, WriteError, WriteReport};
use crate::records::{self, AddRequest, DeleteRequest, RecordRequest, RecordView};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::channel::oneshot;
use rumor_core::dns::{Name, RType};
use rumor_core::member::WriteError as Refusal;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use std::sync::Arc;

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// The node.
    pub node: NodeHandle,
    /// Bearer token required for writes, if set.
    pub token: Option<Arc<str>>,
    /// Token `/announce` requires as its `token` parameter, if set.
    pub tracker_token: Option<Arc<str>>,
    /// Wall clock.
    pub clock: crate::clock::Clock,
    /// The UDP thread, asked for its counters.
    pub udp_control: std::sync::mpsc::Sender<crate::dns_udp::Control>,
    /// The torrent session (`--downloads`), if any.
    pub torrents: Option<crate::torrents::SessionHandle>,
}

/// An API failure: status and message.
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

fn gone() -> ApiError {
    ApiError(StatusCode::SERVICE_UNAVAILABLE, "the node is shutting down".into())
}

/// The router.
pub fn router(state: ApiState) -> Router {
    let torrents = crate::torrents::api::router(crate::torrents::api::TorrentApi {
        session: state.torrents.clone(),
        token: state.token.clone(),
        node: state.node.clone(),
        node_only_clients: Default::default(),
    });
    Router::new()
        .route("/add", post(add))
        .route("/del", post(del))
        .route("/delete", post(del))
        .route("/list", get(list))
        .route("/records", get(list).post(put_record))
        .route("/records/{name}", get(list_name).delete(delete_name))
        .route("/records/{name}/{rtype}", axum::routing::delete(delete_rrset))
        .route("/health", get(health))
        .route("/members", get(members))
        .route("/metrics", get(metrics))
        .route("/announce", get(announce))
        .route("/scrape", get(scrape))
        .route("/providers/{infohash}", get(providers))
        .with_state(state)
        .merge(torrents)
        .merge(crate::dashboard::router())
        .fallback(no_such_path)
        .method_not_allowed_fallback(no_such_method)
        .layer(DefaultBodyLimit::max(crate::http::BODY_MAX_BYTES))
}

/// An unknown path: a JSON refusal like every other (axum's own is an
/// empty 404).
async fn no_such_path(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, format!("no such path: {method} {}", uri.path()))
}

/// A known path asked with a method it does not take; axum still adds the
/// `Allow` header that lists the ones it does.
async fn no_such_method(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError(StatusCode::METHOD_NOT_ALLOWED, format!("{} does not take {method}", uri.path()))
}

/// What a write without the right token is told.
pub(crate) const TOKEN_NEEDED: &str = "this node needs 'Authorization: Bearer <token>' for writes";

fn authorize(state: &ApiState, headers: &HeaderMap) -> Result<(), ApiError> {
    if token_ok(state.token.as_deref(), headers) {
        Ok(())
    } else {
        Err(ApiError(StatusCode::UNAUTHORIZED, TOKEN_NEEDED.into()))
    }
}

/// True if no token is required or `headers` carry it (compared in
/// constant time).
pub(crate) fn token_ok(token: Option<&str>, headers: &HeaderMap) -> bool {
    let Some(token) = token else {
        return true;
    };
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    use subtle::ConstantTimeEq;
    bool::from(given.as_bytes().ct_eq(token.as_bytes()))
}

fn parse_json<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| bad(format!("bad JSON body: {e}")))
}

async fn write(
    state: &ApiState,
    cmd: impl FnOnce(crate::node::WriteReply) -> Command,
) -> Result<WriteReport, ApiError> {
    let (tx, rx) = oneshot::channel();
    if !state.node.send(cmd(tx)).await {
        return Err(gone());
    }
    match rx.await.map_err(|_| gone())? {
        Ok(report) => Ok(report),
        Err(WriteError::Refused(Refusal::Conflict(m))) => Err(ApiError(StatusCode::CONFLICT, m)),
        Err(WriteError::Refused(Refusal::Refused(m))) => Err(ApiError(StatusCode::UNPROCESSABLE_ENTITY, m)),
        // The disk did not take it (full, failing): nothing changed.
        Err(WriteError::Storage(m) | WriteError::Refused(Refusal::Storage(m))) => {
            Err(ApiError(StatusCode::INSUFFICIENT_STORAGE, m))
        }
    }
}

/// `POST /add {"name","ips","ttl"}`, or an array of such objects.
async fn add(State(state): State<ApiState>, headers: HeaderMap, body: Bytes) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let value: Value = parse_json(&body)?;
    let requests: Vec<AddRequest> = match value {
        Value::Array(items) => {
            if items.len() > records::BATCH_MAX {
                return Err(bad(format!("at most {} records per request", records::BATCH_MAX)));
            }
            serde_json::from_value(Value::Array(items)).map_err(|e| bad(format!("bad record: {e}")))?
        }
        one => vec![serde_json::from_value(one).map_err(|e| bad(format!("bad record: {e}")))?],
    };
    let now_ms = state.clock.wall_ms();
    let mut puts = Vec::new();
    let mut removes = Vec::new();
    for (i, req) in requests.iter().enumerate() {
        let (p, r) = records::add_request(req, now_ms).map_err(|e| {
            if requests.len() > 1 {
                bad(format!("record {i}: {}", e.0))
            } else {
                bad(e.0)
            }
        })?;
        puts.extend(p);
        removes.extend(r);
    }
    let report = write(&state, |reply| Command::Write { puts, removes, reply }).await?;
    Ok(Json(json!({ "ok": true, "written": report })))
}

/// `POST /del {"name"}` (and `/delete`): removes the name's records, or
/// only one type with `"type"`.
async fn del(State(state): State<ApiState>, headers: HeaderMap, body: Bytes) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let req: DeleteRequest = parse_json(&body)?;
    let name = records::parse_name(&req.name).map_err(|e| bad(e.0))?;
    delete(state, name, req.rtype.as_deref()).await
}

async fn delete(state: ApiState, name: Name, rtype: Option<&str>) -> Result<Json<Value>, ApiError> {
    let shown = records::display_name(&name);
    let report = match rtype {
        Some(t) => {
            let rtype = RType::from_mnemonic(t).ok_or_else(|| bad(format!("unknown record type {t:?}")))?;
            write(&state, |reply| Command::Write { puts: Vec::new(), removes: vec![(name, rtype)], reply }).await?
        }
        None => write(&state, |reply| Command::DeleteName { name, reply }).await?,
    };
    if report.removed == 0 {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("no records for {shown}")));
    }
    Ok(Json(json!({ "ok": true, "removed": report.removed })))
}

/// `POST /records {"name","type","ttl","data":[...]}`: replaces one RRset.
async fn put_record(State(state): State<ApiState>, headers: HeaderMap, body: Bytes) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let req: RecordRequest = parse_json(&body)?;
    let set = records::record_request(&req, state.clock.wall_ms()).map_err(|e| bad(e.0))?;
    let report = write(&state, |reply| Command::Write { puts: vec![set], removes: Vec::new(), reply }).await?;
    Ok(Json(json!({ "ok": true, "written": report })))
}

async fn delete_name(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let name = records::parse_name(&name).map_err(|e| bad(e.0))?;
    delete(state, name, None).await
}

async fn delete_rrset(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path((name, rtype)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let name = records::parse_name(&name).map_err(|e| bad(e.0))?;
    delete(state, name, Some(&rtype)).await
}

async fn fetch(state: &ApiState, name: Option<Name>) -> Result<Vec<RecordView>, ApiError> {
    let (tx, rx) = oneshot::channel();
    if !state.node.send(Command::List { name, reply: tx }).await {
        return Err(gone());
    }
    let (sets, now_ms) = rx.await.map_err(|_| gone())?;
    Ok(sets.iter().map(|s| RecordView::of(s, now_ms)).collect())
}

/// `GET /list`: every live RRset with its remaining TTL.
async fn list(State(state): State<ApiState>) -> Result<Json<Vec<RecordView>>, ApiError> {
    fetch(&state, None).await.map(Json)
}

async fn list_name(State(state): State<ApiState>, Path(name): Path<String>) -> Result<Json<Vec<RecordView>>, ApiError> {
    let name = records::parse_name(&name).map_err(|e| bad(e.0))?;
    let shown = records::display_name(&name);
    let sets = fetch(&state, Some(name)).await?;
    if sets.is_empty() {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("no records for {shown}")));
    }
    Ok(Json(sets))
}

/// The node's counters with the UDP thread's merged in.
async fn stats(state: &ApiState) -> Result<crate::node::NodeStats, ApiError> {
    let (tx, rx) = oneshot::channel();
    if !state.node.send(Command::Stats { reply: tx }).await {
        return Err(gone());
    }
    let mut stats = rx.await.map_err(|_| gone())?;
    let (tx, rx) = oneshot::channel();
    if state.udp_control.send(crate::dns_udp::Control::Stats(tx)).is_ok() {
        if let Ok(Ok(udp)) = crate::rt::timeout(std::time::Duration::from_secs(1), rx).await {
            stats.merge_udp(&udp);
        }
    }
    Ok(stats)
}

/// `GET /health`: 200 with a summary while the node runs.
async fn health(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let stats = stats(&state).await?;
    Ok(Json(json!({ "status": "ok", "stats": stats })))
}

/// `GET /metrics`: the counters in Prometheus text format.
async fn metrics(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let stats = stats(&state).await?;
    let mut body = crate::metrics::render(&stats);
    if let Some(t) = &state.torrents {
        body.push_str(&t.metrics().await);
    }
    Ok(([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response())
}

/// `GET /members`: the cluster as this node sees it.
async fn members(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let (tx, rx) = oneshot::channel();
    if !state.node.send(Command::Members { reply: tx }).await {
        return Err(gone());
    }
    let members = rx.await.map_err(|_| gone())?;
    Ok(Json(json!({ "members": members })))
}

/// A tracker answer: BEP 3 bodies are bencoded and come with 200 even for
/// a failure.
fn bencoded(body: Vec<u8>) -> Response {
    ([(axum::http::header::CONTENT_TYPE, "text/plain")], body).into_response()
}

/// `GET /announce`: a BitTorrent HTTP tracker (BEP 3, compact peers per
/// BEP 23) backed by the overlay, so a peer announcing to any node is found
/// by peers announcing to any other.
async fn announce(
    State(state): State<ApiState>,
    axum::Extension(crate::http::PeerAddr(peer)): axum::Extension<crate::http::PeerAddr>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    if let Some(want) = &state.tracker_token {
        use subtle::ConstantTimeEq;
        // The announce URL handed to clients carries it: .../announce?token=T
        let given = query.as_deref().unwrap_or("").split('&').find_map(|p| p.strip_prefix("token="));
        let given = given.and_then(rumor_core::bt::tracker::percent_decode).unwrap_or_default();
        if !bool::from(given.as_slice().ct_eq(want.as_bytes())) {
            let why = "this tracker needs its token: announce to /announce?token=<tracker token>";
            return bencoded(rumor_core::bt::tracker::encode_failure(why));
        }
    }
    let req = match rumor_core::bt::tracker::AnnounceRequest::from_query(query.as_deref().unwrap_or("")) {
        Ok(r) => r,
        Err(e) => return bencoded(rumor_core::bt::tracker::encode_failure(&format!("bad announce: {e}"))),
    };
    let (tx, rx) = oneshot::channel();
    if !state.node.send(Command::Announce { req, from: peer.ip(), reply: tx }).await {
        return gone().into_response();
    }
    match rx.await {
        Ok(body) => bencoded(body),
        Err(_) => gone().into_response(),
    }
}

/// `GET /scrape?info_hash=...`: seeders, leechers and completed downloads.
async fn scrape(State(state): State<ApiState>, axum::extract::RawQuery(query): axum::extract::RawQuery) -> Response {
    let hashes = match rumor_core::bt::tracker::parse_scrape_query(query.as_deref().unwrap_or("")) {
        Ok(h) => h,
        Err(e) => return bencoded(rumor_core::bt::tracker::encode_failure(&format!("bad scrape: {e}"))),
    };
    let (tx, rx) = oneshot::channel();
    if !state.node.send(Command::Scrape { hashes, reply: tx }).await {
        return gone().into_response();
    }
    match rx.await {
        Ok(body) => bencoded(body),
        Err(_) => gone().into_response(),
    }
}

/// `GET /providers/INFOHASH`: the overlay's providers of a torrent, JSON.
async fn providers(State(state): State<ApiState>, Path(ih): Path<String>) -> Result<Json<Value>, ApiError> {
    let ih = rumor_core::bt::metainfo::InfoHash::from_hex(&ih).ok_or_else(|| bad("an infohash is 40 hex digits"))?;
    let (tx, rx) = oneshot::channel();
    if !state.node.send(Command::Providers { ih, reply: tx }).await {
        return Err(gone());
    }
    let (list, now_ms) = rx.await.map_err(|_| gone())?;
    let list: Vec<Value> = list
        .iter()
        .map(|p| {
            json!({
                "addr": p.addr.to_string(),
                "peer_id": p.peer_id.map(hex::encode),
                "seeder": p.seeder,
                "age_ms": now_ms.saturating_sub(p.announced_ms),
                "expires_in_ms": p.expires_ms.saturating_sub(now_ms),
            })
        })
        .collect();
    Ok(Json(json!({ "infohash": ih.to_hex(), "providers": list })))
}
