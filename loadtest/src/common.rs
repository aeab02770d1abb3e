//! The flags the measured scenarios (idle, chat, storm) share: which server and of which kind,
//! how to print, which process to measure, and how many worker processes to spread over.

use crate::procfs;
use crate::target::ServerArgs;

/// File descriptors a process keeps for itself besides its connections.
const FD_RESERVE: u64 = 512;
/// Connections per worker when the open-file limit cannot be read.
const DEFAULT_PER_PROCESS: u64 = 15_000;

/// The kind of server under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TargetKind {
    /// tern's protocol: length-prefixed protobuf frames.
    Tern,
    /// MQTT 3.1.1 over TCP (e.g. mosquitto), for a side-by-side comparison.
    Mqtt,
}

impl TargetKind {
    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tern => "tern",
            Self::Mqtt => "mqtt",
        }
    }
}

/// Flags shared by the measured scenarios.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Protocol of the server under test.
    #[arg(long, value_enum, default_value_t = TargetKind::Tern)]
    pub target: TargetKind,
    /// Print the figures as one JSON object (the last line on stdout).
    #[arg(long)]
    pub json: bool,
    /// The server's process id: its memory and CPU time are read from /proc.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Worker processes to spread the connections over; by default enough to stay under the
    /// open-file limit (1 runs everything in this process).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Set by the parent in a worker process: which share of the connections it runs.
    #[arg(long, hide = true, requires = "workers")]
    pub worker_index: Option<usize>,
}

impl CommonArgs {
    /// Worker processes for `connections` connections in groups of `align` (the groups are not
    /// split): `--workers`, or as many as the open-file limit requires.
    pub fn worker_count(&self, connections: usize, align: usize) -> usize {
        let groups = connections.div_ceil(align.max(1)).max(1);
        let wanted = self.workers.unwrap_or_else(|| {
            let limit = procfs::open_file_limit().unwrap_or(DEFAULT_PER_PROCESS + FD_RESERVE);
            let per_process = limit.saturating_sub(FD_RESERVE).max(1);
            usize::try_from((connections as u64).div_ceil(per_process)).unwrap_or(usize::MAX)
        });
        wanted.clamp(1, groups)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        common: CommonArgs,
    }

    fn parse(args: &[&str]) -> CommonArgs {
        Cli::parse_from(std::iter::once("x").chain(args.iter().copied())).common
    }

    #[test]
    fn explicit_worker_counts_are_kept_within_the_groups() {
        assert_eq!(parse(&["--workers", "3"]).worker_count(100, 2), 3);
        assert_eq!(parse(&["--workers", "8"]).worker_count(6, 2), 3);
        assert_eq!(parse(&["--workers", "0"]).worker_count(6, 2), 1);
    }

    #[test]
    fn by_default_each_worker_stays_under_the_open_file_limit() {
        let common = parse(&[]);
        let limit = procfs::open_file_limit().unwrap_or(DEFAULT_PER_PROCESS + FD_RESERVE);
        let per = limit - FD_RESERVE;
        assert_eq!(common.worker_count(10, 1), 1);
        assert_eq!(common.worker_count(per as usize, 1), 1);
        assert_eq!(common.worker_count(per as usize + 1, 1), 2);
    }

    #[test]
    fn the_worker_index_needs_a_worker_count() {
        let cli = Cli::try_parse_from(["x", "--worker-index", "1"]);
        assert!(cli.is_err());
        let common = parse(&["--workers", "2", "--worker-index", "1", "--target", "mqtt"]);
        assert_eq!(common.worker_index, Some(1));
        assert_eq!(common.target, TargetKind::Mqtt);
    }
}
