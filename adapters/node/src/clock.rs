//! The one place where real time becomes core time.

use rumor_core::time::{Instant, UnixMillis};
use std::time::{SystemTime, UNIX_EPOCH};

/// Turns the process's monotonic clock into core [`Instant`]s and reads the
/// wall clock as Unix milliseconds.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    origin: std::time::Instant,
}

impl Clock {
    /// A clock whose core origin is now.
    pub fn new() -> Self {
        Clock { origin: std::time::Instant::now() }
    }

    /// Monotonic core time.
    pub fn now(&self) -> Instant {
        Instant::from_micros(self.origin.elapsed().as_micros() as u64)
    }

    /// The core instant as a std instant, for runtime timers.
    pub fn std_instant(self, at: Instant) -> std::time::Instant {
        self.origin + std::time::Duration::from_micros(at.as_micros())
    }

    /// Both clocks at once, as the gossip machine takes them.
    pub fn both(&self) -> rumor_core::gossip::Now {
        rumor_core::gossip::Now { at: self.now(), wall_ms: self.wall_ms() }
    }

    /// Wall-clock time, Unix milliseconds.
    pub fn wall_ms(&self) -> UnixMillis {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}
