//! What members say and hear: a chat line from a member, reading further back through
//! the history than the page loaded (scroll-back), a notice from the operator, and a
//! member muting chat lines for an hour.

use app::{
    budget::{chat_line_excess, payload_excess},
    wire::{ChatLine, HistoryPage, MemberCredentials, MuteRequest, PostLineRequest, PushMessage},
};

use super::{check_text, limits::Limits, Chat, ChatError, PushKind, MUTE_FOR};
use crate::{
    model::fan_out::{FanOut, ResolvedFanOut},
    store::NewLine,
};

/// How many lines a page loads at first (`init`, `subscribe`, `room`); the history keeps
/// more (`ChatRules::history_limit`), read back a page at a time with [`OlderLines`].
pub const FIRST_LINES: usize = 200;

/// How many lines one scroll-back reads unless it asks for another number.
pub const OLDER_LINES: usize = 100;

/// The most lines one scroll-back may ask for: an answer stays well under a megabyte.
pub const MAX_OLDER_LINES: usize = 500;

/// A scroll-back: up to `limit` lines older than the line with id `before`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OlderLines {
    pub before: u64,
    pub limit: usize,
}

impl OlderLines {
    /// Reads `before=ID` (required) and `limit=N` (optional) from a URL's query string.
    pub fn from_query(query: &str) -> Result<Self, ChatError> {
        let mut before = None;
        let mut limit = None;
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            match &*key {
                "before" => before = Some(value.parse().map_err(|_| ChatError::BadBefore)?),
                "limit" => limit = Some(value.parse().map_err(|_| ChatError::BadLimit)?),
                _ => {}
            }
        }
        let limit = limit.unwrap_or(OLDER_LINES);
        if !(1..=MAX_OLDER_LINES).contains(&limit) {
            return Err(ChatError::BadLimit);
        }
        Ok(OlderLines {
            before: before.ok_or(ChatError::BadBefore)?,
            limit,
        })
    }
}

/// A page of scroll-back from `lines`, the newest `limit + 1` lines before some line: the
/// one more than a page, if it is there, only says that the start is further back.
fn history_page(mut lines: Vec<ChatLine>, limit: usize) -> HistoryPage {
    let start = lines.len() <= limit;
    let beyond = lines.len().saturating_sub(limit);
    lines.drain(..beyond);
    HistoryPage {
        history: lines,
        start,
    }
}

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

    /// A member reads back through the history: the page of lines `request` asks for.
    /// Only members may: the history is theirs.
    pub async fn older_lines(
        &self,
        member: &MemberCredentials,
        request: OlderLines,
    ) -> Result<HistoryPage, ChatError> {
        self.authenticate(member).await?;
        let lines = self
            .store
            .lines_before(request.before, request.limit + 1)
            .await?;
        Ok(history_page(lines, request.limit))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn numbered(ids: std::ops::Range<u64>) -> Vec<ChatLine> {
        ids.map(|id| ChatLine {
            id,
            name: "Ann".into(),
            msg: format!("line {id}"),
            time: id,
        })
        .collect()
    }

    fn ids(page: &HistoryPage) -> Vec<u64> {
        page.history.iter().map(|line| line.id).collect()
    }

    #[test]
    fn test_a_scroll_back_names_the_line_and_may_name_a_limit() {
        let asked = OlderLines::from_query("before=42").unwrap();
        assert_eq!(
            asked,
            OlderLines {
                before: 42,
                limit: OLDER_LINES
            }
        );
        let asked = OlderLines::from_query("limit=7&before=0&other=x").unwrap();
        assert_eq!(
            asked,
            OlderLines {
                before: 0,
                limit: 7
            }
        );
        let widest = format!("before=1&limit={MAX_OLDER_LINES}");
        assert_eq!(
            OlderLines::from_query(&widest).unwrap().limit,
            MAX_OLDER_LINES
        );
    }

    #[test]
    fn test_a_scroll_back_without_a_line_id_is_refused() {
        for query in [
            "",
            "before=",
            "before=abc",
            "before=-1",
            "before=1.5",
            "limit=5",
        ] {
            assert!(
                matches!(OlderLines::from_query(query), Err(ChatError::BadBefore)),
                "{query:?}"
            );
        }
        let huge = format!("before={}0", u64::MAX);
        assert!(matches!(
            OlderLines::from_query(&huge),
            Err(ChatError::BadBefore)
        ));
    }

    #[test]
    fn test_a_scroll_back_limit_is_between_one_and_the_most() {
        let too_many = format!("before=9&limit={}", MAX_OLDER_LINES + 1);
        for query in ["before=9&limit=0", "before=9&limit=x", too_many.as_str()] {
            assert!(
                matches!(OlderLines::from_query(query), Err(ChatError::BadLimit)),
                "{query:?}"
            );
        }
    }

    #[test]
    fn test_a_page_with_one_line_more_than_asked_is_not_the_start() {
        let page = history_page(numbered(10..14), 3);
        assert_eq!(ids(&page), [11, 12, 13]);
        assert!(!page.start);
    }

    #[test]
    fn test_a_page_without_that_line_reaches_the_start() {
        let full = history_page(numbered(0..3), 3);
        assert_eq!(ids(&full), [0, 1, 2]);
        assert!(full.start);
        let empty = history_page(Vec::new(), 3);
        assert!(empty.history.is_empty() && empty.start);
    }
}
