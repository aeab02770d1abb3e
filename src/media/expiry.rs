//! The expiry sweeper: one task that deletes unfinished uploads whose `Upload-Expires` passed,
//! every `media.expiry_sweep_ms`.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::MissedTickBehavior;

use crate::clock::now_secs;
use crate::node::Node;

/// Runs until the node shuts down.
pub async fn run(node: Arc<Node>) {
    let media = node.media.clone();
    let mut interval = tokio::time::interval(Duration::from_millis(media.config().expiry_sweep_ms));
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {
                let expired = media.expire(now_secs()).await;
                if expired > 0 {
                    tracing::info!(expired, "expired unfinished uploads deleted");
                }
            }
            () = node.shutdown.cancelled() => return,
        }
    }
}
