//! Web Push: the delivery engine that encrypts, signs, sends and retries every fan-out
//! under its status policy (`delivery`), the server's VAPID identity (`vapid`), and the
//! DNS resolver that lets the delivery client reach public addresses only
//! (`public_dns`).

pub mod delivery;
pub mod public_dns;
pub mod vapid;
