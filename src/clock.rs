//! Time sources, one per purpose:
//! - wall clock ([`now_ms`], [`now_secs`]): what users see (message timestamps, token expiry,
//!   login times). It can step backwards or forwards, so nothing that decides what is safe to
//!   drop may compare it.
//! - the process's monotonic clock ([`monotonic_ms`], [`uptime_secs`]): time elapsed since the
//!   process started, which never goes backwards. Write-back ages, checkpoint samples and
//!   timeouts use it. Its stamps mean nothing across a restart and are never stored.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    now_ms() / 1000
}

/// The process's start on the monotonic clock (the first call to any monotonic source).
fn start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// Milliseconds since the process started, on the monotonic clock: never decreases, whatever
/// happens to the wall clock.
pub fn monotonic_ms() -> u64 {
    u64::try_from(start().elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Microseconds since the process started, on the monotonic clock (the abuse limits' token
/// buckets, whose rates go down to one event a minute and up to thousands a second).
pub fn monotonic_us() -> u64 {
    u64::try_from(start().elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Whole seconds since the process started, for last-activity stamps (fits in a `u32`).
pub fn uptime_secs() -> u32 {
    u32::try_from(start().elapsed().as_secs()).unwrap_or(u32::MAX)
}
