//! What the kernel says about the server under test: a process's resident memory and CPU time
//! (`/proc/PID/status`, `/proc/PID/stat`) and the TCP socket memory of the whole network
//! namespace (`/proc/net/sockstat`), so that any server (tern, mosquitto) is measured alike.

use std::path::{Path, PathBuf};

/// Page size when `/proc/self/auxv` cannot be read.
const DEFAULT_PAGE_SIZE: u64 = 4096;
/// Clock ticks per second when `/proc/self/auxv` cannot be read (Linux's USER_HZ).
const DEFAULT_CLOCK_TICKS: u64 = 100;
/// auxv entry types (`<elf.h>`).
const AT_PAGESZ: usize = 6;
const AT_CLKTCK: usize = 17;

/// Why a reading failed.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// The file could not be read (e.g. the process is gone).
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file does not hold what was looked for.
    #[error("{path}: no {what}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The field that was missing or malformed.
        what: &'static str,
    },
}

/// One process at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessSample {
    /// Resident memory (VmRSS), bytes.
    pub rss_bytes: u64,
    /// User plus system CPU time, microseconds.
    pub cpu_us: u64,
}

/// The namespace's TCP sockets at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SocketSample {
    /// TCP sockets in use.
    pub tcp_inuse: u64,
    /// Memory the kernel holds for TCP buffers, bytes (`mem` pages times the page size).
    pub tcp_mem_bytes: u64,
}

/// The page size and clock tick rate of this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Machine {
    /// Bytes per page.
    pub page_size: u64,
    /// Clock ticks per second (the unit of `/proc/PID/stat` times).
    pub clock_ticks: u64,
}

impl Machine {
    /// Reads both from the auxiliary vector; falls back to 4096 and 100.
    pub fn read() -> Self {
        let auxv = std::fs::read("/proc/self/auxv").unwrap_or_default();
        Self::from_auxv(&auxv)
    }

    fn from_auxv(auxv: &[u8]) -> Self {
        let mut machine = Self {
            page_size: DEFAULT_PAGE_SIZE,
            clock_ticks: DEFAULT_CLOCK_TICKS,
        };
        let word = std::mem::size_of::<usize>();
        let value = |bytes: &[u8]| {
            bytes
                .try_into()
                .map(usize::from_ne_bytes)
                .ok()
                .and_then(|v| u64::try_from(v).ok())
                .filter(|v| *v > 0)
        };
        for entry in auxv.chunks_exact(2 * word) {
            let (key, val) = entry.split_at(word);
            let key = value(key).and_then(|k| usize::try_from(k).ok());
            match (key, value(val)) {
                (Some(AT_PAGESZ), Some(v)) => machine.page_size = v,
                (Some(AT_CLKTCK), Some(v)) => machine.clock_ticks = v,
                _ => {}
            }
        }
        machine
    }
}

fn read(path: &Path) -> Result<String, ProcError> {
    std::fs::read_to_string(path).map_err(|source| ProcError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Reads process `pid`'s memory and CPU time.
pub fn sample_process(pid: u32, machine: Machine) -> Result<ProcessSample, ProcError> {
    let status_path = PathBuf::from(format!("/proc/{pid}/status"));
    let stat_path = PathBuf::from(format!("/proc/{pid}/stat"));
    let rss_bytes = parse_rss(&read(&status_path)?).ok_or(ProcError::Parse {
        path: status_path,
        what: "VmRSS",
    })?;
    let ticks = parse_cpu_ticks(&read(&stat_path)?).ok_or(ProcError::Parse {
        path: stat_path,
        what: "utime and stime",
    })?;
    Ok(ProcessSample {
        rss_bytes,
        cpu_us: ticks.saturating_mul(1_000_000) / machine.clock_ticks.max(1),
    })
}

/// Reads the namespace's TCP socket figures.
pub fn sample_sockets(machine: Machine) -> Result<SocketSample, ProcError> {
    let path = PathBuf::from("/proc/net/sockstat");
    let (tcp_inuse, pages) = parse_sockstat(&read(&path)?).ok_or(ProcError::Parse {
        path,
        what: "TCP inuse and mem",
    })?;
    Ok(SocketSample {
        tcp_inuse,
        tcp_mem_bytes: pages.saturating_mul(machine.page_size),
    })
}

/// This process's soft limit on open files (`Max open files` in `/proc/self/limits`); `None`
/// when unreadable or unlimited.
pub fn open_file_limit() -> Option<u64> {
    parse_open_files(&std::fs::read_to_string("/proc/self/limits").ok()?)
}

fn parse_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A server process watched from `start` on, for scenarios that are not coordinated in phases.
#[derive(Debug, Clone, Copy)]
pub struct Watch {
    pid: u32,
    machine: Machine,
    first: ProcessSample,
    began: std::time::Instant,
}

/// What a [`Watch`] saw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Watched {
    /// CPU time used since the start, µs.
    pub cpu_us: u64,
    /// Wall time since the start, seconds.
    pub wall_s: f64,
    /// Resident memory now, bytes.
    pub rss_bytes: u64,
}

impl Watch {
    /// Starts watching `pid` (nothing to watch without one).
    pub fn start(pid: Option<u32>) -> Result<Option<Self>, ProcError> {
        let Some(pid) = pid else {
            return Ok(None);
        };
        let machine = Machine::read();
        Ok(Some(Self {
            pid,
            machine,
            first: sample_process(pid, machine)?,
            began: std::time::Instant::now(),
        }))
    }

    /// The figures since the start.
    pub fn read(&self) -> Result<Watched, ProcError> {
        let now = sample_process(self.pid, self.machine)?;
        Ok(Watched {
            cpu_us: now.cpu_us.saturating_sub(self.first.cpu_us),
            wall_s: self.began.elapsed().as_secs_f64(),
            rss_bytes: now.rss_bytes,
        })
    }
}

/// `VmRSS:   1234 kB` in bytes.
fn parse_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// utime + stime (fields 14 and 15) in clock ticks. The command name (field 2) may hold spaces
/// and parentheses, so fields are counted from the last `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// `TCP: inuse N orphan N tw N alloc N mem N` → (inuse, mem pages).
fn parse_sockstat(sockstat: &str) -> Option<(u64, u64)> {
    let line = sockstat.lines().find(|l| l.starts_with("TCP:"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let field = |name: &str| -> Option<u64> {
        let at = words.iter().position(|w| *w == name)?;
        words.get(at + 1)?.parse().ok()
    };
    Some((field("inuse")?, field("mem")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_is_read_in_bytes() {
        let status = "Name:\ttern\nVmPeak:\t  9000 kB\nVmRSS:\t   1234 kB\nThreads:\t3\n";
        assert_eq!(parse_rss(status), Some(1234 * 1024));
        assert_eq!(parse_rss("Name:\tx\n"), None);
    }

    #[test]
    fn cpu_fields_are_counted_after_the_command_name() {
        // A command name with spaces and a parenthesis must not shift the fields.
        let stat = "42 (we(ird) name) S 1 42 42 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
        assert_eq!(parse_cpu_ticks("42 (x) S 1"), None);
    }

    #[test]
    fn the_soft_open_file_limit_is_read() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max processes             95000                95000                processes\n\
                      Max open files            20000                40000                files\n";
        assert_eq!(parse_open_files(limits), Some(20_000));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_open_files(unlimited), None);
        assert!(open_file_limit().is_some_and(|n| n > 0));
    }

    #[test]
    fn sockstat_gives_sockets_and_pages() {
        let text =
            "sockets: used 10\nTCP: inuse 7 orphan 0 tw 3 alloc 9 mem 12\nUDP: inuse 0 mem 0\n";
        assert_eq!(parse_sockstat(text), Some((7, 12)));
        assert_eq!(parse_sockstat("UDP: inuse 0 mem 0\n"), None);
    }

    #[test]
    fn the_auxiliary_vector_gives_page_size_and_clock_ticks() {
        let mut auxv = Vec::new();
        for (key, value) in [
            (3usize, 99usize),
            (AT_PAGESZ, 16384),
            (AT_CLKTCK, 250),
            (0, 0),
        ] {
            auxv.extend_from_slice(&key.to_ne_bytes());
            auxv.extend_from_slice(&value.to_ne_bytes());
        }
        let m = Machine::from_auxv(&auxv);
        assert_eq!((m.page_size, m.clock_ticks), (16384, 250));
        let fallback = Machine::from_auxv(&[]);
        assert_eq!((fallback.page_size, fallback.clock_ticks), (4096, 100));
        assert!(Machine::read().page_size >= 4096);
    }

    #[test]
    fn this_process_can_be_sampled() {
        let m = Machine::read();
        let me = sample_process(std::process::id(), m).unwrap();
        assert!(me.rss_bytes > 0);
        assert!(sample_sockets(m).is_ok());
        assert!(matches!(
            sample_process(u32::MAX, m),
            Err(ProcError::Read { .. })
        ));
    }
}
