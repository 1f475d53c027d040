//! The control API of a running client (axum): `GET /status`,
//! `GET /health`, `POST /pause`, `POST /resume`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use std::net::SocketAddr;
use tokio::sync::{mpsc, oneshot};

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
}

/// A request to the session.
#[derive(Debug)]
pub enum Command {
    /// Reply with a snapshot.
    Status(oneshot::Sender<Status>),
    /// Disconnect every peer and stop making connections.
    Pause,
    /// Undo [`Command::Pause`].
    Resume,
}

async fn status(State(tx): State<mpsc::Sender<Command>>) -> Result<Json<Status>, StatusCode> {
    let (rtx, rrx) = oneshot::channel();
    tx.send(Command::Status(rtx)).await.map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
    rrx.await.map(Json).map_err(|_| StatusCode::SERVICE_UNAVAILABLE)
}

async fn pause(State(tx): State<mpsc::Sender<Command>>) -> StatusCode {
    match tx.send(Command::Pause).await {
        Ok(()) => StatusCode::NO_CONTENT,
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

async fn resume(State(tx): State<mpsc::Sender<Command>>) -> StatusCode {
    match tx.send(Command::Resume).await {
        Ok(()) => StatusCode::NO_CONTENT,
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// Binds `addr` and serves the API, sending commands to `tx`.
pub async fn serve(addr: SocketAddr, tx: mpsc::Sender<Command>) -> std::io::Result<()> {
    let app = Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route("/status", get(status))
        .route("/pause", post(pause))
        .route("/resume", post(resume))
        .with_state(tx);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!("control API stopped: {e}");
        }
    });
    Ok(())
}
