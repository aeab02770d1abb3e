//! Registers every series at start, at zero, with the label values it can take, so that an alarm
//! (on `tern_checkpoint_failures_total`, say) has a series to watch before the first event.

use super::*;
use crate::proto::v1::ErrorCode;
use crate::session::wire::error_kind;

/// `kind` values of [`ERRORS`] counted without an error frame of their own; the others are the
/// error codes' own kinds (see [`error_kinds`]).
const OTHER_ERROR_KINDS: &[&str] = &[
    "flood",
    "slow_consumer",
    "frame_timeout",
    "linger_overflow",
    "accept",
];

/// `cause` values of [`REMOTE_FAILURES`].
const REMOTE_FAILURE_KINDS: &[&str] = &[
    "unavailable",
    "deadline",
    "call",
    "malformed",
    "not_owner",
    "wan",
];

/// Every `kind` value of [`ERRORS`]: each error code's kind (`session::wire::error_kind`), then
/// the kinds counted without an error frame.
pub fn error_kinds() -> Vec<&'static str> {
    (0..=i32::from(u8::MAX))
        .filter_map(|code| ErrorCode::try_from(code).ok())
        .map(error_kind)
        .chain(OTHER_ERROR_KINDS.iter().copied())
        .collect()
}

/// `result` values of [`LOGINS`].
pub const LOGIN_RESULTS: &[&str] = &[
    "ok",
    "bad_token",
    "expired",
    "bad_version",
    "protocol",
    "overloaded",
    "shutting_down",
    "flood_penalty",
    "elsewhere",
    "revoked",
    "logins_per_ip",
];

/// `reason` values of [`DISCONNECTS`] besides the error kinds (a connection closed after an
/// error frame counts the error's kind): how the peer left, and the GoAway reasons.
pub const DISCONNECT_REASONS: &[&str] = &[
    "peer_closed",
    "socket_error",
    "shutdown",
    "slow_consumer",
    "replaced",
    "idle",
    "flood",
    "go_away",
    "elsewhere",
];

/// `task` values of [`BACKGROUND_TASK_FAILURES`].
pub const BACKGROUND_TASKS: &[&str] = &[
    "journal",
    "store",
    "mailbox_worker",
    "fanout_lane",
    "push_scheduler",
    "checkpointer",
    "sweeper",
    "media_expiry",
    "accept",
    "peer_addrs",
    "tls_reload",
];

/// `service` values of the dispatcher metrics.
pub const DISPATCH_SERVICES: &[&str] = &["mailbox"];
/// `lane` values of the dispatcher metrics.
pub const DISPATCH_LANES: &[&str] = &["write", "read", "internal"];
/// `status` values of [`MEDIA_RESPONSES`].
pub const MEDIA_STATUS_CLASSES: &[&str] = &["2xx", "3xx", "4xx", "5xx"];

/// Counters without labels.
const COUNTERS: &[&str] = &[
    CONNECTIONS_ACCEPTED,
    GROUP_REMOTE_COPIES,
    GROUP_REMOTE_COPY_CALLS,
    GROUP_REMOTE_COPY_FAILURES,
    FRAMES_IN,
    FRAMES_OUT,
    BYTES_IN,
    BYTES_OUT,
    SOCKET_WRITES,
    MESSAGES_IN,
    MESSAGES_DUPLICATE,
    MESSAGES_OUT,
    FRAMES_OVERSIZED,
    SESSION_PANICS,
    EVICTIONS,
    EVICTED_ENTRIES,
    PAGE_IN_FAILURES,
    GROUP_LOG_PRUNED,
    PUSHES_SKIPPED,
    STORAGE_FAILURES,
    CHECKPOINTS,
    CHECKPOINT_FAILURES,
    WRITTEN_BACK,
    WRITEBACK_STEPS,
    TYPING_RELAYED,
    PRESENCE_UPDATES,
    MEDIA_UPLOADS_STARTED,
    MEDIA_UPLOADS_COMPLETED,
    MEDIA_UPLOADS_EXPIRED,
    MEDIA_UPLOADS_TERMINATED,
    MEDIA_BYTES_IN,
    MEDIA_BYTES_OUT,
    MEDIA_DEDUP_HITS,
    MEDIA_DEDUP_SAVED_BYTES,
    MEDIA_REFILL_OBJECTS,
    MEDIA_REFILL_BYTES,
    MEDIA_REFILL_FAILURES,
    MEDIA_REMOTE_READS,
    MEDIA_APPLY_FAILURES,
    MEDIA_PLACED,
    crate::journal::telemetry::BYTES_WRITTEN,
    crate::journal::telemetry::FAILURES,
    crate::cluster::raft::slot::telemetry::PURGES,
    crate::cluster::raft::slot::telemetry::COMPACTIONS,
    crate::cluster::raft::slot::telemetry::SNAPSHOTS_SENT,
    crate::cluster::raft::slot::telemetry::SNAPSHOTS_INSTALLED,
    crate::cluster::raft::slot::telemetry::SNAPSHOT_FAILURES,
];

/// Gauges without labels.
const GAUGES: &[&str] = &[
    READY,
    CONNECTIONS,
    SESSIONS,
    MAILBOX_ENTRIES,
    MAILBOX_CACHE_BYTES,
    GROUP_FANOUT_QUEUE,
    RECOVERY_SECONDS,
    RECOVERY_STORE_ENTRIES,
    MEDIA_UPLOADS_UNFINISHED,
    MEDIA_HOT_CACHE_HIT_RATIO,
    MEDIA_HOT_CACHE_BYTES,
    MEDIA_OBJECTS,
    MEDIA_STORED_BYTES,
    crate::journal::telemetry::SEGMENTS,
    crate::cluster::raft::slot::telemetry::LOG_ENTRIES,
];

/// Histograms without labels.
const HISTOGRAMS: &[&str] = &[
    ACK_LATENCY,
    GROUP_FANOUT_RECIPIENTS,
    GROUP_FANOUT_SECONDS,
    MEDIA_INDEX_SYNC,
    crate::journal::telemetry::FSYNC_SECONDS,
    crate::journal::telemetry::BATCH_RECORDS,
];

/// Creates every series (a handle the recorder keeps; values stay as they are, zero at start).
/// Series labelled per store database or dispatcher shard are created by their owners at start.
pub fn register() {
    for name in COUNTERS {
        let _ = metrics::counter!(*name);
    }
    for name in GAUGES {
        let _ = metrics::gauge!(*name);
    }
    for name in HISTOGRAMS {
        let _ = metrics::histogram!(*name);
    }
    let error_kinds = error_kinds();
    for kind in &error_kinds {
        let _ = metrics::counter!(ERRORS, "kind" => *kind);
    }
    for result in LOGIN_RESULTS {
        let _ = metrics::counter!(LOGINS, "result" => *result);
    }
    for reason in DISCONNECT_REASONS.iter().chain(&error_kinds) {
        let _ = metrics::counter!(DISCONNECTS, "reason" => *reason);
    }
    for task in BACKGROUND_TASKS {
        let _ = metrics::counter!(BACKGROUND_TASK_FAILURES, "task" => *task);
    }
    for kind in REMOTE_FAILURE_KINDS {
        let _ = metrics::counter!(REMOTE_FAILURES, "cause" => *kind);
    }
    for service in DISPATCH_SERVICES {
        let _ = metrics::counter!(DISPATCH_PANICS, "service" => *service);
        for lane in DISPATCH_LANES {
            let _ = metrics::counter!(DISPATCH_REJECTED, "service" => *service, "lane" => *lane);
        }
    }
    for limit in crate::limits::Limit::ALL {
        let _ = metrics::counter!(ABUSE_REFUSALS, "limit" => limit.label());
        let _ = metrics::gauge!(ABUSE_TRACKED, "limit" => limit.label());
    }
    for reason in ["no_token_configured", "bad_token"] {
        let _ = metrics::counter!(ADMIN_REFUSALS, "reason" => reason);
    }
    for source in ["cache", "store"] {
        let _ = metrics::counter!(MAILBOX_READ_ENTRIES, "source" => source);
    }
    for result in ["hit", "miss"] {
        let _ = metrics::counter!(MEDIA_HOT_CACHE_REQUESTS, "result" => result);
    }
    for class in MEDIA_STATUS_CLASSES {
        let _ = metrics::counter!(MEDIA_RESPONSES, "status" => *class);
    }
    for listener in crate::tls::LISTENERS {
        let _ = metrics::counter!(crate::tls::HANDSHAKES, "listener" => *listener);
        for failure in crate::tls::FAILURE_KINDS {
            let _ = metrics::counter!(
                crate::tls::FAILURES,
                "listener" => *listener,
                "failure" => *failure
            );
        }
    }
    for outcome in ["ok", "failed"] {
        let _ = metrics::counter!(crate::tls::RELOADS, "outcome" => outcome);
    }
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    crate::push::telemetry::register();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The label values counted in the code are all registered at start: every literal that
    /// follows `"kind" =>`, `"result" =>`, `"reason" =>` or `"task" =>`, or names a login
    /// refusal, a session close or a supervised task, is in its list.
    #[test]
    fn every_label_value_in_the_code_is_registered() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = vec![root];
        let mut missing = Vec::new();
        while let Some(path) = files.pop() {
            if path.is_dir() {
                for entry in std::fs::read_dir(&path).unwrap() {
                    files.push(entry.unwrap().path());
                }
                continue;
            }
            if path.extension().is_none_or(|ext| ext != "rs") || path.ends_with("register.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            // Unit tests use labels of their own.
            let text = text.split("#[cfg(test)]").next().unwrap_or("");
            let text: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
            let error_kinds = error_kinds();
            let checks: [(&str, Vec<&str>); 6] = [
                ("\"kind\" => \"", error_kinds.clone()),
                ("\"result\" => \"", LOGIN_RESULTS.to_vec()),
                (
                    "\"reason\" => \"",
                    [DISCONNECT_REASONS, &error_kinds].concat(),
                ),
                ("close(\"", [DISCONNECT_REASONS, &error_kinds].concat()),
                ("task: \"", BACKGROUND_TASKS.to_vec()),
                ("supervise( \"", BACKGROUND_TASKS.to_vec()),
            ];
            for (prefix, known) in checks {
                for (at, _) in text.match_indices(prefix) {
                    let rest = &text[at + prefix.len()..];
                    let value = rest.split('"').next().unwrap_or("");
                    if !known.contains(&value) {
                        missing.push(format!("{}: {prefix}{value}", path.display()));
                    }
                }
            }
            for (at, _) in text.match_indices("self.refuse(") {
                let call = text[at..].split(");").next().unwrap_or("");
                if !call.trim_end_matches([',', ' ']).ends_with('"') {
                    continue;
                }
                let result = call
                    .rsplit(", \"")
                    .next()
                    .unwrap_or("")
                    .trim_end_matches([',', ' ', '"']);
                if !LOGIN_RESULTS.contains(&result) {
                    missing.push(format!("{}: refuse {result}", path.display()));
                }
            }
        }
        assert!(
            missing.is_empty(),
            "label values not registered: {missing:?}"
        );
    }
}
