//! The BitTorrent client: `rumor create`, `rumor get`, `rumor seed`.

use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

/// `rumor create PATH --announce URL -o FILE.torrent`.
#[derive(Args, Debug)]
pub struct CreateArgs {
    /// The file or folder to share.
    pub path: PathBuf,
}

/// `rumor get FILE.torrent -o DIR`.
#[derive(Args, Debug)]
pub struct GetArgs {
    /// The torrent.
    pub torrent: PathBuf,
}

/// `rumor seed FILE.torrent DIR`.
#[derive(Args, Debug)]
pub struct SeedArgs {
    /// The torrent.
    pub torrent: PathBuf,
}

/// Runs `rumor create`.
pub fn create(_args: CreateArgs) -> ExitCode {
    eprintln!("rumor create: not yet");
    ExitCode::FAILURE
}

/// Runs `rumor get`.
pub fn get(_args: GetArgs) -> ExitCode {
    eprintln!("rumor get: not yet");
    ExitCode::FAILURE
}

/// Runs `rumor seed`.
pub fn seed(_args: SeedArgs) -> ExitCode {
    eprintln!("rumor seed: not yet");
    ExitCode::FAILURE
}
