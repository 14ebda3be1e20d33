//! Rate limits: how many actions one key (a member) may take in a minute. A sliding
//! window per key, in memory: a restart forgets it, which only ever loosens a limit.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
    time::{Duration, Instant},
};

const WINDOW: Duration = Duration::from_secs(60);

pub struct RateLimiter {
    per_minute: usize,
    recent: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl RateLimiter {
    pub fn new(per_minute: u32) -> Self {
        RateLimiter {
            per_minute: per_minute as usize,
            recent: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one action by `key` at `now`, or says how long `key` must wait when it has
    /// used its allowance for the last minute (the refused action is not counted).
    pub fn take(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let mut recent = self
            .recent
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let times = recent.entry(key.to_owned()).or_default();
        while times
            .front()
            .is_some_and(|&at| now.duration_since(at) >= WINDOW)
        {
            times.pop_front();
        }
        if times.len() >= self.per_minute {
            let oldest = times.front().copied().unwrap_or(now);
            return Err(WINDOW.saturating_sub(now.duration_since(oldest)));
        }
        times.push_back(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_the_allowance_refills_as_the_minute_slides() {
        let limiter = RateLimiter::new(2);
        let start = Instant::now();
        assert_eq!(limiter.take("ann", start), Ok(()));
        assert_eq!(limiter.take("ann", start + Duration::from_secs(10)), Ok(()));
        assert_eq!(
            limiter.take("ann", start + Duration::from_secs(20)),
            Err(Duration::from_secs(40))
        );
        // Others have their own allowance.
        assert_eq!(limiter.take("bo", start + Duration::from_secs(20)), Ok(()));
        // A minute after the first line, one more fits, and the refusal was not counted.
        assert_eq!(limiter.take("ann", start + Duration::from_secs(60)), Ok(()));
        assert!(limiter
            .take("ann", start + Duration::from_secs(61))
            .is_err());
    }
}
