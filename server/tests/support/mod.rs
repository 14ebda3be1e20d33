//! What the server's integration tests share besides the harness (`end2end`), which
//! cannot know the server's own types: the binary Cargo built for them, members stored
//! straight into a store, and what they check of the files the server writes. Each test
//! file uses part of it.
#![allow(dead_code)]

use std::path::Path;

use localpush::VirtualSubscription;
use server::{
    model::member::Device,
    model::subscription::{self, EndpointPolicy},
};

/// The `pushchat` binary Cargo built for these tests.
pub const PUSHCHAT: &str = env!("CARGO_BIN_EXE_pushchat");

/// `member`'s subscription as the one device of a member called `name` (its id too), for
/// a test to put straight into a store: no join, no pushes.
pub fn device(name: &str, member: &VirtualSubscription) -> Device {
    let policy = EndpointPolicy::local_testing();
    Device {
        member_id: name.into(),
        name: name.into(),
        subscription: subscription::validate(&member.subscription, &policy).unwrap(),
        joined: 0,
        joined_from: None,
        muted_until: None,
        last_seen: server::model::clock::now_millis(),
        stale_warned: None,
    }
}

/// The mode (type and permission bits) of the file at `path`.
pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode()
}
