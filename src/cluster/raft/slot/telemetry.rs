//! The slot groups' metrics: what their coalesced network carries and how their proposals end.

use metrics::Unit;

/// Calls that carried slot groups' Raft requests to peers (one per batch).
pub const BATCHES: &str = "tern_slot_raft_batches_total";
/// Slot groups' Raft requests carried in those calls.
pub const RPCS: &str = "tern_slot_raft_rpcs_total";
/// Proposals committed by a majority of their slot group.
pub const COMMITTED: &str = "tern_slot_proposals_committed_total";
/// Proposals that failed, by `cause`: `not_leader` (another member leads) or `failed`.
pub const FAILED: &str = "tern_slot_proposals_failed_total";
/// Slot groups this node leads.
pub const LED: &str = "tern_slot_groups_led";
/// Committed records of other nodes queued on this node's workers and not yet applied (what a
/// new leader here would wait for before serving).
pub const REPLAY_BACKLOG: &str = "tern_slot_replay_backlog";
/// Leaderships handed to the member a group prefers.
pub const TRANSFERS: &str = "tern_slot_leader_transfers_total";
/// Membership changes of a slot group made by its leader (learners added, voters replaced,
/// learners taken out).
pub const MEMBERSHIP_CHANGES: &str = "tern_slot_membership_changes_total";

/// Purges of a slot group's log up to its durable point.
pub const PURGES: &str = "tern_slot_log_purges_total";
/// Compactions of the node's slot log journal (live records restated, the rest released).
pub const COMPACTIONS: &str = "tern_slot_log_compactions_total";

/// Entries held in the logs of this node's slot groups (not yet purged).
pub const LOG_ENTRIES: &str = "tern_slot_log_entries";

/// Snapshots of a slot group sent to a member too far behind.
pub const SNAPSHOTS_SENT: &str = "tern_slot_snapshots_sent_total";
/// Snapshots of a slot group installed here.
pub const SNAPSHOTS_INSTALLED: &str = "tern_slot_snapshots_installed_total";
/// Snapshots that could not be exported, sent or installed (tried again).
pub const SNAPSHOT_FAILURES: &str = "tern_slot_snapshot_failures_total";

/// Registers descriptions and units of the slot groups' metrics with the installed recorder.
pub fn describe() {
    metrics::describe_counter!(
        BATCHES,
        Unit::Count,
        "Calls carrying slot groups' Raft requests to a peer (one per batch)."
    );
    metrics::describe_counter!(
        RPCS,
        Unit::Count,
        "Slot groups' Raft requests sent to peers."
    );
    metrics::describe_counter!(
        COMMITTED,
        Unit::Count,
        "Slot group proposals committed by a majority."
    );
    metrics::describe_counter!(FAILED, Unit::Count, "Slot group proposals that failed.");
    metrics::describe_gauge!(LED, Unit::Count, "Slot groups this node leads.");
    metrics::describe_gauge!(
        REPLAY_BACKLOG,
        Unit::Count,
        "Other nodes' committed entries queued on the workers, not yet applied."
    );
    metrics::describe_counter!(
        PURGES,
        Unit::Count,
        "Purges of a slot group's log up to what the stores hold and every voter has."
    );
    metrics::describe_gauge!(
        LOG_ENTRIES,
        Unit::Count,
        "Entries held in the logs of this node's slot groups (a member that is down holds them back)."
    );
    metrics::describe_counter!(
        SNAPSHOTS_SENT,
        Unit::Count,
        "Slot group snapshots sent to a member too far behind."
    );
    metrics::describe_counter!(
        SNAPSHOTS_INSTALLED,
        Unit::Count,
        "Slot group snapshots installed here."
    );
    metrics::describe_counter!(
        SNAPSHOT_FAILURES,
        Unit::Count,
        "Slot group snapshots that could not be exported, sent or installed."
    );
    metrics::describe_counter!(
        COMPACTIONS,
        Unit::Count,
        "Compactions of the node's slot log journal."
    );
    metrics::describe_counter!(
        TRANSFERS,
        Unit::Count,
        "Slot group leaderships handed to the member the group prefers."
    );
    metrics::describe_counter!(
        MEMBERSHIP_CHANGES,
        Unit::Count,
        "Slot group membership changes made as leader (learners added, voters replaced, learners taken out)."
    );
}
