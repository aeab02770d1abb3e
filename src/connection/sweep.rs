//! The sweeper: one task that walks every connection each `sweep_interval` and enforces the
//! login, frame, idle and slow-consumer timeouts from coarse stamps, so no connection owns a
//! timer and no timer is reset per packet. It also publishes the dispatcher queue depths and
//! drops the abuse limits' idle buckets.

use std::sync::Arc;

use crate::clock::uptime_secs;
use crate::connection::reader::write_error_and_close;
use crate::metrics as names;
use crate::node::Node;
use crate::proto::v1::{ErrorCode, GoAwayReason};
use crate::session::SessionMsg;

/// Runs until the node shuts down.
pub async fn run(node: Arc<Node>) {
    let mut interval = tokio::time::interval(node.config.limits.sweep_interval());
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            () = node.shutdown.cancelled() => return,
        }
        let now = uptime_secs();
        sweep(&node, now);
        node.conns.expire_penalties(now);
        node.abuse.sweep();
        node.mailboxes.report_depths();
    }
}

/// One pass over all connections at coarse time `now`.
pub fn sweep(node: &Node, now: u32) {
    let limits = &node.config.limits;
    node.conns.for_each(|conn| {
        if conn.is_closed() {
            return;
        }
        let Some(session) = conn.session() else {
            if conn.age_secs(now) >= limits.login_timeout_secs {
                write_error_and_close(conn, ErrorCode::Timeout, "login timeout");
            }
            return;
        };
        if conn.partial_secs(now) >= limits.frame_timeout_secs {
            // A frame that trickles in holds a read buffer; its bytes keep the idle stamp fresh,
            // so only this deadline bounds it.
            metrics::counter!(names::ERRORS, "kind" => "frame_timeout").increment(1);
            let _ = session.cast(SessionMsg::Fatal {
                code: ErrorCode::Timeout,
                message: "frame not completed in time".to_owned(),
            });
            return;
        }
        let reason = if conn.idle_secs(now) >= limits.idle_timeout_secs {
            Some(GoAwayReason::Idle)
        } else if conn.stalled_secs(now) >= limits.slow_consumer_secs {
            Some(GoAwayReason::SlowConsumer)
        } else {
            None
        };
        if let Some(reason) = reason {
            let _ = session.cast(SessionMsg::GoAway {
                reason,
                reconnect_after_ms: 0,
            });
        }
    });
}
