//! Stale browsers pruned. A push service keeps a subscription long after its browser
//! stopped connecting (Mozilla's answers 410 only after 60 days; others keep it longer),
//! and its 201 only says a push was queued, for an offline browser too: delivery is no
//! sign of life. A browser's own requests are: every call its page makes as a member (see
//! [`Chat::authenticate`]) and its worker's report that pushes arrive
//! ([`Chat::alive`], at most once a day). Each is recorded in the store, but only when the
//! stored one is older than [`SEEN_EVERY`] (or the browser was warned), so a busy page
//! costs a write every few hours, not one per request.
//!
//! Every [`PRUNE_EVERY`] the server looks at every browser: one silent for longer than
//! `--stale-after` gets one push ([`PushMessage::Stale`]) saying on which day it will be
//! removed unless the chat is opened; one still silent [`STALE_GRACE`] after that warning
//! is removed through the one way out ([`Chat::end`]), so the others are told when a
//! member's last browser goes. A sign of life after the warning clears it. Which browser
//! is in which state is [`staleness`], a plain function of the device and the time.
//!
//! [`PushMessage::Stale`]: app::wire::PushMessage::Stale

use std::{sync::Arc, time::Duration};

use app::wire::MemberCredentials;

use super::{Chat, ChatError, Departure};
use crate::model::{fan_out::FanOut, member::Device, subscription::Subscription};

/// How long a warned browser has to show a sign of life before it is removed: a week,
/// so that someone away for the weekend, or whose phone was off for a few days, still
/// finds the warning (it waits at the push service as long) and keeps the chat.
pub const STALE_GRACE: Duration = Duration::from_secs(7 * 24 * 3600);

/// A sign of life is written only when the stored one is older than this: six hours is
/// fine enough to measure silences counted in weeks, and costs a page in use four writes
/// a day at most.
pub const SEEN_EVERY: Duration = Duration::from_secs(6 * 3600);

/// How often the server looks for stale browsers: a warning or removal comes at most an
/// hour after it is due.
pub const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// `--stale-after`'s default in days: Mozilla's push service gives up on a browser that has
/// not connected for 60 days (410), so a Firefox browser silent that long is gone anyway;
/// pruning holds browsers on other push services (which keep subscriptions longer, and
/// answer 201 for them) to the same rule, and never removes a browser earlier than Mozilla
/// would.
pub const DEFAULT_STALE_AFTER_DAYS: u64 = 60;

/// Where a browser stands, as pruning sees it at a moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Staleness {
    /// It showed a sign of life within `--stale-after`.
    Alive,
    /// Silent for longer: it gets its warning.
    Warn,
    /// Warned, and its grace has not run out.
    Warned,
    /// Warned [`STALE_GRACE`] ago or more, and silent since: it is removed.
    Remove,
}

/// Where `device` stands at `now` when browsers silent for longer than `stale_after` are
/// pruned.
pub fn staleness(device: &Device, now: u64, stale_after: Duration) -> Staleness {
    match device.stale_warned {
        Some(warned) if now.saturating_sub(warned) >= millis(STALE_GRACE) => Staleness::Remove,
        Some(_) => Staleness::Warned,
        None if now.saturating_sub(device.last_seen) > millis(stale_after) => Staleness::Warn,
        None => Staleness::Alive,
    }
}

/// Whether a sign of life of `device` at `now` is worth a write (see the module's header).
pub fn worth_recording(device: &Device, now: u64) -> bool {
    device.stale_warned.is_some() || now.saturating_sub(device.last_seen) >= millis(SEEN_EVERY)
}

fn millis(duration: Duration) -> u64 {
    duration.as_millis() as u64
}

/// What one round of pruning did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    /// The warnings it queued, one per newly stale browser.
    pub warned: Vec<FanOut>,
    /// What removing the browsers whose grace ran out queued (see [`Chat::end`]).
    pub removed: Vec<FanOut>,
}

impl Chat {
    /// The service worker says its browser receives the chat's pushes (`POST
    /// /api/alive`): a sign of life, recorded as any member's call is.
    pub async fn alive(&self, request: MemberCredentials) -> Result<(), ChatError> {
        self.authenticate(&request).await.map(drop)
    }

    /// Records a sign of life of `device`'s browser, if it is worth a write.
    pub(super) async fn note_alive(&self, device: &Device) -> Result<(), ChatError> {
        let now = self.now();
        if worth_recording(device, now) {
            self.store
                .mark_seen(&device.subscription.endpoint, now)
                .await?;
        }
        Ok(())
    }

    /// One round of pruning (see the module's header): warns the browsers that became
    /// stale, removes those whose grace ran out. Nothing when pruning is off.
    pub async fn prune_stale(&self) -> Result<Pruned, ChatError> {
        let Some(stale_after) = self.rules.stale_after else {
            return Ok(Pruned::default());
        };
        let now = self.now();
        let mut pruned = Pruned::default();
        let mut expired: Vec<Subscription> = Vec::new();
        for device in self.store.devices().await? {
            match staleness(&device, now, stale_after) {
                Staleness::Alive | Staleness::Warned => {}
                Staleness::Warn => {
                    let endpoint = device.subscription.endpoint;
                    let silent_since = now.saturating_sub(millis(stale_after));
                    // Another instance, or a sign of life, may have come first.
                    if self.store.mark_warned(&endpoint, silent_since, now).await? {
                        let remove_at = now + millis(STALE_GRACE);
                        tracing::info!(name = %device.name, "a silent browser is warned");
                        let warning = FanOut::stale_warning(remove_at, endpoint);
                        pruned.warned.push(self.queue(warning).await?);
                    }
                }
                Staleness::Remove => expired.push(device.subscription),
            }
        }
        if !expired.is_empty() {
            pruned.removed = self.end(&expired, Departure::Stale).await?;
        }
        Ok(pruned)
    }
}

/// Prunes `chat` every [`PRUNE_EVERY`], from now on, for as long as the server runs. A
/// round that fails is logged and tried again at the next.
pub async fn prune_periodically(chat: Arc<Chat>) {
    let mut rounds = tokio::time::interval(PRUNE_EVERY);
    rounds.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        rounds.tick().await;
        if let Err(error) = chat.prune_stale().await {
            tracing::error!(error = ?error, "could not prune stale browsers");
        }
    }
}

#[cfg(test)]
mod tests;
