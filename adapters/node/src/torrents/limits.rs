//! Rate limits as token buckets: one per direction for the whole session
//! (`--max-download-rate`, `--max-upload-rate`, `PATCH /session`) and one
//! per direction per torrent (`PATCH /torrents/{infohash}`).
//!
//! A torrent's loop asks its [`Gate`] before it takes more bytes from its
//! peers (download) or reads more blocks to send (upload); bytes taken are
//! charged to both buckets, which may go below zero by one read (a
//! connection's read is at most 64 KiB, a block 16 KiB). While a bucket is
//! below zero the loop stops reading its peers' events: their connection
//! tasks then wait, the sockets' buffers fill and TCP slows the senders,
//! so no byte is dropped. The bucket holds at most [`BURST`] of its rate,
//! so a pause in traffic cannot be followed by more than that much of a
//! burst: over a long download the measured rate is the limit.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Most credit a bucket saves while idle, as a share of one second of its
/// rate (a tenth of a second), and never less than [`BURST_MIN_BYTES`].
pub const BURST: f64 = 0.1;
/// Least credit a bucket may save, so a low limit still passes one read.
pub const BURST_MIN_BYTES: f64 = 64.0 * 1024.0;

/// One direction's limit: `rate` bytes per second, or none.
#[derive(Debug)]
pub struct Bucket {
    rate: Option<u64>,
    tokens: f64,
    at: Instant,
    /// Bytes charged since start (for the measured rates).
    taken: u64,
}

impl Bucket {
    /// A bucket with `rate` bytes/s (`None`: unlimited), full.
    pub fn new(rate: Option<u64>) -> Bucket {
        let mut b = Bucket { rate: None, tokens: 0.0, at: Instant::now(), taken: 0 };
        b.set_rate(rate);
        b.tokens = b.rate.map_or(0.0, Self::burst);
        b
    }

    fn burst(rate: u64) -> f64 {
        (rate as f64 * BURST).max(BURST_MIN_BYTES)
    }

    /// Changes the rate (0 counts as none); the saved credit is kept
    /// within the new burst.
    pub fn set_rate(&mut self, rate: Option<u64>) {
        self.refill(Instant::now());
        self.rate = rate.filter(|r| *r > 0);
        if let Some(r) = self.rate {
            self.tokens = self.tokens.min(Self::burst(r));
        } else {
            self.tokens = 0.0;
        }
    }

    /// The rate, bytes/s.
    pub fn rate(&self) -> Option<u64> {
        self.rate
    }

    /// Bytes charged since the bucket was made.
    pub fn taken(&self) -> u64 {
        self.taken
    }

    fn refill(&mut self, now: Instant) {
        if let Some(r) = self.rate {
            let dt = now.saturating_duration_since(self.at).as_secs_f64();
            self.tokens = (self.tokens + dt * r as f64).min(Self::burst(r));
        }
        self.at = now;
    }

    /// Charges `bytes` (the credit may go below zero).
    pub fn take(&mut self, bytes: usize, now: Instant) {
        self.refill(now);
        self.taken += bytes as u64;
        if self.rate.is_some() {
            self.tokens -= bytes as f64;
        }
    }

    /// When the credit is back to zero, if it is below zero now.
    pub fn ready_at(&mut self, now: Instant) -> Option<Instant> {
        self.refill(now);
        let r = self.rate?;
        (self.tokens < 0.0).then(|| now + Duration::from_secs_f64(-self.tokens / r as f64))
    }
}

/// A bucket shared between the session and the torrents' loops.
pub type Shared = Arc<Mutex<Bucket>>;

/// A new shared bucket.
pub fn shared(rate: Option<u64>) -> Shared {
    Arc::new(Mutex::new(Bucket::new(rate)))
}

/// The buckets one torrent's traffic is charged to: the session's and its own.
#[derive(Clone, Debug)]
pub struct Gate {
    /// Download: the session's, then the torrent's.
    pub down: [Shared; 2],
    /// Upload: the session's, then the torrent's.
    pub up: [Shared; 2],
}

fn charge(buckets: &[Shared; 2], bytes: usize) {
    let now = Instant::now();
    for b in buckets {
        b.lock().expect("no panic while held").take(bytes, now);
    }
}

fn ready_at(buckets: &[Shared; 2]) -> Option<Instant> {
    let now = Instant::now();
    buckets.iter().filter_map(|b| b.lock().expect("no panic while held").ready_at(now)).max()
}

impl Gate {
    /// Charges `bytes` received from peers.
    pub fn downloaded(&self, bytes: usize) {
        charge(&self.down, bytes);
    }

    /// Charges `bytes` about to be sent to peers.
    pub fn uploaded(&self, bytes: usize) {
        charge(&self.up, bytes);
    }

    /// `Some(t)`: take nothing more from peers before `t`.
    pub fn download_wait(&self) -> Option<Instant> {
        ready_at(&self.down)
    }

    /// `Some(t)`: send nothing more before `t`.
    pub fn upload_wait(&self) -> Option<Instant> {
        ready_at(&self.up)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unlimited_bucket_never_makes_anyone_wait() {
        let mut b = Bucket::new(None);
        let now = Instant::now();
        b.take(1 << 30, now);
        assert_eq!(b.ready_at(now), None);
        assert_eq!(b.taken(), 1 << 30);
    }

    #[test]
    fn a_bucket_in_debt_says_when_the_debt_is_paid_at_its_rate() {
        let mut b = Bucket::new(Some(1 << 20));
        let now = b.at;
        // A full bucket holds a tenth of a second: 104,857 bytes.
        b.take(100_000, now);
        assert_eq!(b.ready_at(now), None);
        b.take((1 << 20) / 2 + 4_857, now);
        let at = b.ready_at(now).expect("in debt");
        let wait = at - now;
        assert!((wait.as_secs_f64() - 0.5).abs() < 0.01, "{wait:?}");
        assert_eq!(b.ready_at(at + Duration::from_millis(1)), None);
    }

    #[test]
    fn idle_time_saves_no_more_than_the_burst() {
        let mut b = Bucket::new(Some(1_000_000));
        let now = b.at + Duration::from_secs(100);
        b.take(100_000, now);
        assert_eq!(b.ready_at(now), None);
        b.take(1, now);
        assert!(b.ready_at(now).is_some(), "a hundred idle seconds saved only a tenth of one");
    }

    #[test]
    fn over_a_long_run_the_bytes_taken_follow_the_rate() {
        // A reader that takes 64 KiB whenever the bucket lets it.
        let mut b = Bucket::new(Some(4 << 20));
        let start = b.at;
        let mut now = start;
        let mut got = 0u64;
        while now < start + Duration::from_secs(10) {
            match b.ready_at(now) {
                Some(t) => now = t,
                None => {
                    b.take(65_536, now);
                    got += 65_536;
                }
            }
        }
        let rate = got as f64 / 10.0;
        assert!((rate / (4 << 20) as f64 - 1.0).abs() < 0.02, "{rate}");
    }

    #[test]
    fn a_lower_rate_takes_effect_at_once_and_zero_means_none() {
        let mut b = Bucket::new(Some(10 << 20));
        b.set_rate(Some(100_000));
        let now = Instant::now();
        b.take(200_000, now);
        assert!(b.ready_at(now).is_some());
        b.set_rate(Some(0));
        assert_eq!(b.rate(), None);
        assert_eq!(b.ready_at(now), None);
    }
}
