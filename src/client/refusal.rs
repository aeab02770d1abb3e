//! How a refused login reads: the server's answer to Login when it is not a Welcome, as one line
//! for a person, in the client's errors and the load generator's reports alike.

use std::fmt;

use crate::proto::v1::{ErrorCode, GoAwayReason, ServerFrame, server_frame::Frame};

/// Shows an answer to Login that is not a Welcome: an Error as its code name and message
/// (`UNAUTHENTICATED: invalid token`), a GoAway as its reason, the delay it asks for and its
/// message (`GoAway SHUTDOWN, reconnect after 500 ms: node stopping`), any other frame as its
/// kind (`QueueDrained instead of Welcome`).
#[derive(Debug, Clone, Copy)]
pub struct Refusal<'a>(pub &'a ServerFrame);

impl fmt::Display for Refusal<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0.frame {
            Some(Frame::Error(error)) => {
                match ErrorCode::try_from(error.code) {
                    Ok(code) => f.write_str(short_name(code.as_str_name(), "ERROR_CODE_"))?,
                    // A code newer than this client: its number is all there is to show.
                    Err(_) => write!(f, "error code {}", error.code)?,
                }
                with_message(f, &error.message)
            }
            Some(Frame::GoAway(go_away)) => {
                match GoAwayReason::try_from(go_away.reason) {
                    Ok(reason) => write!(
                        f,
                        "GoAway {}",
                        short_name(reason.as_str_name(), "GO_AWAY_REASON_")
                    )?,
                    Err(_) => write!(f, "GoAway reason {}", go_away.reason)?,
                }
                write!(f, ", reconnect after {} ms", go_away.reconnect_after_ms)?;
                with_message(f, &go_away.message)
            }
            Some(other) => write!(f, "{} instead of Welcome", kind(other)),
            None => f.write_str("an empty frame instead of Welcome"),
        }
    }
}

/// An enum value's protobuf name without the prefix every value of its enum shares.
fn short_name<'a>(name: &'a str, prefix: &str) -> &'a str {
    name.strip_prefix(prefix).unwrap_or(name)
}

/// `: message`, when there is one.
fn with_message(f: &mut fmt::Formatter<'_>, message: &str) -> fmt::Result {
    if message.is_empty() {
        Ok(())
    } else {
        write!(f, ": {message}")
    }
}

/// The frame's kind as the protocol names it.
fn kind(frame: &Frame) -> &'static str {
    match frame {
        Frame::Welcome(_) => "Welcome",
        Frame::ServerAck(_) => "ServerAck",
        Frame::Deliver(_) => "Deliver",
        Frame::QueueDrained(_) => "QueueDrained",
        Frame::Typing(_) => "Typing",
        Frame::Presence(_) => "Presence",
        Frame::Pong(_) => "Pong",
        Frame::Error(_) => "Error",
        Frame::GoAway(_) => "GoAway",
        Frame::GroupResponse(_) => "GroupResponse",
        Frame::PushResponse(_) => "PushResponse",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::ClientError;
    use crate::proto::v1::{Error, GoAway};

    fn answer(frame: Frame) -> ServerFrame {
        ServerFrame { frame: Some(frame) }
    }

    fn error(code: i32, message: &str) -> ServerFrame {
        answer(Frame::Error(Error {
            code,
            message: message.into(),
            ..Error::default()
        }))
    }

    #[test]
    fn an_error_reads_as_its_code_name_and_message() {
        let refused = error(ErrorCode::Unauthenticated.into(), "invalid token");
        assert_eq!(
            Refusal(&refused).to_string(),
            "UNAUTHENTICATED: invalid token"
        );
        let bare = error(ErrorCode::TokenExpired.into(), "");
        assert_eq!(Refusal(&bare).to_string(), "TOKEN_EXPIRED");
        let unknown = error(999, "from the future");
        assert_eq!(
            Refusal(&unknown).to_string(),
            "error code 999: from the future"
        );
    }

    #[test]
    fn a_go_away_reads_as_its_reason_and_delay() {
        let going = answer(Frame::GoAway(GoAway {
            reason: GoAwayReason::Shutdown.into(),
            reconnect_after_ms: 500,
            message: "node stopping".into(),
            alternate_addrs: Vec::new(),
        }));
        assert_eq!(
            Refusal(&going).to_string(),
            "GoAway SHUTDOWN, reconnect after 500 ms: node stopping"
        );
        let unknown = answer(Frame::GoAway(GoAway {
            reason: 42,
            reconnect_after_ms: 0,
            message: String::new(),
            alternate_addrs: Vec::new(),
        }));
        assert_eq!(
            Refusal(&unknown).to_string(),
            "GoAway reason 42, reconnect after 0 ms"
        );
    }

    #[test]
    fn any_other_answer_reads_as_its_kind() {
        let other = answer(Frame::QueueDrained(Default::default()));
        assert_eq!(
            Refusal(&other).to_string(),
            "QueueDrained instead of Welcome"
        );
        let empty = ServerFrame { frame: None };
        assert_eq!(
            Refusal(&empty).to_string(),
            "an empty frame instead of Welcome"
        );
    }

    #[test]
    fn a_refused_login_error_shows_the_refusal_not_the_frame() {
        let refused = ClientError::LoginRefused(Box::new(error(
            ErrorCode::Unauthenticated.into(),
            "invalid token",
        )));
        assert_eq!(
            refused.to_string(),
            "login refused: UNAUTHENTICATED: invalid token"
        );
    }
}
