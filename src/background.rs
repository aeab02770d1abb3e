//! Background threads yield the CPU to the phones' path.
//!
//! The store threads (sled's writes of write-back passes, its flushes, and the threads sled
//! starts, which inherit the setting) and the journal's reaper do work nobody waits on in the
//! moment; on a node short of cores they would otherwise take turns with the runtime's workers
//! and the journal thread, whose delays every ack waits on. They run at a lower scheduling
//! priority (a nice value, per thread on Linux), as storage engines do with their compactions:
//! when the cores are free they run as fast as before.

/// Nice value of background threads (0 is the default; 19 the lowest priority).
pub const NICE: i32 = 10;

/// Lowers the calling thread's CPU priority to [`NICE`]; a failure (a platform without
/// per-thread priorities) is logged and changes nothing else.
pub fn lower_priority() {
    #[cfg(target_os = "linux")]
    if let Err(error) = rustix::process::setpriority_process(None, NICE) {
        tracing::debug!(%error, "cannot lower this thread's priority");
    }
}
