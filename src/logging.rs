//! Logging setup for the binary: the `RUST_LOG` filter (an invalid one is an error, not a silent
//! `info`), text or JSON lines on stderr, and colours only when stderr is a terminal. Lines about
//! events that come in floods go through a [`throttle::Throttle`].

pub mod throttle;

use std::io::IsTerminal;
use std::process::ExitCode;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::ParseError;

/// The filter when `RUST_LOG` is unset or empty: openraft's own lines only from warnings up
/// (at info it writes several lines per election, snapshot and purge of every group; tern logs
/// what an operator acts on itself).
const DEFAULT_FILTER: &str = "info,openraft=warn";

/// Added to every filter that does not name ractor itself. ractor opens an info-level span for
/// every actor's whole life (`Actor{id=..}`); enabled, each phone's session keeps one in the
/// subscriber's registry with its formatted fields (about 600 bytes per idle phone, measured in
/// docs/benchmarks.md) and enters it at every poll. tern's own lines name the connection and
/// user they are about.
const RACTOR_FILTER: &str = "ractor=warn";

/// Exit code when logging cannot be set up from the environment: 64 (sysexits' EX_USAGE), as
/// for an invalid configuration: the invocation must be fixed.
const EXIT_USAGE: u8 = 64;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (coloured when stderr is a terminal).
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Command-line options for logging.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LogOptions {
    /// Log line format on stderr: `text`, or `json` (one object per line).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// `RUST_LOG` is not a valid filter.
    #[error("invalid RUST_LOG {value:?}: {source}")]
    BadFilter {
        /// The variable's value.
        value: String,
        /// What the parser objected to.
        source: ParseError,
    },
    /// `RUST_LOG` is not valid UTF-8.
    #[error("invalid RUST_LOG: not valid UTF-8")]
    NotUnicode,
    /// Another global subscriber was installed first.
    #[error("cannot install the log subscriber: {0}")]
    Install(String),
}

/// Sets up logging for the process, or prints why it cannot and returns the exit code (64) for
/// the caller to exit with.
pub fn init_or_exit(options: &LogOptions) -> Result<(), ExitCode> {
    init(options).map_err(|error| {
        eprintln!("tern: {error}");
        ExitCode::from(EXIT_USAGE)
    })
}

/// Installs the global subscriber: `RUST_LOG`'s filter (default `info`), lines on stderr in the
/// chosen format, ANSI colours only when stderr is a terminal and `NO_COLOR` is unset. Lines
/// that cannot be written are dropped, so a node outlives its stderr.
pub fn init(options: &LogOptions) -> Result<(), LoggingError> {
    let filter = filter_from(std::env::var("RUST_LOG"))?;
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        // A log line that cannot be written (stderr closed with its terminal, a log pipe gone) is
        // dropped: reporting the failure on that same stderr would panic the node.
        .log_internal_errors(false);
    let installed = match options.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    installed.map_err(|error| LoggingError::Install(error.to_string()))
}

/// The filter `RUST_LOG` asks for: the default when unset or blank, an error when invalid.
fn filter_from(value: Result<String, std::env::VarError>) -> Result<EnvFilter, LoggingError> {
    let value = match value {
        Ok(value) if !value.trim().is_empty() => value,
        Ok(_) | Err(std::env::VarError::NotPresent) => DEFAULT_FILTER.to_owned(),
        Err(std::env::VarError::NotUnicode(_)) => return Err(LoggingError::NotUnicode),
    };
    let value = if value.contains("ractor") {
        value
    } else {
        format!("{value},{RACTOR_FILTER}")
    };
    EnvFilter::builder()
        .parse(&value)
        .map_err(|source| LoggingError::BadFilter { value, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_or_blank_rust_log_means_the_default_and_an_invalid_one_is_an_error() {
        let default = EnvFilter::builder()
            .parse(format!("{DEFAULT_FILTER},{RACTOR_FILTER}"))
            .unwrap()
            .to_string();
        assert!(default.contains("openraft=warn") && default.contains("info"));
        let unset = filter_from(Err(std::env::VarError::NotPresent)).unwrap();
        assert_eq!(unset.to_string(), default);
        let blank = filter_from(Ok(" ".to_owned())).unwrap();
        assert_eq!(blank.to_string(), default);
        let chosen = filter_from(Ok("tern=debug,warn".to_owned())).unwrap();
        assert!(chosen.to_string().contains("tern=debug"));
        // ractor's per-actor span stays off unless the filter names ractor.
        assert!(chosen.to_string().contains("ractor=warn"));
        let named = filter_from(Ok("debug,ractor=trace".to_owned())).unwrap();
        assert!(named.to_string().contains("ractor=trace"));
        assert!(!named.to_string().contains("ractor=warn"));
        for bad in ["tern=loud", "tern[=debug", "=info="] {
            assert!(
                matches!(
                    filter_from(Ok(bad.to_owned())),
                    Err(LoggingError::BadFilter { .. })
                ),
                "{bad} accepted"
            );
        }
    }
}
