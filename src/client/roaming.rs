//! A phone that follows a cluster: it logs in at one of several server addresses, remembers the
//! other nodes each `Welcome` announces, and when a connect or login fails, or a connection is
//! lost, logs in at the next address with exponential backoff and jitter; under TLS when
//! given a [`ClientTls`] (every address is then expected to present the same server name).

use std::time::Duration;

use crate::client::servers::ServerList;
use crate::client::{Client, ClientError, ClientTls};
use crate::mesh::backoff::Backoff;
use crate::proto::v1::{ErrorCode, ServerFrame, Welcome, server_frame};

/// Shortest delay between two attempts.
pub const DEFAULT_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest delay between two attempts.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Attempts (over all addresses) one call makes before giving up.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 10;
/// How long one connect plus login may take before the next address is tried.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Logs one device in at any of a list of addresses and moves on when one fails.
///
/// The first login goes to the first address given; every failure moves to the next address
/// (after the last, back to the first), waiting a growing, jittered delay between attempts.
/// A login that succeeds resets the delay and adds the addresses its `Welcome` announced.
#[derive(Debug)]
pub struct Roaming {
    servers: ServerList,
    token: String,
    backoff: Backoff,
    max_attempts: u32,
    attempt_timeout: Duration,
    tls: Option<ClientTls>,
}

impl Roaming {
    /// Logs in with `token` at the addresses of `servers`, with the default backoff
    /// ([`DEFAULT_BACKOFF_MIN`] to [`DEFAULT_BACKOFF_MAX`]) and [`DEFAULT_MAX_ATTEMPTS`].
    pub fn new(servers: ServerList, token: impl Into<String>) -> Self {
        Self {
            servers,
            token: token.into(),
            backoff: Backoff::new(DEFAULT_BACKOFF_MIN, DEFAULT_BACKOFF_MAX),
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            attempt_timeout: DEFAULT_ATTEMPT_TIMEOUT,
            tls: None,
        }
    }

    /// Connects under TLS with `tls` (plain TCP without this call).
    pub fn with_tls(mut self, tls: ClientTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Waits between `min` and `max` between attempts (doubling, jittered).
    pub fn with_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff = Backoff::new(min, max);
        self
    }

    /// Gives up after `attempts` failed attempts in one call (at least one is made).
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Lets one connect plus login take up to `timeout`.
    pub fn with_attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = timeout;
        self
    }

    /// The addresses known so far, and the current one.
    pub fn servers(&self) -> &ServerList {
        &self.servers
    }

    /// Uses `token` from the next login on (tokens expire).
    pub fn set_token(&mut self, token: impl Into<String>) {
        self.token = token.into();
    }

    /// Logs in at the current address (the first one given, on a first call), moving on to the
    /// next after each failure. Returns the connected client, its Welcome, and the address.
    pub async fn login(
        &mut self,
        resume_after: u64,
    ) -> Result<(Client, Welcome, String), ClientError> {
        self.attempts(resume_after, Duration::ZERO).await
    }

    /// Logs in again after the connection was lost or ended with a `GoAway` (other than
    /// `REPLACED`, after which a client should not reconnect on its own): moves to the next
    /// address, waits a backoff delay but at least `at_least` (a `GoAway`'s
    /// `reconnect_after_ms`), then logs in as [`Roaming::login`] does.
    pub async fn reconnect(
        &mut self,
        resume_after: u64,
        at_least: Duration,
    ) -> Result<(Client, Welcome, String), ClientError> {
        self.servers.advance();
        let first_wait = self.backoff.next_delay().max(at_least);
        self.attempts(resume_after, first_wait).await
    }

    /// Logs in again after a `GoAway` (other than `REPLACED`): at the first of its alternate
    /// addresses (the other nodes of a cluster; the next address when it names none), after
    /// its `reconnect_after_ms` (the server spreads them so that a node's phones do not all
    /// come back at once) or a backoff delay if longer.
    pub async fn follow(
        &mut self,
        go_away: &crate::proto::v1::GoAway,
        resume_after: u64,
    ) -> Result<(Client, Welcome, String), ClientError> {
        self.servers.prefer(&go_away.alternate_addrs);
        let told = Duration::from_millis(go_away.reconnect_after_ms.into());
        let first_wait = self.backoff.next_delay().max(told);
        self.attempts(resume_after, first_wait).await
    }

    async fn attempts(
        &mut self,
        resume_after: u64,
        first_wait: Duration,
    ) -> Result<(Client, Welcome, String), ClientError> {
        let mut wait = first_wait;
        let mut last = None;
        for _ in 0..self.max_attempts {
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            let addr = self
                .servers
                .current()
                .ok_or(ClientError::NoServer)?
                .to_owned();
            let attempt =
                Client::login_with(addr.as_str(), self.tls.as_ref(), &self.token, resume_after);
            let error = match tokio::time::timeout(self.attempt_timeout, attempt).await {
                Ok(Ok((client, welcome))) => {
                    self.backoff.reset();
                    self.servers.learn(&welcome);
                    return Ok((client, welcome, addr));
                }
                Ok(Err(error)) if !worth_another_node(&error) => return Err(error),
                Ok(Err(error)) => error,
                Err(_) => ClientError::TimedOut(self.attempt_timeout),
            };
            tracing::debug!(%addr, %error, "login failed; trying the next address");
            // Homed in another datacenter: its nodes, at once.
            if let Some(home) = elsewhere(&error) {
                self.servers.prefer(home);
                wait = Duration::ZERO;
                last = Some(error);
                continue;
            }
            last = Some(error);
            self.servers.advance();
            wait = self.backoff.next_delay();
        }
        Err(ClientError::GaveUp {
            attempts: self.max_attempts,
            last: Box::new(last.unwrap_or(ClientError::NoServer)),
        })
    }
}

/// The addresses of the home datacenter a login was sent to (GoAway ELSEWHERE), if it was.
fn elsewhere(error: &ClientError) -> Option<&[String]> {
    match error {
        ClientError::LoginRefused(answer) => match answer.as_ref() {
            ServerFrame {
                frame: Some(server_frame::Frame::GoAway(go_away)),
            } if go_away.reason == i32::from(crate::proto::v1::GoAwayReason::Elsewhere)
                && !go_away.alternate_addrs.is_empty() =>
            {
                Some(&go_away.alternate_addrs)
            }
            _ => None,
        },
        _ => None,
    }
}

/// Whether a failed login may succeed at another node: the node could not be reached or
/// closed, is shutting down, full or overloaded. A refused token or version would be refused
/// everywhere.
fn worth_another_node(error: &ClientError) -> bool {
    match error {
        ClientError::LoginRefused(answer) => match answer.as_ref() {
            ServerFrame {
                frame: Some(server_frame::Frame::GoAway(_)),
            } => true,
            ServerFrame {
                frame: Some(server_frame::Frame::Error(error)),
            } => matches!(
                ErrorCode::try_from(error.code),
                Ok(ErrorCode::Overloaded
                    | ErrorCode::TooManyConnections
                    | ErrorCode::RateLimited
                    | ErrorCode::Timeout
                    | ErrorCode::Internal
                    | ErrorCode::StorageFailure)
            ),
            _ => false,
        },
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::v1::{Error, GoAway};

    fn refused(frame: server_frame::Frame) -> ClientError {
        ClientError::LoginRefused(Box::new(ServerFrame { frame: Some(frame) }))
    }

    fn error(code: ErrorCode) -> ClientError {
        refused(server_frame::Frame::Error(Error {
            code: code.into(),
            ..Error::default()
        }))
    }

    #[test]
    fn unreachable_busy_or_stopping_nodes_are_worth_another_node() {
        assert!(worth_another_node(&ClientError::Closed));
        assert!(worth_another_node(&ClientError::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused
        ))));
        assert!(worth_another_node(&error(ErrorCode::Overloaded)));
        assert!(worth_another_node(&refused(server_frame::Frame::GoAway(
            GoAway::default()
        ))));
    }

    #[test]
    fn a_refused_token_is_refused_everywhere() {
        assert!(!worth_another_node(&error(ErrorCode::Unauthenticated)));
        assert!(!worth_another_node(&error(ErrorCode::TokenExpired)));
        assert!(!worth_another_node(&error(ErrorCode::UnsupportedVersion)));
    }

    #[tokio::test]
    async fn an_empty_list_fails_at_once() {
        let mut roaming = Roaming::new(ServerList::new(Vec::<String>::new()), "token");
        assert!(matches!(roaming.login(0).await, Err(ClientError::NoServer)));
    }

    #[tokio::test]
    async fn addresses_that_refuse_connections_are_each_tried_then_given_up() {
        // Two ports nobody listens on (bound, then released).
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|listener| listener.local_addr())
                .unwrap()
                .to_string()
        };
        let (a, b) = (free(), free());
        let mut roaming = Roaming::new(ServerList::new([a.clone(), b.clone()]), "token")
            .with_backoff(Duration::from_millis(1), Duration::from_millis(2))
            .with_max_attempts(3);
        match roaming.login(0).await {
            Err(ClientError::GaveUp { attempts, last }) => {
                assert_eq!(attempts, 3);
                assert!(matches!(*last, ClientError::Io(_)), "{last}");
            }
            other => panic!("expected to give up, got {:?}", other.map(|(_, w, _)| w)),
        }
        // Three attempts: a, b, a; the next one would be b.
        assert_eq!(roaming.servers().current(), Some(b.as_str()));
    }
}
