//! The one way out: whatever ends a membership (leaving, the operator's remove or ban, a
//! push service's 404/410, a new VAPID key, a browser's long silence) goes through [`Chat::end`], which removes the
//! browsers (the store voids the device codes of members left without one), tells the
//! others who left, one push per batch of names that fits the budget, and gives a member
//! the operator removed one last push on each of its browsers.

use app::{
    budget::payload_excess,
    wire::{MemberCredentials, PushMessage},
};

use super::PushKind;
use super::{Chat, ChatError};
use crate::model::{fan_out::FanOut, member::Removal, subscription::Subscription};

/// Why a membership, or one browser of it, ends (see [`Chat::end`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Departure {
    /// The member left from this browser.
    Left,
    /// The operator removed the member, and may have banned its name.
    Removed(Removal),
    /// Its push service no longer knows the subscription (404 or 410), or the server's
    /// VAPID key, to which every subscription is bound, was replaced.
    Gone,
    /// The browser stayed silent past its warning (see `pruning`).
    Stale,
}

impl Chat {
    /// A browser leaves: it is deleted. When it was the member's last, the others are
    /// told the member left; the member's other browsers stay in.
    pub async fn unsubscribe(&self, request: MemberCredentials) -> Result<Vec<FanOut>, ChatError> {
        let device = self.authenticate(&request).await?;
        self.end(&[device.subscription], Departure::Left).await
    }

    /// The operator lets a banned name join again.
    pub async fn unban(&self, name: &str) -> Result<(), ChatError> {
        if !self.store.unban(name).await? {
            return Err(ChatError::NotBanned(name.to_owned()));
        }
        Ok(())
    }

    /// The operator removes the member called `name` (or one whose name looks like it),
    /// and may ban the name: its browsers are told, then the others.
    pub async fn remove_named(&self, name: &str, ban: bool) -> Result<Vec<FanOut>, ChatError> {
        let devices = self.store.devices_of(name).await?;
        let Some(first) = devices.first() else {
            return Err(ChatError::NoSuchMember(name.to_owned()));
        };
        let name = first.name.clone();
        if ban {
            // First, so that nobody slips in under the name while its browsers go.
            self.store.ban(&name).await?;
        }
        tracing::info!(%name, ban, "member removed by the operator");
        let subscriptions: Vec<Subscription> = devices
            .into_iter()
            .map(|device| device.subscription)
            .collect();
        let removal = Removal {
            name,
            banned: ban,
            at: self.now(),
        };
        self.end(&subscriptions, Departure::Removed(removal)).await
    }

    /// Push services said these subscriptions are gone (404 or 410): their browsers leave.
    pub async fn subscriptions_gone(
        &self,
        gone: &[Subscription],
    ) -> Result<Vec<FanOut>, ChatError> {
        self.end(gone, Departure::Gone).await
    }

    /// The server's VAPID key was replaced: every subscription was bound to the old one,
    /// so every browser leaves. Returns how many members there were.
    pub async fn every_subscription_voided(&self) -> Result<usize, ChatError> {
        let devices = self.store.devices().await?;
        let subscriptions: Vec<Subscription> = devices
            .into_iter()
            .map(|device| device.subscription)
            .collect();
        let removed = self.store.member_count().await?;
        self.end(&subscriptions, Departure::Gone).await?;
        Ok(removed)
    }

    /// The one way out (see the module's header). Returns what it queued.
    pub async fn end(
        &self,
        subscriptions: &[Subscription],
        departure: Departure,
    ) -> Result<Vec<FanOut>, ChatError> {
        let removal = match &departure {
            Departure::Removed(removal) => Some(removal),
            Departure::Left | Departure::Gone | Departure::Stale => None,
        };
        let removed = self.store.remove_devices(subscriptions, removal).await?;
        let mut queued = Vec::new();
        if let Some(removal) = removal {
            let own = removed
                .iter()
                .map(|removed| removed.device.subscription.clone())
                .collect();
            queued.push(self.queue(FanOut::removed(removal.banned, own)).await?);
        }
        let mut left: Vec<String> = removed
            .into_iter()
            .filter(|removed| removed.member_left)
            .map(|removed| removed.device.name)
            .collect();
        if !left.is_empty() {
            tracing::info!(names = ?left, ?departure, "members left");
        }
        left.sort_by_cached_key(|name| app::names::sort_key(name));
        left.dedup();
        let pushes = in_pushes(left);
        if pushes.is_empty() {
            return Ok(queued);
        }
        // Read once: every "left" push goes to the same members, those who remain.
        let remaining = self.recipients(PushKind::Other).await?;
        for names in pushes {
            let told = self.queue(FanOut::left(names, remaining.clone())).await?;
            if !told.recipients().is_empty() {
                queued.push(told);
            }
        }
        Ok(queued)
    }
}

/// The names of members who left, in as few "left" pushes as fit the push budget.
pub(super) fn in_pushes(names: Vec<String>) -> Vec<Vec<String>> {
    let fits = |names: &[String]| {
        let message = PushMessage::Left {
            names: names.to_vec(),
        };
        payload_excess(&message).is_none()
    };
    let mut pushes = vec![Vec::new()];
    for name in names {
        let last = pushes.last_mut().expect("there is always a last push");
        last.push(name);
        if last.len() > 1 && !fits(last) {
            let name = last.pop().expect("a name was just pushed");
            pushes.push(vec![name]);
        }
    }
    pushes.retain(|names| !names.is_empty());
    pushes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_many_names_that_left_are_told_in_as_few_pushes_as_fit() {
        let names: Vec<String> = (0..300).map(|n| format!("member number {n:03}")).collect();
        let pushes = in_pushes(names.clone());
        assert!(
            pushes.len() > 1 && pushes.len() < 10,
            "{} pushes",
            pushes.len()
        );
        for names in &pushes {
            let message = PushMessage::Left {
                names: names.clone(),
            };
            assert_eq!(payload_excess(&message), None);
        }
        assert_eq!(pushes.concat(), names);
        assert!(in_pushes(Vec::new()).is_empty());
    }
}
