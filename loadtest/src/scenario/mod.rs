//! The scenarios, one module each. A scenario takes its clap arguments and returns a
//! [`Verdict`] (or an error when it could not run at all).

pub mod chat;
pub mod chat_cli;
pub mod flood;
pub mod group;
pub mod idle;
pub mod offline_drain;
pub mod offline_send;
pub mod push;
pub mod storm;

/// Whether a scenario's figures meet its success criterion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Exit status 0.
    Pass,
    /// Exit status 1 (e.g. messages were lost).
    Fail,
}
