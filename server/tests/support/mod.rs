//! What the server's integration tests share besides the harness (`end2end`): the binary
//! Cargo built for them, and what they check of the files the server writes. Each test
//! file uses part of it.
#![allow(dead_code)]

use std::path::Path;

/// The `pushchat` binary Cargo built for these tests.
pub const PUSHCHAT: &str = env!("CARGO_BIN_EXE_pushchat");

/// The mode (type and permission bits) of the file at `path`.
pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode()
}
