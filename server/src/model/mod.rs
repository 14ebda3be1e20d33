//! What the chat is made of, below its rules: a browser's push subscription and what its
//! endpoint and keys must be (`subscription`), a member and its devices (`member`), the
//! fan-out of one update to members (`fan_out`), and time as the chat keeps it (`clock`).

pub mod clock;
pub mod fan_out;
pub mod member;
pub mod subscription;
