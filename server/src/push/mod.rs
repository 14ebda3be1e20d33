//! Web Push: the delivery of fan-outs (`delivery`), each push's signature, sending and
//! status policy (`engine`), its RFC 8291 encryption (`encryption`), the worker that
//! takes queued fan-outs (`worker`), each push-service origin's share of the slots
//! (`origins`), what delivery reports (`report`), the server's VAPID identity (`vapid`),
//! the HTTP/2 client for `https` push services (`http2`), and the DNS resolver that lets
//! the delivery clients reach public addresses only (`public_dns`).

pub mod delivery;
pub mod encryption;
pub mod engine;
mod http2;
mod origins;
pub mod public_dns;
pub mod report;
pub mod vapid;
mod worker;

pub use self::{
    delivery::{Delivery, GoneSubscriptions, GONE_BATCHES_WAITING},
    engine::DeliverySettings,
    report::{DeliveryReport, DeliveryTotals, LastResult, Outcome},
};
