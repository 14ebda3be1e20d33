//! Time as the chat keeps it: milliseconds since the Unix epoch, read from a [`Clock`] so
//! that the rules can be tested at any moment (a mute's last minute, a code's expiry).

use std::time::{SystemTime, UNIX_EPOCH};

/// Where the chat's rules read the time.
pub trait Clock: Send + Sync {
    /// Now, in milliseconds since the Unix epoch.
    fn now_millis(&self) -> u64;
}

/// The machine's clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_millis(&self) -> u64 {
        now_millis()
    }
}

/// Now, in milliseconds since the Unix epoch (0 on a clock set before 1970).
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// A clock a test sets by hand; it starts at the machine's time.
#[cfg(any(test, feature = "testing"))]
#[derive(Debug)]
pub struct ManualClock(std::sync::atomic::AtomicU64);

#[cfg(any(test, feature = "testing"))]
impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(any(test, feature = "testing"))]
impl ManualClock {
    pub fn new() -> Self {
        ManualClock(now_millis().into())
    }

    /// Sets the time to `millis` since the Unix epoch.
    pub fn set(&self, millis: u64) {
        self.0.store(millis, std::sync::atomic::Ordering::Relaxed);
    }
}

#[cfg(any(test, feature = "testing"))]
impl Clock for ManualClock {
    fn now_millis(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}
