//! What a line typed into `chat-cli` means.

/// One parsed input line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `/to USER`: talk to USER from now on.
    To(String),
    /// `/typing` (true) or `/typing off` (false).
    Typing(bool),
    /// `/presence USER...`: watch these users (none: stop watching).
    Presence(Vec<String>),
    /// `/read`: READ receipt for the last message from the current peer.
    Read,
    /// `/ping`.
    Ping,
    /// `/help`.
    Help,
    /// `/quit` or `/exit`.
    Quit,
    /// A text message, to `to` (`@USER text`) or to the current peer.
    Send {
        /// Explicit recipient, if any.
        to: Option<String>,
        /// The text.
        body: String,
    },
    /// A blank line.
    Empty,
    /// Something unusable, with the reason.
    Invalid(String),
}

/// The commands, for `/help`.
pub const HELP: &str = "\
/to USER            talk to USER
@USER text          send text to USER (the current peer stays)
text                send text to the current peer
/typing [off]       tell the peer you are typing (or stopped)
/presence USER...   watch USERs come online and go offline
/read               mark the peer's messages read (READ receipt)
/ping               ping the server
/quit               leave";

/// Parses one line of input.
pub fn parse(line: &str) -> Command {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.trim().is_empty() {
        return Command::Empty;
    }
    if let Some(rest) = line.strip_prefix('@') {
        let (to, body) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        let body = body.trim_start();
        if to.is_empty() || body.is_empty() {
            return Command::Invalid("usage: @USER text".to_owned());
        }
        return Command::Send {
            to: Some(to.to_owned()),
            body: body.to_owned(),
        };
    }
    let Some(command) = line.strip_prefix('/') else {
        return Command::Send {
            to: None,
            body: line.to_owned(),
        };
    };
    let mut words = command.split_whitespace();
    let name = words.next().unwrap_or("");
    let args: Vec<&str> = words.collect();
    match (name, args.as_slice()) {
        ("to", [user]) => Command::To((*user).to_owned()),
        ("to", _) => Command::Invalid("usage: /to USER".to_owned()),
        ("typing", []) | ("typing", ["on"]) => Command::Typing(true),
        ("typing", ["off"]) | ("typing", ["stop"]) => Command::Typing(false),
        ("typing", _) => Command::Invalid("usage: /typing [off]".to_owned()),
        ("presence", users) => Command::Presence(users.iter().map(|u| (*u).to_owned()).collect()),
        ("read", []) => Command::Read,
        ("ping", []) => Command::Ping,
        ("help", _) => Command::Help,
        ("quit", []) | ("exit", []) => Command::Quit,
        _ => Command::Invalid(format!("unknown command /{command}; /help lists them")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(to: Option<&str>, body: &str) -> Command {
        Command::Send {
            to: to.map(str::to_owned),
            body: body.to_owned(),
        }
    }

    #[test]
    fn plain_lines_go_to_the_current_peer() {
        assert_eq!(parse("hello there\n"), send(None, "hello there"));
        assert_eq!(parse("  indented"), send(None, "  indented"));
        assert_eq!(
            parse("a@b.c is my mail\r\n"),
            send(None, "a@b.c is my mail")
        );
    }

    #[test]
    fn at_user_sends_directly() {
        assert_eq!(parse("@bob hello you"), send(Some("bob"), "hello you"));
        assert_eq!(parse("@bob   spaced"), send(Some("bob"), "spaced"));
        assert!(matches!(parse("@bob"), Command::Invalid(_)));
        assert!(matches!(parse("@ hi"), Command::Invalid(_)));
    }

    #[test]
    fn commands_and_their_arguments() {
        assert_eq!(parse("/to bob"), Command::To("bob".to_owned()));
        assert!(matches!(parse("/to"), Command::Invalid(_)));
        assert!(matches!(parse("/to a b"), Command::Invalid(_)));
        assert_eq!(parse("/typing"), Command::Typing(true));
        assert_eq!(parse("/typing off"), Command::Typing(false));
        assert_eq!(
            parse("/presence u1 u2"),
            Command::Presence(vec!["u1".to_owned(), "u2".to_owned()])
        );
        assert_eq!(parse("/presence"), Command::Presence(vec![]));
        assert_eq!(parse("/read"), Command::Read);
        assert_eq!(parse("/quit"), Command::Quit);
        assert_eq!(parse("/exit\r"), Command::Quit);
        assert_eq!(parse("/ping"), Command::Ping);
        assert_eq!(parse("   "), Command::Empty);
        assert!(matches!(parse("/bogus"), Command::Invalid(_)));
        assert!(matches!(parse("/read now"), Command::Invalid(_)));
    }
}
