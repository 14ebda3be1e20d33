//! Allowances: how often one key (a client address, a member) may do one kind of thing. A
//! [`Quota`] is a burst and a pace, the generic cell rate algorithm (GCRA): `burst` actions
//! at once, then one more every `every`.
//!
//! On sled one process serves the chat, so [`LocalAllowances`] counts in its memory with
//! `governor`: a restart forgets the counts, which only ever loosens a limit, and keys that
//! have their whole allowance back are dropped now and then, so memory stays bounded. On
//! PostgreSQL the same algorithm runs in the database (see `postgres`), so that instances
//! count together.

use std::{
    collections::HashMap,
    num::NonZeroU32,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use governor::{
    clock::{Clock, DefaultClock},
    DefaultKeyedRateLimiter,
};

/// How often the counts are swept of keys that have their whole allowance back.
pub(super) const SWEEP_EVERY: u64 = 4096;

/// One kind of action's allowance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quota {
    /// What is counted; keys of different quotas never mix.
    pub name: &'static str,
    /// How many may come at once.
    pub burst: u32,
    /// How soon one more is allowed after the burst is spent.
    pub every: Duration,
}

impl Quota {
    /// `per_minute` a minute, all of them at once if need be.
    pub fn per_minute(name: &'static str, per_minute: u32) -> Quota {
        let per_minute = per_minute.max(1);
        Quota {
            name,
            burst: per_minute,
            every: Duration::from_secs(60) / per_minute,
        }
    }

    /// The pace, never zero.
    pub(super) fn pace(&self) -> Duration {
        self.every.max(Duration::from_millis(1))
    }

    /// How far ahead of now a key's next allowed time may run and still allow one more.
    pub(super) fn tolerance(&self) -> Duration {
        self.pace() * self.burst.saturating_sub(1)
    }

    fn governed(&self) -> governor::Quota {
        let burst = NonZeroU32::new(self.burst).unwrap_or(NonZeroU32::MIN);
        governor::Quota::with_period(self.pace())
            .unwrap_or_else(|| unreachable!("the pace is never zero"))
            .allow_burst(burst)
    }
}

/// Allowances counted in this process's memory.
#[derive(Default)]
pub(super) struct LocalAllowances {
    limiters: Mutex<HashMap<&'static str, Arc<DefaultKeyedRateLimiter<String>>>>,
    taken: AtomicU64,
}

impl LocalAllowances {
    pub(super) fn take(&self, quota: &Quota, key: &str) -> Result<(), Duration> {
        if self.taken.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.sweep();
        }
        let limiter = Arc::clone(
            self.limiters
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .entry(quota.name)
                .or_insert_with(|| Arc::new(governor::RateLimiter::keyed(quota.governed()))),
        );
        limiter
            .check_key(&key.to_owned())
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Forgets the keys that have their whole allowance back.
    fn sweep(&self) {
        let limiters = self
            .limiters
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for limiter in limiters.values() {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    #[cfg(test)]
    fn keys(&self) -> usize {
        let limiters = self.limiters.lock().unwrap();
        limiters.values().map(|limiter| limiter.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_a_burst_then_a_wait_and_other_keys_unaffected() {
        let allowances = LocalAllowances::default();
        let quota = Quota {
            name: "tries",
            burst: 3,
            every: Duration::from_secs(60),
        };
        for _ in 0..3 {
            assert_eq!(allowances.take(&quota, "203.0.113.7"), Ok(()));
        }
        let wait = allowances.take(&quota, "203.0.113.7").unwrap_err();
        assert!(
            wait > Duration::from_secs(50) && wait <= Duration::from_secs(60),
            "{wait:?}"
        );
        assert_eq!(allowances.take(&quota, "198.51.100.1"), Ok(()));
        let other = Quota {
            name: "other",
            ..quota.clone()
        };
        assert_eq!(allowances.take(&other, "203.0.113.7"), Ok(()));
    }

    #[test]
    fn test_keys_with_their_allowance_back_are_forgotten() {
        let allowances = LocalAllowances::default();
        let quick = Quota {
            name: "quick",
            burst: 1,
            every: Duration::from_millis(1),
        };
        for n in 0..SWEEP_EVERY - 1 {
            allowances.take(&quick, &n.to_string()).unwrap();
        }
        assert_eq!(allowances.keys(), (SWEEP_EVERY - 1) as usize);
        std::thread::sleep(Duration::from_millis(5));
        allowances.take(&quick, "one more").unwrap();
        assert!(allowances.keys() <= 1, "{} keys kept", allowances.keys());
    }

    #[test]
    fn test_per_minute_spreads_the_minute() {
        let quota = Quota::per_minute("lines", 30);
        assert_eq!((quota.burst, quota.every), (30, Duration::from_secs(2)));
        assert_eq!(quota.tolerance(), Duration::from_secs(58));
    }
}
