//! The worker that takes queued fan-outs from the store and sends them: at most
//! `max_fan_outs` at once, each given back as done once every recipient's push service
//! answered. One that is not done when its server stops is taken again (on PostgreSQL at
//! once, by another instance): members who got it already get it twice, and pages drop
//! the copy by its id. Waiting fan-outs are on disk, not in memory, however many queue up.
//!
//! It takes no batch for a saturated push-service origin (see `origins`): a hung origin
//! holds at most `max_in_flight_per_origin / FAN_OUT_BATCH + 1` of the `max_fan_outs`
//! slots, and its other batches wait in the queue until its pushes are answered. When
//! every waiting batch is for a saturated origin, the worker sleeps until one of that
//! origin's pushes finishes, a fan-out is queued, or [`FAN_OUT_POLL`] passes.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::{delivery::Delivery, origins::OriginPush};
use crate::{
    model::{clock::now_millis, subscription::Subscription},
    store::{TakenFanOut, FAN_OUT_POLL},
};

impl Delivery {
    /// Starts taking queued fan-outs from the store and delivering them, until `stop` is
    /// cancelled; [`Delivery::drain`] then waits for the ones taken.
    pub fn start(self: &Arc<Self>, stop: CancellationToken) {
        let delivery = Arc::clone(self);
        self.running.spawn(delivery.take_fan_outs(stop));
    }

    /// Once `stop` is cancelled, the queue is emptied first when `finish_queue_on_stop`
    /// (nobody else would send what the last requests queued); else the other instances
    /// take what is left, and this one takes no more.
    async fn take_fan_outs(self: Arc<Self>, stop: CancellationToken) {
        let slots = Arc::new(Semaphore::new(self.settings.max_fan_outs));
        let stopped = || stop.is_cancelled();
        loop {
            let draining = stopped() && self.settings.finish_queue_on_stop;
            if stopped() && !draining {
                return;
            }
            let slot = tokio::select! {
                _ = stop.cancelled(), if !draining => continue,
                slot = Arc::clone(&slots).acquire_owned() => slot,
            };
            let Ok(slot) = slot else {
                return; // The semaphore is never closed.
            };
            let held_back = self.origins.saturated();
            let taken = tokio::select! {
                _ = stop.cancelled(), if !draining => continue,
                taken = self.queue.take_fan_out(&held_back) => taken,
            };
            let idle: Pin<Box<dyn Future<Output = ()> + Send + '_>> = match taken {
                Ok(Some(mut fan_out)) => {
                    // Admitted before the next take, so that it already counts the
                    // batch's pushes against their origin.
                    let recipients = std::mem::take(&mut fan_out.fan_out.recipients);
                    let admitted = self.origins.admit(recipients);
                    let delivery = Arc::clone(&self);
                    self.running.spawn(async move {
                        delivery.send_taken(fan_out, admitted).await;
                        drop(slot);
                    });
                    continue;
                }
                Ok(None) if draining && held_back.is_empty() => return,
                Ok(None) if held_back.is_empty() => self.queue.fan_out_queued(),
                // What is left may be for the origins held back: waiting for them, not
                // looking again and again.
                Ok(None) => Box::pin(async {
                    tokio::select! {
                        _ = self.queue.fan_out_queued() => {}
                        _ = self.origins.unsaturated() => {}
                    }
                }),
                Err(error) if draining => {
                    tracing::error!(error = %error, "cannot take a queued fan-out; it waits for the next start");
                    return;
                }
                Err(error) => {
                    tracing::error!(error = %error, "cannot take a queued fan-out; trying again");
                    Box::pin(tokio::time::sleep(FAN_OUT_POLL))
                }
            };
            // Stopping wakes it up to drain, or to return.
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = idle => {}
            }
        }
    }

    /// Sends a taken batch, whose recipients are `admitted`.
    async fn send_taken(
        self: &Arc<Self>,
        taken: TakenFanOut,
        admitted: Vec<(Subscription, OriginPush)>,
    ) {
        let waited = now_millis().saturating_sub(taken.queued_at);
        let queued = Instant::now()
            .checked_sub(Duration::from_millis(waited))
            .unwrap_or_else(Instant::now);
        let report = self
            .push_to_all(&taken.fan_out.message, admitted, queued)
            .await;
        if let Err(error) = taken.done().await {
            tracing::error!(error = %error, "could not mark a fan-out as sent; it will go again");
        }
        // Counted once it left the queue: a fan-out `/metrics` counts is not sent again.
        self.record(&report);
    }

    /// Waits up to `deadline` for the fan-outs taken so far to finish (cancel the `stop`
    /// given to [`Delivery::start`] first).
    pub async fn drain(&self, deadline: Duration) -> bool {
        self.running.close();
        tokio::time::timeout(deadline, self.running.wait())
            .await
            .is_ok()
    }
}
