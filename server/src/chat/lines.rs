//! What members say and hear: a chat line from a member, a notice from the operator, and
//! a member muting chat lines for an hour.

use app::{
    budget::{chat_line_excess, payload_excess},
    wire::{ChatLine, MuteRequest, PostLineRequest, PushMessage},
};

use super::{check_text, limits::Limits, Chat, ChatError, PushKind, MUTE_FOR};
use crate::{
    model::fan_out::{FanOut, ResolvedFanOut},
    store::NewLine,
};

impl Chat {
    /// A member speaks: the line is stored under the member's stored name and goes to
    /// everyone, the sender's other open pages included.
    pub async fn post_line(
        &self,
        request: PostLineRequest,
    ) -> Result<(ChatLine, FanOut), ChatError> {
        let member = self.authenticate(&request.member).await?;
        check_text(&request.msg)?;
        if let Some(excess) = chat_line_excess(&member.name, &request.msg) {
            return Err(ChatError::MessageTooLong(excess));
        }
        self.allow(&self.lines, &member.member_id).await?;
        let recipients = self.recipients(PushKind::ChatLine).await?;
        let line = NewLine {
            name: &member.name,
            msg: &request.msg,
            time: self.now(),
        };
        Ok(self
            .store
            .append_line(line, self.rules.history_limit, &recipients)
            .await?)
    }

    /// A notice from the operator, to the member called `to` or to everyone. It is not
    /// part of the history, nor queued: the caller sends it at once.
    pub async fn notice(&self, to: Option<&str>, text: &str) -> Result<ResolvedFanOut, ChatError> {
        let text = text.trim();
        check_text(text)?;
        let message = PushMessage::Notice { text: text.into() };
        if let Some(excess) = payload_excess(&message) {
            return Err(ChatError::MessageTooLong(excess));
        }
        let recipients = match to {
            None => {
                let everyone = self.recipients(PushKind::Other).await?;
                self.store.subscriptions(&everyone).await?
            }
            Some(name) => {
                let devices = self.store.devices_of(name).await?;
                if devices.is_empty() {
                    return Err(ChatError::NoSuchMember(name.to_owned()));
                }
                devices.into_iter().map(|d| d.subscription).collect()
            }
        };
        Ok(ResolvedFanOut {
            message,
            recipients,
        })
    }

    /// A member mutes chat lines for [`MUTE_FOR`] from now, on every one of its browsers
    /// (pressing again starts the hour again). Returns until when, in milliseconds since
    /// the Unix epoch.
    pub async fn mute(&self, request: MuteRequest) -> Result<u64, ChatError> {
        let pressed = self.authenticate(&request).await?;
        self.allow(&Limits::MUTES, &pressed.member_id).await?;
        let until = self.now() + MUTE_FOR.as_millis() as u64;
        for device in self.store.devices_of(&pressed.name).await? {
            self.store
                .set_muted_until(&device.subscription.endpoint, until)
                .await?;
        }
        Ok(until)
    }
}
