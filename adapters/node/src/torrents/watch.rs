//! The watch folder (`--watch DIR`): a `.torrent` file dropped there is
//! added to the session, then renamed `NAME.torrent.added` (also when the
//! session already had it), or `NAME.torrent.invalid` when it is not a
//! usable torrent. The folder is looked at every [`SCAN`]; a file is
//! taken only once its size has stayed the same for one scan, so one that
//! is still being written is not read half-way.

use super::{AddRequest, Given, Refusal, SessionHandle};
use crate::rt;
use rumor_core::bt::metainfo::Limits;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How often the folder is read.
pub const SCAN: Duration = Duration::from_secs(1);
/// Files looked at per scan (the rest wait for the next one).
pub const FILES_PER_SCAN_MAX: usize = 256;

/// Watches `dir` until `shutdown`.
pub async fn run(dir: PathBuf, session: SessionHandle, shutdown: rt::Shutdown) {
    use futures::FutureExt;
    // Sizes seen at the last scan, for files not taken yet.
    let mut seen: BTreeMap<PathBuf, u64> = BTreeMap::new();
    loop {
        futures::select! {
            _ = shutdown.wait().fuse() => return,
            _ = rt::sleep(SCAN).fuse() => {}
        }
        let d = dir.clone();
        let Ok(found) = rt::spawn_blocking(move || list(&d)).await else { continue };
        seen.retain(|p, _| found.iter().any(|(q, _)| q == p));
        for (path, size) in found {
            if seen.insert(path.clone(), size) != Some(size) {
                continue;
            }
            seen.remove(&path);
            take(&path, &session).await;
        }
    }
}

/// `.torrent` files in `dir` with their sizes.
fn list(dir: &Path) -> Vec<(PathBuf, u64)> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    rd.filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.ends_with(".torrent")))
        .filter_map(|e| Some((e.path(), e.metadata().ok()?.len())))
        .take(FILES_PER_SCAN_MAX)
        .collect()
}

async fn take(path: &Path, session: &SessionHandle) {
    let too_big = Limits::default().torrent_bytes_max as u64;
    let bytes = match std::fs::metadata(path) {
        Ok(m) if m.len() > too_big => Err(format!("larger than {too_big} bytes")),
        Ok(_) => std::fs::read(path).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let result = match bytes {
        Err(e) => Err(e),
        Ok(bytes) => {
            let req = AddRequest {
                source: Given::Torrent(bytes),
                paused: false,
                download_limit: None,
                upload_limit: None,
                file_priorities: None,
            };
            match session.add(req).await {
                Ok(_) | Err(Refusal::Exists(_)) => Ok(()),
                Err(Refusal::Bad(why)) | Err(Refusal::NotFound(why)) => Err(why),
                Err(Refusal::Gone) => return,
            }
        }
    };
    let suffix = if result.is_ok() { "added" } else { "invalid" };
    match &result {
        Ok(()) => tracing::info!("watch: added {}", path.display()),
        Err(why) => tracing::warn!("watch: {}: {why}", path.display()),
    }
    let mut to = path.as_os_str().to_owned();
    to.push(".");
    to.push(suffix);
    if let Err(e) = std::fs::rename(path, &to) {
        tracing::warn!("watch: cannot rename {}: {e}", path.display());
    }
}
