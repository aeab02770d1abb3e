//! Push notifications for devices that are away: registrations live in the user's account (see
//! [`crate::mailbox::account`]); the scheduler ([`scheduler`]) decides when a device is pushed
//! and collapses bursts; the sender ([`sender`]) queues pushes for the gateway and retries them;
//! the gateway client ([`gateway`]) speaks gorush's or the Matrix push gateway's format over
//! HTTP/1.1 keep-alive connections.

pub mod bursts;
pub mod config;
pub mod gateway;
pub mod hub;
pub mod notification;
pub mod scheduler;
pub mod sender;
pub mod telemetry;

#[cfg(test)]
mod testing;

pub use config::{GatewayKind, PushConfig};
pub use notification::{Notification, Platform};

use std::sync::{Arc, Weak};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::mailbox::MailboxOp;
use crate::mailbox::pushers::PushChange;
use crate::message::Id;
use crate::node::Node;

/// Starts the gateway sender and the scheduler task fed by `events` (the hub's queue); the
/// task ends when the hub is gone. Tokens the gateway rejects, and tokens that moved to another
/// device, are dropped from their device through `node` (on the node that owns the user).
pub fn start(
    config: &PushConfig,
    events: mpsc::Receiver<hub::PushEvent>,
    node: &Arc<Node>,
) -> JoinHandle<()> {
    let weak = Arc::downgrade(node);
    let drop_token: scheduler::DropToken = {
        let weak = weak.clone();
        Arc::new(move |owner, device, token| drop_from_device(&weak, owner, device, token))
    };
    let unregistered = {
        let weak = weak.clone();
        Arc::new(move |push: &Notification| {
            drop_from_device(
                &weak,
                Id::from(push.user.as_str()),
                Id::from(push.device.as_str()),
                Arc::from(push.token.as_str()),
            );
        })
    };
    let sender = match sender::Sender::start(config, unregistered) {
        Ok(sender) => Some(sender),
        Err(error) => {
            tracing::error!(%error, "push: cannot start the gateway sender; nothing will be pushed");
            None
        }
    };
    let timing = scheduler::timing(config);
    tokio::spawn(async move {
        let dead_letters = metrics::counter!(telemetry::DEAD_LETTERS);
        let deliver = |push: Notification| match &sender {
            Some(sender) => sender.offer(push),
            None => {
                dead_letters.increment(1);
                true
            }
        };
        scheduler::run(events, timing, deliver, drop_token).await;
    })
}

/// Removes `token` from `device` of `owner` if the device still has it.
fn drop_from_device(node: &Weak<Node>, owner: Id, device: Id, token: Arc<str>) {
    let Some(node) = node.upgrade() else { return };
    tracing::info!(user = %owner, device = %device, "push: dropping a token the gateway rejected or another device took");
    let op = MailboxOp::Push {
        owner,
        device,
        change: PushChange::Drop(token),
        reply: None,
    };
    // A full queue: the token stays until the gateway rejects it again.
    let _ = node.submit(op);
}
