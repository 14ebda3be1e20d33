//! The format of what a store keeps, and how an older one is brought up to date. Both
//! stores record the format they hold and the release that wrote it; each opens a store of
//! an older format by migrating it in one transaction, and refuses a newer one with
//! [`NewerFormat`]. The backends do the moving; what changes between formats is decided
//! here, once for both (and for backups, read with [`read_contents`]).
//!
//! The formats:
//! 1. Before formats were recorded (pushchat 0.1). Names collide by NFKC + lowercase;
//!    a "left" push names one member (`"name"`).
//! 2. Names collide by their confusable skeleton ([`name_key`]). Of two members whose
//!    names collide now, the one who joined first keeps the name and the other is renamed
//!    "NAME (2)" (see [`distinct_names`]); banned names fold the same way; device codes made
//!    before are void (they would name a member by its old name); a queued "left" push names
//!    its members in a list (`"names"`).
//! 3. Requests read no more devices than they concern: the sled store keeps indexes of
//!    each member's devices, of the devices that joined from each address, and of each
//!    member's name, built from the devices on the way up; PostgreSQL indexes devices by
//!    address (migration 0003). What a backup holds is as in format 2.
//! 4. A queued batch is one push-service origin's recipients and records that origin
//!    (sled: in its key, after the id; PostgreSQL: `fan_outs.origin`), so that delivery
//!    can pass over a hung origin's batches. Nothing is moved: a batch queued before is
//!    read as it is, held back by its first recipient's origin. The format still changes,
//!    so that an older release refuses the store by its format instead of tripping on
//!    the longer keys or the migration it does not know (0004).
//! 5. A queued batch names its recipients by their devices' endpoints
//!    (`{"devices": [endpoint, …]}` where a list of whole subscriptions was), and their
//!    subscriptions are read when it is taken: a chat line costs the queue an endpoint per
//!    member instead of a copy of every subscription. The last push to a removed member's
//!    browsers, whose devices go in the same change, still carries whole subscriptions,
//!    and so does every batch queued before, read as it is. Nothing is moved; the format
//!    changes so that an older release refuses a store whose batches it cannot read.
//! 6. A device records its last sign of life (`last_seen`) and whether it was warned that
//!    its silence will remove it (`stale_warned`; see `chat::pruning`). Every device of an
//!    older store counts as seen when the store reached format 6 (sled: written into each
//!    record; PostgreSQL: migration 0005's default), and so does every device of an older
//!    backup when it is read: an upgrade or a restore never prunes anyone at once.
//!
//! Each step that brings a store up a format records the format it reached once its work
//! is durable (in the same transaction where it has one), so a store stopped between two
//! steps, or in one, goes on from there when it opens.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use super::{name_key, StoreContents, StoreError};
use crate::model::{clock::now_millis, member::Device};

/// The format this build writes.
pub const FORMAT: u32 = SEEN_DEVICES;

/// The format in which names collide by their skeleton (see the list above).
pub const SKELETON_NAMES: u32 = 2;

/// The format in which requests read no more devices than they concern (see the list
/// above).
pub const INDEXED_DEVICES: u32 = 3;

/// The format in which a queued batch is one origin's and records it (see the list above).
pub const FAN_OUT_ORIGINS: u32 = 4;

/// The format in which a queued batch names its recipients by their devices' endpoints
/// (see the list above).
pub const DEVICE_RECIPIENTS: u32 = 5;

/// The format in which a device records its last sign of life (see the list above).
pub const SEEN_DEVICES: u32 = 6;

/// The format of a store that records none but holds a chat.
pub const UNRECORDED: u32 = 1;

/// Who wrote a store, as recorded in it beside its format.
pub const WRITTEN_BY: &str = concat!("pushchat ", env!("CARGO_PKG_VERSION"));

/// A store or backup from a later release than this one.
#[derive(Debug, thiserror::Error)]
#[error(
    "it was written by {written_by} in store format {found}, and this {WRITTEN_BY} reads \
     formats up to {FORMAT}: run {written_by} or a later release"
)]
pub struct NewerFormat {
    pub found: u32,
    pub written_by: String,
}

/// Refuses a format newer than this build's.
pub fn check(found: u32, written_by: Option<String>) -> Result<(), NewerFormat> {
    if found <= FORMAT {
        return Ok(());
    }
    Err(NewerFormat {
        found,
        written_by: written_by.unwrap_or_else(|| "a later pushchat".into()),
    })
}

/// One member as the renaming in [`distinct_names`] sees it.
pub struct NamedMember<'a> {
    pub member_id: &'a str,
    pub name: &'a str,
    /// When its first device joined: the earliest keeps a contested name.
    pub joined: u64,
}

/// The new names that make every member's [`name_key`] distinct, by member id: the
/// member who joined first keeps a contested name, the others get "NAME (2)", "NAME (3)"…
pub fn distinct_names(members: &[NamedMember<'_>]) -> HashMap<String, String> {
    let mut by_age: Vec<&NamedMember<'_>> = members.iter().collect();
    by_age.sort_by_key(|member| (member.joined, member.member_id));
    let mut taken = HashSet::new();
    let mut renamed = HashMap::new();
    for member in by_age {
        if taken.insert(name_key(member.name)) {
            continue;
        }
        let new_name = (2..)
            .map(|n| format!("{} ({n})", member.name))
            .find(|candidate| taken.insert(name_key(candidate)))
            .unwrap_or_else(|| unreachable!("the numbers never run out"));
        tracing::warn!(
            name = member.name,
            new_name,
            "two members' names look alike; the later one is renamed"
        );
        renamed.insert(member.member_id.to_owned(), new_name);
    }
    renamed
}

/// [`distinct_names`] over devices: one entry per member, joined when its first did.
pub fn distinct_device_names(devices: &[Device]) -> HashMap<String, String> {
    let mut first_joined: HashMap<&str, (&str, u64)> = HashMap::new();
    for device in devices {
        let entry = first_joined
            .entry(&device.member_id)
            .or_insert((&device.name, device.joined));
        entry.1 = entry.1.min(device.joined);
    }
    let members: Vec<NamedMember<'_>> = first_joined
        .into_iter()
        .map(|(member_id, (name, joined))| NamedMember {
            member_id,
            name,
            joined,
        })
        .collect();
    distinct_names(&members)
}

/// A push message as format 1 wrote it, as format 2 writes it: a "left" push names its
/// members in a list. Whether it changed.
pub fn upgrade_message(message: &mut Value) -> bool {
    let Some(fields) = message.as_object_mut() else {
        return false;
    };
    if fields.get("action").and_then(Value::as_str) != Some("unsubscribe") {
        return false;
    }
    let Some(name) = fields.remove("name") else {
        return false;
    };
    fields.insert("names".into(), Value::Array(vec![name]));
    true
}

/// A device from before format 6, which recorded no sign of life, counts as seen `now`
/// (see the list above). Whether it changed.
pub fn date_unseen(device: &mut Device, now: u64) -> bool {
    let unseen = device.last_seen == 0;
    if unseen {
        device.last_seen = now;
    }
    unseen
}

/// Store contents (a backup, say) in any format up to [`FORMAT`], as this build keeps them;
/// a newer format is refused.
pub fn read_contents(mut contents: Value) -> Result<StoreContents, StoreError> {
    let found = contents
        .get("store_format")
        .and_then(Value::as_u64)
        .map_or(UNRECORDED, |format| format.min(u32::MAX.into()) as u32);
    let written_by = contents
        .get("written_by")
        .and_then(Value::as_str)
        .map(str::to_owned);
    check(found, written_by)?;
    if let Some(fan_outs) = contents.get_mut("fan_outs").and_then(Value::as_array_mut) {
        for fan_out in fan_outs {
            if let Some(message) = fan_out.get_mut("message") {
                upgrade_message(message);
            }
        }
    }
    let mut contents: StoreContents = serde_json::from_value(contents)?;
    let renamed = distinct_device_names(&contents.devices);
    let now = now_millis();
    for device in &mut contents.devices {
        if let Some(new_name) = renamed.get(&device.member_id) {
            device.name.clone_from(new_name);
        }
        date_unseen(device, now);
    }
    contents.store_format = FORMAT;
    Ok(contents)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn test_the_member_who_joined_first_keeps_a_contested_name() {
        let members = [
            NamedMember {
                member_id: "b",
                name: "b\u{43e}b", // Cyrillic о
                joined: 20,
            },
            NamedMember {
                member_id: "a",
                name: "bob",
                joined: 10,
            },
            NamedMember {
                member_id: "c",
                name: "BOB",
                joined: 30,
            },
            NamedMember {
                member_id: "d",
                name: "Ann",
                joined: 5,
            },
        ];
        let renamed = distinct_names(&members);
        assert_eq!(renamed.len(), 2);
        assert_eq!(renamed["b"], "b\u{43e}b (2)");
        assert_eq!(renamed["c"], "BOB (3)");
    }

    #[test]
    fn test_a_format_1_left_push_names_its_member_in_a_list() {
        let mut message = json!({"action": "unsubscribe", "name": "Ann"});
        assert!(upgrade_message(&mut message));
        assert_eq!(message, json!({"action": "unsubscribe", "names": ["Ann"]}));
        let mut line = json!({"action": "chatMsg", "id": 1, "name": "Ann", "msg": "hi", "time": 2});
        assert!(!upgrade_message(&mut line));
    }

    #[test]
    fn test_a_backup_from_before_format_6_counts_its_devices_as_seen_when_read() {
        let mut device = serde_json::to_value(crate::store::testing::ann()).unwrap();
        device.as_object_mut().unwrap().remove("last_seen");
        let backup = json!({"store_format": DEVICE_RECIPIENTS, "devices": [device],
                            "banned": [], "history": []});
        let read_at = now_millis();
        let contents = read_contents(backup).unwrap();
        assert!(contents.devices[0].last_seen >= read_at);
        // One that recorded its sign of life keeps it.
        let seen = crate::store::testing::ann();
        let backup = json!({"store_format": FORMAT, "devices": [seen.clone()],
                            "banned": [], "history": []});
        assert_eq!(read_contents(backup).unwrap().devices, [seen]);
    }

    #[test]
    fn test_a_newer_format_is_refused_with_the_release_that_wrote_it() {
        let refused = check(FORMAT + 1, Some("pushchat 9.0.0".into())).unwrap_err();
        let message = refused.to_string();
        assert!(message.contains("pushchat 9.0.0"), "{message}");
        assert!(
            message.contains(&format!("format {}", FORMAT + 1)),
            "{message}"
        );
        assert!(check(FORMAT, None).is_ok());
        let backup =
            json!({"store_format": FORMAT + 1, "devices": [], "banned": [], "history": []});
        assert!(matches!(
            read_contents(backup),
            Err(StoreError::NewerFormat(_))
        ));
    }
}
