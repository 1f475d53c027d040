//! The control API of a running client (axum): `GET /status`,
//! `GET /health`, `POST /pause`, `POST /resume`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;

/// What a snapshot of the session shows.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    /// The torrent's name.
    pub name: String,
    /// The infohash, hex.
    pub info_hash: String,
    /// `checking`, `downloading`, `seeding`, `paused` or `stopping`.
    pub state: &'static str,
    /// Verified fraction, 0 to 1.
    pub progress: f64,
    /// Verified bytes.
    pub bytes_done: u64,
    /// Content bytes.
    pub bytes_total: u64,
    /// Unique verified bytes per second, recently.
    pub download_rate: u64,
    /// Payload bytes sent per second, recently.
    pub upload_rate: u64,
    /// Connections.
    pub peers_connected: usize,
    /// Addresses we know of.
    pub peers_known: usize,
    /// Seconds to completion at the current rate (null when unknown).
    pub eta_secs: Option<u64>,
    /// Total payload received and kept.
    pub downloaded: u64,
    /// Total payload sent.
    pub uploaded: u64,
    /// Payload received and thrown away.
    pub wasted: u64,
    /// Pieces that passed their hash check since start.
    pub pieces_verified: u64,
    /// Pieces that failed their hash check since start.
    pub pieces_failed: u64,
}

/// A request to the session.
#[derive(Debug)]
pub enum Command {
    /// Reply with a snapshot (a channel of one: the client's one channel
    /// crate serves for replies too).
    Status(async_channel::Sender<Status>),
    /// Disconnect every peer and stop making connections.
    Pause,
    /// Undo [`Command::Pause`].
    Resume,
    /// Close every peer, announce `stopped` and end the download (the
    /// node's session removing or stopping a torrent).
    Stop,
    /// Per piece: 0 skip, 1 normal, 2 high (the session's file selection).
    SetPiecePriorities(Vec<u8>),
}

async fn status(State(tx): State<async_channel::Sender<Command>>) -> Result<Json<Status>, StatusCode> {
    let (rtx, rrx) = async_channel::bounded(1);
    tx.send(Command::Status(rtx)).await.map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
    rrx.recv().await.map(Json).map_err(|_| StatusCode::SERVICE_UNAVAILABLE)
}

/// `GET /metrics`: the client's counters in Prometheus text format.
async fn metrics(
    State(tx): State<async_channel::Sender<Command>>,
) -> Result<([(axum::http::HeaderName, &'static str); 1], String), StatusCode> {
    let (rtx, rrx) = async_channel::bounded(1);
    tx.send(Command::Status(rtx)).await.map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
    let s = rrx.recv().await.map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
    let label = format!("infohash=\"{}\"", s.info_hash);
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, lines: &[(&str, String)]| {
        out.push_str(&format!("# HELP rumor_bt_{name} {help}\n# TYPE rumor_bt_{name} {kind}\n"));
        for (extra, v) in lines {
            let labels = if extra.is_empty() { label.clone() } else { format!("{label},{extra}") };
            out.push_str(&format!("rumor_bt_{name}{{{labels}}} {v}\n"));
        }
    };
    metric(
        "payload_bytes_total",
        "counter",
        "Payload bytes, by direction (down counts unique verified bytes kept).",
        &[("direction=\"down\"", s.downloaded.to_string()), ("direction=\"up\"", s.uploaded.to_string())],
    );
    metric("wasted_bytes_total", "counter", "Payload received and thrown away.", &[("", s.wasted.to_string())]);
    metric(
        "rate_bytes_per_second",
        "gauge",
        "Recent rates, by direction.",
        &[("direction=\"down\"", s.download_rate.to_string()), ("direction=\"up\"", s.upload_rate.to_string())],
    );
    metric(
        "peers",
        "gauge",
        "Peers connected and known.",
        &[("state=\"connected\"", s.peers_connected.to_string()), ("state=\"known\"", s.peers_known.to_string())],
    );
    metric(
        "pieces_total",
        "counter",
        "Pieces hash-checked since start, by result.",
        &[("result=\"verified\"", s.pieces_verified.to_string()), ("result=\"failed\"", s.pieces_failed.to_string())],
    );
    metric("progress_ratio", "gauge", "Verified bytes over total bytes.", &[("", s.progress.to_string())]);
    Ok(([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], out))
}

async fn pause(State(tx): State<async_channel::Sender<Command>>) -> StatusCode {
    match tx.send(Command::Pause).await {
        Ok(()) => StatusCode::NO_CONTENT,
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

async fn resume(State(tx): State<async_channel::Sender<Command>>) -> StatusCode {
    match tx.send(Command::Resume).await {
        Ok(()) => StatusCode::NO_CONTENT,
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// Serves the API on `listener` (bound early, see [`super::session`]),
/// sending commands to `tx`.
pub fn serve(listener: Box<dyn crate::rt::TcpListener>, tx: async_channel::Sender<Command>) {
    let app = Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/pause", post(pause))
        .route("/resume", post(resume))
        .with_state(tx);
    // Never fired: the control API lives as long as the process.
    let (forever, shutdown) = crate::rt::Shutdown::new();
    crate::rt::spawn(async move {
        let _keep = forever;
        crate::http::serve(listener, app, shutdown).await;
    });
}
