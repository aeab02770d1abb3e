//! Every metric tern exports: names, units and descriptions in one place, and the Prometheus
//! recorder. Labels never carry user, device or connection ids.

use std::sync::OnceLock;

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub mod process;
mod register;

pub use register::{BACKGROUND_TASKS, DISCONNECT_REASONS, LOGIN_RESULTS, error_kinds};

/// Always 1, labelled with the `version` the node was built as.
pub const BUILD_INFO: &str = "tern_build_info";
/// 1 while the node serves phones (what `GET /readyz` answers), 0 otherwise; set at each
/// scrape.
pub const READY: &str = "tern_ready";

/// Open TCP connections (logged in or not).
pub const CONNECTIONS: &str = "tern_connections";
/// Logged-in sessions (one per connected device).
pub const SESSIONS: &str = "tern_sessions";
/// Connections accepted.
pub const CONNECTIONS_ACCEPTED: &str = "tern_connections_accepted_total";
/// Connections closed, by `reason`.
pub const DISCONNECTS: &str = "tern_disconnects_total";
/// Login attempts, by `result` (ok, bad_token, expired, revoked, bad_version, protocol,
/// overloaded...).
pub const LOGINS: &str = "tern_logins_total";
/// Frames received from phones.
pub const FRAMES_IN: &str = "tern_frames_in_total";
/// Frames sent to phones.
pub const FRAMES_OUT: &str = "tern_frames_out_total";
/// Bytes received from phones.
pub const BYTES_IN: &str = "tern_bytes_in_total";
/// Bytes sent to phones.
pub const BYTES_OUT: &str = "tern_bytes_out_total";
/// write(2) calls on phone sockets (frames out / writes = coalescing factor).
pub const SOCKET_WRITES: &str = "tern_socket_writes_total";
/// Messages and receipts accepted into a mailbox (acked), excluding retries.
pub const MESSAGES_IN: &str = "tern_messages_in_total";
/// Retries answered from the dedup table.
pub const MESSAGES_DUPLICATE: &str = "tern_messages_duplicate_total";
/// Mailbox entries written to devices.
pub const MESSAGES_OUT: &str = "tern_messages_out_total";
/// Errors answered to phones, by `kind` (bad_frame, frame_too_large, rate_limited...).
pub const ERRORS: &str = "tern_errors_total";
/// Refusals by the abuse limits, by `limit`: `connections_per_ip`, `logins_per_ip`,
/// `group_creates`, `group_adds` (see `crate::limits`).
pub const ABUSE_REFUSALS: &str = "tern_abuse_refusals_total";
/// Keys each abuse-limit table holds, by `limit`: source addresses with open connections or a
/// login bucket, users with a group bucket (set at each sweep).
pub const ABUSE_TRACKED: &str = "tern_abuse_tracked_keys";
/// Admin actions refused, by `reason` (no_token_configured, bad_token).
pub const ADMIN_REFUSALS: &str = "tern_admin_refusals_total";
/// Outbound frames over `max_frame_bytes`, dropped instead of written (a server bug if ever
/// non-zero: every answer is built to fit).
pub const FRAMES_OVERSIZED: &str = "tern_frames_oversized_total";
/// Time from a Send arriving to its ServerAck being queued.
pub const ACK_LATENCY: &str = "tern_ack_latency_seconds";
/// Jobs waiting in a dispatcher queue, by `service`, `shard` and `lane`.
pub const DISPATCH_QUEUE_DEPTH: &str = "tern_dispatch_queue_depth";
/// Jobs refused because a dispatcher queue was full, by `service` and `lane`.
pub const DISPATCH_REJECTED: &str = "tern_dispatch_rejected_total";
/// Dispatcher jobs that panicked (the worker survives), by `service`.
pub const DISPATCH_PANICS: &str = "tern_dispatch_job_panics_total";
/// Session actors that panicked.
pub const SESSION_PANICS: &str = "tern_session_panics_total";
/// Entries held in mailbox caches.
pub const MAILBOX_ENTRIES: &str = "tern_mailbox_entries";
/// Approximate bytes held in mailbox caches (see `mailbox.cache_bytes`).
pub const MAILBOX_CACHE_BYTES: &str = "tern_mailbox_cache_bytes";
/// Entries served by mailbox reads, by `source`: `cache` (held in memory) or `store` (paged in
/// from sled). The cache hit ratio is cache / (cache + store).
pub const MAILBOX_READ_ENTRIES: &str = "tern_mailbox_read_entries_total";
/// Mailboxes evicted from the cache to the store (over the memory budget).
pub const EVICTIONS: &str = "tern_mailbox_evictions_total";
/// Entries dropped from memory by evictions.
pub const EVICTED_ENTRIES: &str = "tern_mailbox_evicted_entries_total";
/// Mailbox reads from the store that failed (retried by the session) or found a corrupt entry.
pub const PAGE_IN_FAILURES: &str = "tern_mailbox_page_in_failures_total";
/// Recipients per group entry copied by the fan-out (the group sizes that post); a histogram,
/// so that nodes add up.
pub const GROUP_FANOUT_RECIPIENTS: &str = "tern_group_fanout_recipients";
/// Time from a group entry's acceptance until every recipient's copy is durable.
pub const GROUP_FANOUT_SECONDS: &str = "tern_group_fanout_seconds";
/// Group entries waiting in the fan-out lanes.
pub const GROUP_FANOUT_QUEUE: &str = "tern_group_fanout_queue_depth";
/// Entries removed from large groups' logs once every mailbox that had a copy acked it.
pub const GROUP_LOG_PRUNED: &str = "tern_group_log_pruned_total";
/// Live pushes skipped because a session's push queue was full (it reads them from the mailbox).
pub const PUSHES_SKIPPED: &str = "tern_pushes_skipped_total";
/// How long the last start spent rebuilding mailboxes from the journals.
pub const RECOVERY_SECONDS: &str = "tern_recovery_seconds";
/// Entries the last start loaded from the stores (written back before the restart).
pub const RECOVERY_STORE_ENTRIES: &str = "tern_recovery_store_entries";
/// Appends refused because the journal could not make them durable (disk full, I/O error).
pub const STORAGE_FAILURES: &str = "tern_storage_failures_total";
/// Background tasks or threads that ended while the node was running, by `task` (`journal`,
/// `store`, `mailbox_worker`, `fanout_lane`, `checkpointer`, `sweeper`, `media_expiry`,
/// `accept`, with `[cluster]` `peer_addrs`); the node then shuts down and exits non-zero.
pub const BACKGROUND_TASK_FAILURES: &str = "tern_background_task_failures_total";
/// Completed checkpoints (write-back, store fsync, journal release).
pub const CHECKPOINTS: &str = "tern_checkpoints_total";
/// Write-back passes or checkpoints that failed (retried at the next interval); an alarm.
pub const CHECKPOINT_FAILURES: &str = "tern_checkpoint_failures_total";
/// Entries written back to the stores (unacked past the write-back delay).
pub const WRITTEN_BACK: &str = "tern_mailbox_written_back_total";
/// Steps write-back passes took after their first: a worker's pass stops after 64 KiB of store
/// writes (or 512 mailboxes) and goes on after the jobs queued meanwhile.
pub const WRITEBACK_STEPS: &str = "tern_mailbox_writeback_steps_total";
/// Typing notices relayed to online devices.
pub const TYPING_RELAYED: &str = "tern_typing_relayed_total";
/// Presence updates sent to subscribers.
pub const PRESENCE_UPDATES: &str = "tern_presence_updates_total";
/// Operations on keys owned by another node that got no answer from it, by `cause`:
/// `unavailable` (the owner is down or the slot unplaced), `deadline`, `call` (the link or the
/// owner refused), `malformed`, `not_owner` (still not the owner after one redirect).
pub const REMOTE_FAILURES: &str = "tern_remote_failures_total";
/// Group entries sent to another node for the members it owns (one per entry and node).
pub const GROUP_REMOTE_COPIES: &str = "tern_group_remote_copies_total";
/// Mesh calls carrying group entries to other nodes (several entries of a group may share one).
pub const GROUP_REMOTE_COPY_CALLS: &str = "tern_group_remote_copy_calls_total";
/// Group entries another node did not confirm (sent again later, in group order).
pub const GROUP_REMOTE_COPY_FAILURES: &str = "tern_group_remote_copy_failures_total";

/// Uploads created on the media server (tus POST).
pub const MEDIA_UPLOADS_STARTED: &str = "tern_media_uploads_started_total";
/// Uploads finished: hashed and stored (or deduplicated).
pub const MEDIA_UPLOADS_COMPLETED: &str = "tern_media_uploads_completed_total";
/// Unfinished uploads deleted by the expiry sweeper.
pub const MEDIA_UPLOADS_EXPIRED: &str = "tern_media_uploads_expired_total";
/// Uploads or media deleted by their owner (tus termination).
pub const MEDIA_UPLOADS_TERMINATED: &str = "tern_media_uploads_terminated_total";
/// Unfinished uploads held.
pub const MEDIA_UPLOADS_UNFINISHED: &str = "tern_media_uploads_unfinished";
/// Upload bytes received and fsynced.
pub const MEDIA_BYTES_IN: &str = "tern_media_bytes_in_total";
/// Download body bytes sent.
pub const MEDIA_BYTES_OUT: &str = "tern_media_bytes_out_total";
/// Downloads (200 and 206) by `result`: `hit` (served from the hot cache) or `miss` (from disk).
/// The hit ratio is hit / (hit + miss).
pub const MEDIA_HOT_CACHE_REQUESTS: &str = "tern_media_hot_cache_requests_total";
/// Hot-cache hits over all downloads since start (the same ratio, precomputed).
pub const MEDIA_HOT_CACHE_HIT_RATIO: &str = "tern_media_hot_cache_hit_ratio";
/// Bytes held in the hot cache (see `media.hot_cache_bytes`).
pub const MEDIA_HOT_CACHE_BYTES: &str = "tern_media_hot_cache_bytes";
/// Finished uploads whose content was already stored (no new space used).
pub const MEDIA_DEDUP_HITS: &str = "tern_media_dedup_hits_total";
/// Bytes not written to the object store thanks to deduplication.
pub const MEDIA_DEDUP_SAVED_BYTES: &str = "tern_media_dedup_saved_bytes_total";
/// Distinct objects stored.
pub const MEDIA_OBJECTS: &str = "tern_media_objects";
/// Bytes of distinct objects stored.
pub const MEDIA_STORED_BYTES: &str = "tern_media_stored_bytes";
/// Media HTTP responses, by `status` class (`2xx`, `3xx`, `4xx`, `5xx`).
pub const MEDIA_RESPONSES: &str = "tern_media_responses_total";
/// Time to make one change of the media index durable (sled flush, then fsync of its files).
pub const MEDIA_INDEX_SYNC: &str = "tern_media_index_sync_seconds";
/// Replicated media: objects this node copied from its peers because it lacked them (a missed
/// completion, an empty disk).
pub const MEDIA_REFILL_OBJECTS: &str = "tern_media_refill_objects_total";
/// Replicated media: bytes of the objects copied from peers.
pub const MEDIA_REFILL_BYTES: &str = "tern_media_refill_bytes_total";
/// Replicated media: objects lacking here that no peer could supply yet (tried again).
pub const MEDIA_REFILL_FAILURES: &str = "tern_media_refill_failures_total";
/// Replicated media: committed entries whose media changes could not be applied here (a
/// failing disk); this node's media state misses them until it is replaced.
pub const MEDIA_APPLY_FAILURES: &str = "tern_media_apply_failures_total";
/// Replicated media: downloads this node streamed from another node's copy.
pub const MEDIA_REMOTE_READS: &str = "tern_media_remote_reads_total";
/// Replicated media: objects made durable on this node for a completion (from its own parts or
/// a peer's).
pub const MEDIA_PLACED: &str = "tern_media_placed_objects_total";

/// Latency buckets, in seconds, for every histogram.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5,
];

/// Buckets for records per journal batch.
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0, 4096.0,
];

/// Buckets for recipients per group entry (`groups.max_members` is at most 100000).
const GROUP_SIZE_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0, 20000.0,
    50000.0, 100_000.0,
];

/// Installs the process-wide Prometheus recorder once and returns its handle (later calls, as in
/// tests that start several servers in one process, get the same handle).
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new();
            let builder = builder
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(crate::journal::telemetry::BATCH_RECORDS.into()),
                        BATCH_BUCKETS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(GROUP_FANOUT_RECIPIENTS.into()),
                        GROUP_SIZE_BUCKETS,
                    )
                })
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first; then ours just stays unused.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            crate::journal::telemetry::describe();
            crate::store::telemetry::describe();
            crate::mesh::telemetry::describe();
            crate::wan::telemetry::describe();
            crate::push::telemetry::describe();
            crate::cluster::telemetry::describe();
            crate::cluster::raft::slot::telemetry::describe();
            crate::tls::describe();
            register::register();
            handle
        })
        .clone()
}

/// The `/metrics` text: every recorded series, then the process metrics read now.
pub fn render(handle: &PrometheusHandle) -> String {
    let mut text = handle.render();
    process::render(&mut text);
    text
}

fn describe() {
    describe_gauge!(
        CONNECTIONS,
        Unit::Count,
        "Open TCP connections from phones."
    );
    describe_gauge!(
        SESSIONS,
        Unit::Count,
        "Logged-in sessions, one per connected device."
    );
    describe_counter!(CONNECTIONS_ACCEPTED, Unit::Count, "Connections accepted.");
    describe_counter!(DISCONNECTS, Unit::Count, "Connections closed, by reason.");
    describe_counter!(LOGINS, Unit::Count, "Login attempts, by result.");
    describe_counter!(FRAMES_IN, Unit::Count, "Frames received from phones.");
    describe_counter!(FRAMES_OUT, Unit::Count, "Frames sent to phones.");
    describe_counter!(BYTES_IN, Unit::Bytes, "Bytes received from phones.");
    describe_counter!(BYTES_OUT, Unit::Bytes, "Bytes sent to phones.");
    describe_counter!(
        SOCKET_WRITES,
        Unit::Count,
        "write(2) calls on phone sockets."
    );
    describe_counter!(
        MESSAGES_IN,
        Unit::Count,
        "Messages and receipts accepted (acked)."
    );
    describe_counter!(
        MESSAGES_DUPLICATE,
        Unit::Count,
        "Retries answered with the original ack."
    );
    describe_counter!(
        MESSAGES_OUT,
        Unit::Count,
        "Mailbox entries written to devices."
    );
    describe_counter!(ERRORS, Unit::Count, "Error frames sent to phones, by kind.");
    describe_counter!(
        ABUSE_REFUSALS,
        Unit::Count,
        "Connections, logins and group operations refused by the abuse limits, by limit."
    );
    describe_gauge!(
        ABUSE_TRACKED,
        Unit::Count,
        "Source addresses or users each abuse-limit table holds, by limit."
    );
    describe_counter!(
        ADMIN_REFUSALS,
        Unit::Count,
        "Admin actions (POST /drain, node removal, revocations) refused for their token, by reason."
    );
    describe_counter!(
        FRAMES_OVERSIZED,
        Unit::Count,
        "Outbound frames over max_frame_bytes, dropped instead of written."
    );
    describe_histogram!(
        ACK_LATENCY,
        Unit::Seconds,
        "Send received to ServerAck queued."
    );
    describe_gauge!(
        DISPATCH_QUEUE_DEPTH,
        Unit::Count,
        "Jobs waiting per dispatcher queue."
    );
    describe_counter!(
        DISPATCH_REJECTED,
        Unit::Count,
        "Jobs refused by a full dispatcher queue."
    );
    describe_counter!(
        DISPATCH_PANICS,
        Unit::Count,
        "Dispatcher jobs that panicked."
    );
    describe_counter!(SESSION_PANICS, Unit::Count, "Session actors that panicked.");
    describe_gauge!(
        MAILBOX_ENTRIES,
        Unit::Count,
        "Entries held in mailbox caches."
    );
    describe_gauge!(
        MAILBOX_CACHE_BYTES,
        Unit::Bytes,
        "Approximate bytes held in mailbox caches."
    );
    describe_counter!(
        MAILBOX_READ_ENTRIES,
        Unit::Count,
        "Entries served by mailbox reads, by source (cache or store)."
    );
    describe_counter!(
        EVICTIONS,
        Unit::Count,
        "Mailboxes evicted from the cache to the store."
    );
    describe_counter!(
        EVICTED_ENTRIES,
        Unit::Count,
        "Entries dropped from memory by evictions."
    );
    describe_counter!(
        PAGE_IN_FAILURES,
        Unit::Count,
        "Mailbox reads from the store that failed."
    );
    describe_histogram!(
        GROUP_FANOUT_RECIPIENTS,
        Unit::Count,
        "Recipients per group entry copied by the fan-out."
    );
    describe_histogram!(
        GROUP_FANOUT_SECONDS,
        Unit::Seconds,
        "Group entry accepted until every copy is durable."
    );
    describe_gauge!(
        GROUP_FANOUT_QUEUE,
        Unit::Count,
        "Group entries waiting in the fan-out lanes."
    );
    describe_counter!(
        GROUP_LOG_PRUNED,
        Unit::Count,
        "Entries pruned from large groups' logs (every copy of them acked)."
    );
    describe_counter!(
        PUSHES_SKIPPED,
        Unit::Count,
        "Live pushes skipped (read from mailbox)."
    );
    describe_gauge!(
        RECOVERY_SECONDS,
        Unit::Seconds,
        "Duration of the last journal recovery."
    );
    describe_gauge!(
        RECOVERY_STORE_ENTRIES,
        Unit::Count,
        "Entries the last start loaded from the stores (written back before the restart)."
    );
    describe_gauge!(
        BUILD_INFO,
        Unit::Count,
        "Always 1; the version label names the build the node runs."
    );
    describe_gauge!(
        READY,
        Unit::Count,
        "1 while the node serves phones (GET /readyz answers 200), 0 while it drains or, in a cluster, joins or catches up."
    );
    describe_counter!(
        STORAGE_FAILURES,
        Unit::Count,
        "Appends refused: journal write failed."
    );
    describe_counter!(
        BACKGROUND_TASK_FAILURES,
        Unit::Count,
        "Background tasks or threads that died while the node ran (the node then exits)."
    );
    describe_counter!(CHECKPOINTS, Unit::Count, "Completed checkpoints.");
    describe_counter!(
        CHECKPOINT_FAILURES,
        Unit::Count,
        "Failed write-back passes or checkpoints."
    );
    describe_counter!(
        WRITTEN_BACK,
        Unit::Count,
        "Entries written back to the stores."
    );
    describe_counter!(
        WRITEBACK_STEPS,
        Unit::Count,
        "Steps of write-back passes after their first (a pass yields to queued jobs every 64 KiB of store writes)."
    );
    describe_counter!(TYPING_RELAYED, Unit::Count, "Typing notices relayed.");
    describe_counter!(
        REMOTE_FAILURES,
        Unit::Count,
        "Operations on keys owned by another node that got no answer from it, by cause."
    );
    describe_counter!(
        GROUP_REMOTE_COPIES,
        Unit::Count,
        "Group entries sent to another node for the members it owns (one per entry and node)."
    );
    describe_counter!(
        GROUP_REMOTE_COPY_CALLS,
        Unit::Count,
        "Mesh calls carrying group entries to other nodes."
    );
    describe_counter!(
        GROUP_REMOTE_COPY_FAILURES,
        Unit::Count,
        "Group entries another node did not confirm (sent again later, in order)."
    );
    describe_media();
    describe_counter!(
        PRESENCE_UPDATES,
        Unit::Count,
        "Presence updates sent to subscribers."
    );
}

fn describe_media() {
    describe_counter!(MEDIA_UPLOADS_STARTED, Unit::Count, "Media uploads created.");
    describe_counter!(
        MEDIA_UPLOADS_COMPLETED,
        Unit::Count,
        "Media uploads finished and stored."
    );
    describe_counter!(
        MEDIA_UPLOADS_EXPIRED,
        Unit::Count,
        "Unfinished media uploads deleted at expiry."
    );
    describe_counter!(
        MEDIA_UPLOADS_TERMINATED,
        Unit::Count,
        "Media uploads or media deleted by their owner."
    );
    describe_gauge!(
        MEDIA_UPLOADS_UNFINISHED,
        Unit::Count,
        "Unfinished media uploads held."
    );
    describe_counter!(
        MEDIA_BYTES_IN,
        Unit::Bytes,
        "Media upload bytes received and fsynced."
    );
    describe_counter!(MEDIA_BYTES_OUT, Unit::Bytes, "Media download bytes sent.");
    describe_counter!(
        MEDIA_HOT_CACHE_REQUESTS,
        Unit::Count,
        "Media downloads by result (hit: from memory, miss: from disk)."
    );
    describe_gauge!(
        MEDIA_HOT_CACHE_HIT_RATIO,
        Unit::Count,
        "Share of media downloads served from the hot cache since start."
    );
    describe_gauge!(
        MEDIA_HOT_CACHE_BYTES,
        Unit::Bytes,
        "Bytes held in the media hot cache."
    );
    describe_counter!(
        MEDIA_DEDUP_HITS,
        Unit::Count,
        "Finished uploads whose content was already stored."
    );
    describe_counter!(
        MEDIA_DEDUP_SAVED_BYTES,
        Unit::Bytes,
        "Bytes not stored thanks to media deduplication."
    );
    describe_gauge!(MEDIA_OBJECTS, Unit::Count, "Distinct media objects stored.");
    describe_gauge!(
        MEDIA_STORED_BYTES,
        Unit::Bytes,
        "Bytes of distinct media objects stored."
    );
    describe_histogram!(
        MEDIA_INDEX_SYNC,
        Unit::Seconds,
        "Making one media index change durable: sled flush, then fsync of its files."
    );
    describe_counter!(
        MEDIA_REFILL_OBJECTS,
        Unit::Count,
        "Media objects copied from peers because this node lacked them."
    );
    describe_counter!(
        MEDIA_REFILL_BYTES,
        Unit::Bytes,
        "Bytes of media objects copied from peers."
    );
    describe_counter!(
        MEDIA_REFILL_FAILURES,
        Unit::Count,
        "Media objects lacking here that no peer could supply (tried again)."
    );
    describe_counter!(
        MEDIA_APPLY_FAILURES,
        Unit::Count,
        "Committed media changes this node could not apply (a failing disk)."
    );
    describe_counter!(
        MEDIA_REMOTE_READS,
        Unit::Count,
        "Media downloads streamed from another node's copy."
    );
    describe_counter!(
        MEDIA_PLACED,
        Unit::Count,
        "Media objects made durable on this node for a completion."
    );
    describe_counter!(
        MEDIA_RESPONSES,
        Unit::Count,
        "Media HTTP responses by status class."
    );
}
