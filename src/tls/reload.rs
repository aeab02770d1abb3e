//! The reload task: on SIGHUP, and every `tls.reload_check_secs` when a certificate or key
//! file changed (a renewal tool rewrote it), the node loads its TLS files again. Established
//! connections keep the session they negotiated; the next handshakes use the new files. A
//! file that does not load is logged and counted, and the node keeps the previous ones.

use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use super::TlsContext;

/// Starts the reload task of `tls` (none when no listener has TLS files); it ends with `stop`.
pub fn spawn_reloader(
    tls: Arc<TlsContext>,
    stop: CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    if !tls.has_files() {
        return None;
    }
    Some(tokio::spawn(async move {
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(hangup) => Some(hangup),
            Err(error) => {
                tracing::warn!(%error, "cannot handle SIGHUP; TLS files reload only when they change");
                None
            }
        };
        let period = Duration::from_secs(tls.check_secs().max(1));
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let asked = tokio::select! {
                () = stop.cancelled() => return,
                Some(()) = async { hangup.as_mut()?.recv().await } => true,
                _ = ticks.tick() => false,
            };
            let changed = !asked && tls.check_secs() > 0 && tls.files_changed();
            if !asked && !changed {
                continue;
            }
            let why = if asked { "SIGHUP" } else { "files changed" };
            match tls.reload() {
                Ok(()) => tracing::info!(why, "TLS certificates reloaded"),
                Err(error) => {
                    tracing::error!(why, %error, "TLS certificates not reloaded; keeping the previous ones");
                }
            }
        }
    }))
}
