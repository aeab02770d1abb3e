//! Push notifications for devices that are away: registrations live in the user's account (see
//! [`crate::mailbox::account`]); the scheduler ([`scheduler`]) decides when a device is pushed
//! and collapses bursts; the sender ([`sender`]) queues pushes for the gateway and retries them;
//! the gateway client ([`gateway`]) speaks gorush's or the Matrix push gateway's format over
//! HTTP/1.1 keep-alive connections.

pub mod config;
pub mod gateway;
pub mod notification;
pub mod sender;
pub mod telemetry;

#[cfg(test)]
mod testing;

pub use config::{GatewayKind, PushConfig};
pub use notification::{Notification, Platform};
