//! The optional `[push]` section: which push gateway, where, and how hard to try.

use serde::Deserialize;

/// The request format the gateway speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GatewayKind {
    /// gorush: `POST /api/push` with `{"notifications": [...]}`.
    Gorush,
    /// The Matrix push gateway API (Sygnal): `POST /_matrix/push/v1/notify`.
    Matrix,
}

/// The `[push]` section; absent, nothing is pushed and nothing of it runs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PushConfig {
    /// The gateway's request format. Default: `gorush`.
    pub gateway: GatewayKind,
    /// The gateway's URL, `http://host:port/path` (the path of the push endpoint, e.g.
    /// `/api/push` for gorush, `/_matrix/push/v1/notify` for Sygnal). Default:
    /// `http://127.0.0.1:8088/api/push`.
    pub url: String,
    /// Milliseconds after a message for a device with no live session before its push is
    /// sent: messages arriving meanwhile join the same push. Default: 250.
    pub offline_delay_ms: u64,
    /// Milliseconds a device with a live session has to ack a message before it is pushed
    /// anyway (the app may be in the background with its socket still open). Default: 5000.
    pub ack_grace_ms: u64,
    /// Seconds after a push before a device that still has not caught up is pushed again for
    /// newer messages; until then they are collapsed into the outstanding push. Default: 300.
    pub renotify_secs: u64,
    /// Pushes waiting for the gateway on this node at most; past it they are dropped and
    /// counted as dead letters. Default: 4096.
    pub queue: usize,
    /// Connections to the gateway (each keep-alive, one request at a time). Default: 4.
    pub connections: usize,
    /// Milliseconds a gateway request may take, connecting included, before it is abandoned
    /// and retried. Default: 10000.
    pub timeout_ms: u64,
    /// First pause before a retry, in milliseconds; doubled after each failure, with jitter.
    /// Default: 500.
    pub retry_base_ms: u64,
    /// Longest pause between two retries, in milliseconds. Default: 30000.
    pub retry_max_ms: u64,
    /// Seconds a push is retried, counted from its first attempt, before it is given up as a
    /// dead letter (0: one attempt only). Default: 600.
    pub retry_for_secs: u64,
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            gateway: GatewayKind::Gorush,
            url: "http://127.0.0.1:8088/api/push".to_owned(),
            offline_delay_ms: 250,
            ack_grace_ms: 5000,
            renotify_secs: 300,
            queue: 4096,
            connections: 4,
            timeout_ms: 10_000,
            retry_base_ms: 500,
            retry_max_ms: 30_000,
            retry_for_secs: 600,
        }
    }
}

impl PushConfig {
    /// Every problem with these settings, one line each; empty if they are valid.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut check = |ok: bool, problem: &str| {
            if !ok {
                problems.push(problem.to_owned());
            }
        };
        check(
            self.url.starts_with("http://"),
            "push.url must be an http:// URL (run TLS to the gateway through a local proxy)",
        );
        check(self.queue > 0, "push.queue must be at least 1");
        check(
            (1..=64).contains(&self.connections),
            "push.connections must be 1-64",
        );
        check(self.timeout_ms > 0, "push.timeout_ms must be positive");
        check(
            self.retry_base_ms > 0,
            "push.retry_base_ms must be positive",
        );
        check(
            self.retry_max_ms >= self.retry_base_ms,
            "push.retry_max_ms must be at least push.retry_base_ms",
        );
        check(
            self.ack_grace_ms <= 600_000,
            "push.ack_grace_ms must be at most 600000",
        );
        problems
    }
}
