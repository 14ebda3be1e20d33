//! What the chat is made of, below its rules: a browser's push subscription and what its
//! endpoint and keys must be (`subscription`), and time as the chat keeps it (`clock`).

pub mod clock;
pub mod subscription;
