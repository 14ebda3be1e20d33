//! Each push-service origin's share of delivery, so that one that hangs holds only its
//! own: at most `max_in_flight_per_origin` pushes to one origin hold a slot at once (a
//! push takes its origin's permit before a global one), and an origin with that many
//! pushes pending (holding a permit, waiting for one, or waiting to retry) is
//! [`saturated`](OriginLimits::saturated): the worker takes none of its queued batches
//! until one of its pushes finishes, which [`OriginLimits::unsaturated`] announces.
//!
//! Only origins with a push pending have an entry: the last push to finish takes its
//! origin's entry away, so the map holds the few push services in use, never one entry
//! per origin ever seen.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard,
    },
};

use tokio::sync::{Notify, Semaphore, SemaphorePermit};

use crate::model::{fan_out::push_origin, subscription::Subscription};

/// Every origin's share, shared by all fan-outs of one [`Delivery`](super::Delivery).
pub(super) struct OriginLimits {
    shared: Arc<Shared>,
}

struct Shared {
    per_origin: usize,
    /// Origins with a push pending, by [`push_origin`].
    origins: Mutex<HashMap<Arc<str>, Arc<Origin>>>,
    /// A saturated origin's push finished: what the worker waits for when every queued
    /// batch it could take is for a saturated origin.
    unsaturated: Notify,
}

/// One origin's permits and pending pushes.
struct Origin {
    name: Arc<str>,
    permits: Semaphore,
    /// Pushes to it not finished; changed only through [`OriginPush`]. Counted up under
    /// the map's lock, so an entry whose count is 0 under the lock is nobody's.
    pending: AtomicUsize,
}

/// One push's place in its origin's share, from when it is admitted until it finishes
/// (dropped).
pub(super) struct OriginPush {
    shared: Arc<Shared>,
    origin: Arc<Origin>,
}

impl OriginLimits {
    /// Shares of `per_origin` in-flight pushes each.
    pub(super) fn new(per_origin: usize) -> Self {
        OriginLimits {
            shared: Arc::new(Shared {
                per_origin,
                origins: Mutex::default(),
                unsaturated: Notify::new(),
            }),
        }
    }

    /// A place for each of `recipients`, in its own origin's share, counted pending at
    /// once: the next [`saturated`](Self::saturated) already sees them.
    pub(super) fn admit(&self, recipients: Vec<Subscription>) -> Vec<(Subscription, OriginPush)> {
        let mut origins = self.shared.lock();
        // A batch is one origin's (see `FanOut::batches`): one lookup serves it all.
        let mut last: Option<Arc<Origin>> = None;
        recipients
            .into_iter()
            .map(|recipient| {
                let origin = match last.take() {
                    Some(origin) if origin.holds(&recipient.endpoint) => origin,
                    _ => Arc::clone(
                        origins
                            .entry(push_origin(&recipient.endpoint).into())
                            .or_insert_with_key(|name| {
                                Arc::new(Origin {
                                    name: Arc::clone(name),
                                    permits: Semaphore::new(self.shared.per_origin),
                                    pending: AtomicUsize::new(0),
                                })
                            }),
                    ),
                };
                origin.pending.fetch_add(1, Ordering::Relaxed);
                last = Some(Arc::clone(&origin));
                let push = OriginPush {
                    shared: Arc::clone(&self.shared),
                    origin,
                };
                (recipient, push)
            })
            .collect()
    }

    /// The origins with as many pushes pending as their share, or more.
    pub(super) fn saturated(&self) -> Vec<String> {
        self.shared
            .lock()
            .values()
            .filter(|origin| origin.pending.load(Ordering::Relaxed) >= self.shared.per_origin)
            .map(|origin| origin.name.to_string())
            .collect()
    }

    /// Resolves once a push to a saturated origin finished since the last time it did
    /// (at once if one did meanwhile): one waiter, the worker.
    pub(super) async fn unsaturated(&self) {
        self.shared.unsaturated.notified().await;
    }

    /// How many origins have an entry (for tests: idle ones must not).
    #[cfg(test)]
    fn entries(&self) -> usize {
        self.shared.lock().len()
    }
}

impl Origin {
    /// Whether `endpoint` is of this origin, without parsing it when it starts with the
    /// origin and a `/` (as every endpoint of a batch does: `push_origin` leaves a
    /// default port out, and an endpoint written with it is parsed).
    fn holds(&self, endpoint: &str) -> bool {
        let origin_then_path = endpoint
            .strip_prefix(&*self.name)
            .is_some_and(|path| path.starts_with('/'));
        origin_then_path || *push_origin(endpoint) == *self.name
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, Arc<Origin>>> {
        self.origins
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl OriginPush {
    /// The origin (see `push_origin`): the VAPID audience of its pushes.
    pub(super) fn name(&self) -> &str {
        &self.origin.name
    }

    /// Waits for one of the origin's permits; held while the push is being sent.
    pub(super) async fn permit(&self) -> Option<SemaphorePermit<'_>> {
        self.origin.permits.acquire().await.ok()
    }
}

impl Drop for OriginPush {
    fn drop(&mut self) {
        let before = self.origin.pending.fetch_sub(1, Ordering::Relaxed);
        if before == self.shared.per_origin {
            self.shared.unsaturated.notify_one();
        }
        if before == 1 {
            let mut origins = self.shared.lock();
            // Another push may have been admitted since; it counted up under the lock.
            if self.origin.pending.load(Ordering::Relaxed) == 0 {
                origins.remove(&self.origin.name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(endpoint: &str) -> Subscription {
        Subscription {
            endpoint: endpoint.into(),
            p256dh: "key".into(),
            auth: "auth".into(),
        }
    }

    fn to(origin: &str, count: usize) -> Vec<Subscription> {
        (0..count).map(|n| at(&format!("{origin}/{n}"))).collect()
    }

    #[test]
    fn test_an_origin_is_saturated_at_its_share_and_only_it() {
        let limits = OriginLimits::new(3);
        let hung = limits.admit(to("https://hung.example", 3));
        let fine = limits.admit(to("https://fine.example:8443", 2));
        assert_eq!(limits.saturated(), ["https://hung.example"]);
        drop(fine);
        let mut hung = hung;
        hung.pop();
        assert!(limits.saturated().is_empty());
    }

    #[test]
    fn test_an_idle_origin_leaves_the_map() {
        let limits = OriginLimits::new(2);
        let first = limits.admit(to("https://a.example", 1));
        let second = limits.admit(to("https://a.example", 1));
        let other = limits.admit(to("https://b.example", 1));
        assert_eq!(limits.entries(), 2);
        drop(first);
        drop(other);
        assert_eq!(limits.entries(), 1, "a.example still has a push pending");
        drop(second);
        assert_eq!(limits.entries(), 0);
    }

    #[test]
    fn test_each_recipient_of_a_mixed_batch_is_counted_in_its_own_origin() {
        let limits = OriginLimits::new(3);
        let mixed = [
            "https://a.example/1",
            "https://a.example:443/2",
            "https://b.example/3",
            "https://a.example.evil/4",
            "https://a.example/5",
        ];
        let pushes = limits.admit(mixed.iter().map(|endpoint| at(endpoint)).collect());
        let names: Vec<&str> = pushes.iter().map(|(_, push)| push.name()).collect();
        assert_eq!(
            names,
            [
                "https://a.example",
                "https://a.example",
                "https://b.example",
                "https://a.example.evil",
                "https://a.example"
            ]
        );
        assert_eq!(limits.saturated(), ["https://a.example"]);
    }

    #[tokio::test]
    async fn test_a_push_finishing_for_a_saturated_origin_wakes_the_worker() {
        let limits = OriginLimits::new(2);
        let mut pushes = limits.admit(to("https://a.example", 2));
        pushes.pop();
        // Announced before anyone waits: the wait that follows returns at once.
        limits.unsaturated().await;
    }

    #[tokio::test]
    async fn test_an_origin_gives_no_more_permits_than_its_share() {
        let limits = OriginLimits::new(2);
        let pushes = limits.admit(to("https://a.example", 3));
        let first = pushes[0].1.permit().await.unwrap();
        let _second = pushes[1].1.permit().await.unwrap();
        assert_eq!(pushes[2].1.origin.permits.available_permits(), 0);
        drop(first);
        assert!(pushes[2].1.permit().await.is_some());
    }
}
