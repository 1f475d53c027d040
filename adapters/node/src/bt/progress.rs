//! What `get` and `seed` show while they run: the progress bar (or, with
//! `--quiet` or no terminal, a status line every few seconds), the rates
//! it shows, and [`LogWriter`], a log writer that prints around the bar
//! instead of into the middle of it.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Rates are measured over about this long.
const RATE_WINDOW: Duration = Duration::from_secs(5);
/// Samples kept for the rates (two a second, with room to spare).
const SAMPLES_MAX: usize = 32;
/// Without a bar, a status line this often.
const LINE_EVERY: Duration = Duration::from_secs(5);

/// The bar on screen, if any: log lines are printed around it.
static ACTIVE: Mutex<Option<indicatif::ProgressBar>> = Mutex::new(None);

fn active() -> Option<indicatif::ProgressBar> {
    ACTIVE.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// The bar and the rates of one torrent.
pub struct Progress {
    bar: indicatif::ProgressBar,
    name: String,
    quiet: bool,
    started: Instant,
    start_verified: u64,
    /// (when, verified bytes, uploaded bytes), oldest first; the oldest is
    /// the start of the rate window.
    samples: VecDeque<(Instant, u64, u64)>,
    last_line: Instant,
}

impl Progress {
    /// A bar for `total` bytes of which `verified` are already there
    /// (hidden with `quiet`).
    pub fn new(name: &str, total: u64, verified: u64, quiet: bool) -> Progress {
        let bar = if quiet {
            indicatif::ProgressBar::hidden()
        } else {
            let b = indicatif::ProgressBar::new(total);
            b.set_style(
                indicatif::ProgressStyle::with_template("{prefix} {bar:30} {percent:>3}% {bytes}/{total_bytes} {msg}")
                    .expect("a valid template"),
            );
            b.set_prefix(name.to_string());
            b.set_position(verified);
            b
        };
        if !bar.is_hidden() {
            *ACTIVE.lock().unwrap_or_else(|p| p.into_inner()) = Some(bar.clone());
        }
        let now = Instant::now();
        Progress {
            bar,
            name: name.to_string(),
            quiet,
            started: now,
            start_verified: verified,
            samples: VecDeque::from([(now, verified, 0)]),
            last_line: now,
        }
    }

    /// Prints a line without tearing the bar.
    pub fn say(&self, line: &str) {
        self.bar.suspend(|| eprintln!("{line}"));
    }

    /// Verified bytes now.
    pub fn set_position(&self, verified: u64) {
        self.bar.set_position(verified);
    }

    /// Since the start.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Verified bytes at the start.
    pub fn start_verified(&self) -> u64 {
        self.start_verified
    }

    /// Records the totals now; samples older than the window go.
    pub fn sample(&mut self, verified: u64, uploaded: u64) {
        let now = Instant::now();
        self.samples.push_back((now, verified, uploaded));
        while self.samples.len() > SAMPLES_MAX
            || (self.samples.len() > 1 && now.duration_since(self.samples[0].0) > RATE_WINDOW)
        {
            self.samples.pop_front();
        }
    }

    /// (verified bytes/s, uploaded bytes/s): what came since the start of
    /// the window (at most [`RATE_WINDOW`] ago, or the start of the run)
    /// over the time since, with today's totals, so a download of a
    /// second shows its real rate rather than a stale or empty sample.
    pub fn rates(&self, verified: u64, uploaded: u64) -> (u64, u64) {
        let Some(&(t0, v0, u0)) = self.samples.front() else {
            return (0, 0);
        };
        let dt = t0.elapsed().as_secs_f64();
        if dt < 0.05 {
            return (0, 0);
        }
        ((verified.saturating_sub(v0) as f64 / dt) as u64, (uploaded.saturating_sub(u0) as f64 / dt) as u64)
    }

    /// Shows `msg` on the bar, or (quiet, or no terminal) as a line every
    /// few seconds.
    pub fn show(&mut self, state: &str, progress: f64, msg: String) {
        if self.quiet || self.bar.is_hidden() {
            let now = Instant::now();
            if now.duration_since(self.last_line) >= LINE_EVERY {
                self.last_line = now;
                eprintln!("{}: {state} {:.1}% {msg}", self.name, progress * 100.0);
            }
        } else {
            self.bar.set_message(msg);
        }
    }

    /// Takes the bar off the screen.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
        *ACTIVE.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// A `tracing` writer to stderr that lifts the progress bar (if one is
/// shown) while a log line is printed, so lines never land in the middle
/// of it. `cli.rs`'s `init_logging` gives it to the subscriber for every
/// command (with no bar on screen it is plain stderr).
#[derive(Clone, Copy, Debug, Default)]
pub struct LogWriter;

/// One log record, printed whole when dropped.
pub struct LogLine(Vec<u8>);

impl Write for LogLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        let line = std::mem::take(&mut self.0);
        let print = move || {
            let _ = std::io::stderr().write_all(&line);
        };
        match active() {
            Some(bar) => bar.suspend(print),
            None => print(),
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogLine;
    fn make_writer(&'a self) -> LogLine {
        LogLine(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fast_download_shows_its_real_rate() {
        let mut p = Progress::new("t", 10 << 20, 0, true);
        std::thread::sleep(Duration::from_millis(200));
        // 10 MiB in about 0.2 s, before any sample: about 50 MiB/s.
        let (down, _) = p.rates(10 << 20, 0);
        assert!(down > 20 << 20 && down < 60 << 20, "{down}");
        p.sample(10 << 20, 0);
        let (down, _) = p.rates(10 << 20, 0);
        assert!(down > 20 << 20, "{down}");
    }
}
