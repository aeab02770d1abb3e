//! The standard `process_*` metrics (CPU seconds, memory, file descriptors, start time), read
//! from `/proc/self` at each scrape and written in the Prometheus text format. Where `/proc` is
//! missing (not Linux) the series are left out.

use std::fmt::Write;

/// Total user and system CPU time, in seconds.
pub const CPU_SECONDS: &str = "process_cpu_seconds_total";
/// Open file descriptors.
pub const OPEN_FDS: &str = "process_open_fds";
/// The soft limit on open file descriptors (`ulimit -n`).
pub const MAX_FDS: &str = "process_max_fds";
/// Virtual memory size, in bytes.
pub const VIRTUAL_MEMORY: &str = "process_virtual_memory_bytes";
/// Resident set size, in bytes.
pub const RESIDENT_MEMORY: &str = "process_resident_memory_bytes";
/// Start time of the process since the Unix epoch, in seconds.
pub const START_TIME: &str = "process_start_time_seconds";

/// Clock ticks per second of the times in `/proc/self/stat` (`USER_HZ`): 100 on every Linux
/// architecture, a fixed part of the kernel's ABI.
const TICKS_PER_SECOND: f64 = 100.0;

/// Appends the process metrics to `out`.
pub fn render(out: &mut String) {
    let stat = std::fs::read_to_string("/proc/self/stat").ok();
    // Fields after the command name, which is in parentheses and may itself hold spaces.
    let fields: Vec<&str> = stat
        .as_deref()
        .and_then(|stat| stat.rsplit_once(')'))
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |index: usize| {
        fields
            .get(index)
            .and_then(|value| value.parse::<f64>().ok())
    };
    // Indices counted from the state field (the third of proc_pid_stat(5)).
    if let (Some(user), Some(system)) = (field(11), field(12)) {
        let seconds = (user + system) / TICKS_PER_SECOND;
        family(
            out,
            CPU_SECONDS,
            "counter",
            "Total user and system CPU time spent in seconds.",
            seconds,
        );
    }
    if let Some(fds) = open_fds() {
        family(
            out,
            OPEN_FDS,
            "gauge",
            "Number of open file descriptors.",
            fds,
        );
    }
    if let Some(max) = max_fds() {
        family(
            out,
            MAX_FDS,
            "gauge",
            "Maximum number of open file descriptors (soft limit).",
            max,
        );
    }
    if let Some(bytes) = field(20) {
        family(
            out,
            VIRTUAL_MEMORY,
            "gauge",
            "Virtual memory size in bytes.",
            bytes,
        );
    }
    if let Some(bytes) = resident_bytes() {
        family(
            out,
            RESIDENT_MEMORY,
            "gauge",
            "Resident memory size in bytes.",
            bytes,
        );
    }
    if let (Some(ticks), Some(boot)) = (field(19), boot_time()) {
        family(
            out,
            START_TIME,
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            boot + ticks / TICKS_PER_SECOND,
        );
    }
}

/// Writes one family with a single unlabelled sample.
fn family(out: &mut String, name: &str, kind: &str, help: &str, value: f64) {
    let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} ");
    // An unlimited limit: the text format spells infinity `+Inf`.
    let _ = if value.is_infinite() {
        writeln!(out, "+Inf\n")
    } else {
        writeln!(out, "{value}\n")
    };
}

fn open_fds() -> Option<f64> {
    let entries = std::fs::read_dir("/proc/self/fd").ok()?;
    Some(entries.count() as f64)
}

/// The soft limit of "Max open files" in `/proc/self/limits`.
fn max_fds() -> Option<f64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))?;
    let soft = line.split_whitespace().next()?;
    match soft {
        "unlimited" => Some(f64::INFINITY),
        soft => soft.parse().ok(),
    }
}

/// `VmRSS` of `/proc/self/status` (in kB there), in bytes.
fn resident_bytes() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().next()?.parse().ok()?;
    Some(kib * 1024.0)
}

/// Boot time, seconds since the epoch (`btime` of `/proc/stat`).
fn boot_time() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|line| line.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_family_has_help_type_and_a_value() {
        let mut out = String::new();
        super::render(&mut out);
        if !std::path::Path::new("/proc/self/stat").exists() {
            return;
        }
        for name in [
            super::CPU_SECONDS,
            super::OPEN_FDS,
            super::MAX_FDS,
            super::VIRTUAL_MEMORY,
            super::RESIDENT_MEMORY,
            super::START_TIME,
        ] {
            assert!(out.contains(&format!("# HELP {name} ")), "{out}");
            assert!(out.contains(&format!("# TYPE {name} ")), "{out}");
            let value = out
                .lines()
                .find_map(|line| line.strip_prefix(&format!("{name} ")))
                .and_then(|value| value.parse::<f64>().ok());
            assert!(value.is_some_and(|value| value >= 0.0), "{name}: {out}");
        }
    }
}
