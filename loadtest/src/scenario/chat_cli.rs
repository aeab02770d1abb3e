//! `tern-load chat-cli`: an interactive phone for a person at a terminal (or a script on a pipe).
//!
//! Prints what arrives, one line per frame, and acks every delivered entry. Reads commands from
//! stdin (see [`command::HELP`]). At the end of stdin it waits up to [`EOF_WAIT`] for the
//! server to ack what was sent, then leaves. After a GoAway (other than REPLACED) or a lost
//! connection it reconnects and resumes after the last seq it received: with several
//! `--server` addresses, or a cluster whose Welcome announces its other nodes, to the next
//! address, with backoff ([`tern::client::Roaming`]). With `--tls` every login runs the TLS
//! handshake first.

mod command;
mod render;

use std::collections::HashMap;
use std::time::Duration;

use tern::client::{ClientReader, ClientWriter, Roaming, ServerList, text_frame};
use tern::clock::now_ms;
use tern::proto::v1::{
    DeviceAck, GoAway, GoAwayReason, Ping, PresenceSubscribe, Receipt, ReceiptKind, Typing,
    client_frame, deliver, server_frame::Frame,
};
use tokio::io::{AsyncBufReadExt, BufReader, Lines, Stdin};
use tokio::time::Instant;

use self::command::Command;
use super::Verdict;
use crate::body::new_run_id;
use crate::error::LoadError;
use crate::target::{self, ServerArgs, Target};

/// How long the client stays after stdin ends, for outstanding ServerAcks.
const EOF_WAIT: Duration = Duration::from_secs(5);
/// Failed attempts in a row (over all addresses) before giving up.
const RECONNECT_ATTEMPTS: u32 = 5;
/// Least delay before reconnecting after a connection was lost without GoAway (the backoff
/// may wait longer).
const RECONNECT_DELAY: Duration = Duration::from_millis(500);
/// Token lifetime: long enough for any interactive session.
const TOKEN_TTL_SECS: u64 = 7 * 86_400;

/// Arguments of `tern-load chat-cli`.
#[derive(Debug, Clone, clap::Args)]
pub struct ChatCliArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Log in as this user.
    #[arg(long)]
    user: String,
    /// Device id.
    #[arg(long, default_value = "cli")]
    device: String,
    /// Initial peer (same as typing `/to USER`).
    #[arg(long)]
    to: Option<String>,
}

/// A send or receipt awaiting its ServerAck.
struct Outgoing {
    /// Order of sending, for resending in order.
    number: u64,
    /// True for receipts.
    receipt: bool,
    frame: client_frame::Frame,
}

/// How a connection ended.
enum End {
    /// The user quit, or stdin ended and everything was acked.
    Quit,
    /// Reconnect after this delay.
    Reconnect(Duration),
    /// The server said GoAway: follow it (its delay, its alternate addresses).
    Follow(GoAway),
    /// Another login of this device replaced this one.
    Replaced,
}

/// The conversation state that survives reconnects.
struct Chat {
    user: String,
    peer: Option<String>,
    run: u64,
    next_id: u64,
    /// Sends and receipts awaiting their ServerAck, by client_msg_id (resent after a reconnect;
    /// the server deduplicates).
    pending: HashMap<String, Outgoing>,
    /// Seq of the last message from each user.
    last_from: HashMap<String, u64>,
    /// Highest seq received.
    last_seq: u64,
    stdin: Lines<BufReader<Stdin>>,
    /// When stdin ended, the moment to leave even if acks are missing.
    eof_deadline: Option<Instant>,
    /// Something was queued for the server since the last flush.
    wrote: bool,
}

/// Runs the interactive client until `/quit` or the end of stdin.
pub async fn run(args: ChatCliArgs) -> Result<Verdict, LoadError> {
    let target = Target::open(&args.server, TOKEN_TTL_SECS).await?;
    let token = target.token(&args.user, &args.device)?;
    // The first login goes to the first address given.
    let servers = ServerList::new(target::split(&args.server.server));
    let mut roaming = Roaming::new(servers, token).with_max_attempts(RECONNECT_ATTEMPTS);
    if let Some(tls) = target.dialer.tls() {
        roaming = roaming.with_tls(tls.clone());
    }
    let mut chat = Chat {
        user: args.user.clone(),
        peer: args.to.clone(),
        run: new_run_id(),
        next_id: 0,
        pending: HashMap::new(),
        last_from: HashMap::new(),
        last_seq: 0,
        stdin: BufReader::new(tokio::io::stdin()).lines(),
        eof_deadline: None,
        wrote: false,
    };
    let mut connected_once = false;
    let mut next: Option<End> = None;
    loop {
        let login = match &next {
            Some(End::Reconnect(delay)) => roaming.reconnect(chat.last_seq, *delay).await,
            Some(End::Follow(go_away)) => roaming.follow(go_away, chat.last_seq).await,
            _ => roaming.login(chat.last_seq).await,
        };
        let (client, welcome, addr) = login?;
        say(&format!("connected to {addr}"));
        say(&render::welcome(&welcome));
        if !connected_once && let Some(peer) = &chat.peer {
            say(&format!("talking to {peer}"));
        }
        connected_once = true;
        let (mut reader, mut writer) = client.split();
        chat.resend_pending(&mut writer);
        let keepalive = (welcome.idle_timeout_secs > 0)
            .then(|| Duration::from_secs(welcome.idle_timeout_secs.into()) / 3);
        match chat.serve(&mut reader, &mut writer, keepalive).await? {
            End::Quit => return Ok(Verdict::Pass),
            End::Replaced => return Ok(Verdict::Fail),
            End::Reconnect(delay) => {
                say(&format!(
                    "reconnecting in {} ms or more (known servers: {})",
                    delay.as_millis(),
                    roaming.servers().addrs().join(",")
                ));
                next = Some(End::Reconnect(delay));
            }
            End::Follow(go_away) => {
                say(&format!(
                    "reconnecting in {} ms or more, to {} (known servers: {})",
                    go_away.reconnect_after_ms,
                    if go_away.alternate_addrs.is_empty() {
                        "the next server".to_owned()
                    } else {
                        go_away.alternate_addrs.join(" or ")
                    },
                    roaming.servers().addrs().join(",")
                ));
                next = Some(End::Follow(go_away));
            }
        }
    }
}

/// Prints one line to stdout.
fn say(line: &str) {
    println!("{line}");
}

impl Chat {
    /// Serves one connection.
    async fn serve(
        &mut self,
        reader: &mut ClientReader,
        writer: &mut ClientWriter,
        keepalive: Option<Duration>,
    ) -> Result<End, LoadError> {
        let mut last_write = Instant::now();
        loop {
            let stdin_open = self.eof_deadline.is_none();
            let deadline = self.eof_deadline.unwrap_or_else(Instant::now);
            let ping_at = last_write + keepalive.unwrap_or_default();
            let end = tokio::select! {
                received = reader.recv() => match received {
                    Ok(Some(frame)) => frame.frame.and_then(|f| self.on_frame(f, writer)),
                    Ok(None) => {
                        say("! connection closed by the server");
                        Some(End::Reconnect(RECONNECT_DELAY))
                    }
                    Err(error) => {
                        say(&format!("! connection lost: {error}"));
                        Some(End::Reconnect(RECONNECT_DELAY))
                    }
                },
                line = self.stdin.next_line(), if stdin_open => match line {
                    Ok(Some(line)) => self.on_line(&line, writer),
                    Ok(None) => {
                        self.eof_deadline = Some(Instant::now() + EOF_WAIT);
                        None
                    }
                    Err(error) => return Err(LoadError::Stdin(error)),
                },
                () = tokio::time::sleep_until(ping_at), if keepalive.is_some() => {
                    // A silent keepalive (nonce 0), so an idle terminal is not disconnected.
                    self.queue(writer, client_frame::Frame::Ping(Ping { nonce: 0 }));
                    None
                }
                () = tokio::time::sleep_until(deadline), if !stdin_open => {
                    say(&format!("! leaving with {} sends unacknowledged", self.pending.len()));
                    Some(End::Quit)
                }
            };
            // Write what the handlers queued, even when leaving (a last ack or message).
            let flushed = writer.flush().await;
            if std::mem::take(&mut self.wrote) {
                last_write = Instant::now();
            }
            if let Some(end) = end {
                return Ok(end);
            }
            if let Err(error) = flushed {
                say(&format!("! connection lost: {error}"));
                return Ok(End::Reconnect(RECONNECT_DELAY));
            }
            if self.eof_deadline.is_some() && self.pending.is_empty() {
                return Ok(End::Quit);
            }
        }
    }

    /// Shows one frame and reacts to it.
    fn on_frame(&mut self, frame: Frame, writer: &mut ClientWriter) -> Option<End> {
        match frame {
            Frame::Deliver(d) => {
                say(&render::deliver(&d, &self.user));
                if let Some(deliver::Payload::Message(m)) = &d.payload {
                    self.last_from.insert(m.from_user.clone(), d.seq);
                }
                self.last_seq = self.last_seq.max(d.seq);
                self.queue(
                    writer,
                    client_frame::Frame::Ack(DeviceAck { up_to_seq: d.seq }),
                );
            }
            Frame::ServerAck(ack) => {
                let receipt = self
                    .pending
                    .remove(&ack.client_msg_id)
                    .is_some_and(|o| o.receipt);
                say(&render::server_ack(&ack, receipt));
            }
            Frame::Typing(t) => say(&render::typing(&t)),
            Frame::Presence(p) => say(&render::presence(&p, now_ms())),
            Frame::Error(e) => {
                // A refused send is not coming back; stop waiting for its ack.
                self.pending.remove(&e.client_msg_id);
                say(&render::error(&e));
            }
            Frame::GoAway(g) => {
                say(&render::go_away(&g));
                if g.reason == i32::from(GoAwayReason::Replaced) {
                    say("! this device logged in elsewhere; leaving");
                    return Some(End::Replaced);
                }
                return Some(End::Follow(g));
            }
            Frame::QueueDrained(q) => say(&render::drained(&q)),
            Frame::Pong(p) if p.nonce == 0 => {}
            Frame::Pong(p) => say(&format!(
                "pong (round trip {} ms)",
                now_ms().saturating_sub(p.nonce)
            )),
            Frame::Welcome(w) => say(&render::welcome(&w)),
            Frame::GroupResponse(r) => say(&format!("group response {r:?}")),
            Frame::PushResponse(r) => say(&format!("push response {r:?}")),
        }
        None
    }

    /// Handles one input line.
    fn on_line(&mut self, line: &str, writer: &mut ClientWriter) -> Option<End> {
        match command::parse(line) {
            Command::Quit => return Some(End::Quit),
            Command::Empty => {}
            Command::Help => say(command::HELP),
            Command::Invalid(reason) => say(&format!("! {reason}")),
            Command::To(peer) => {
                say(&format!("talking to {peer}"));
                self.peer = Some(peer);
            }
            Command::Send { to, body } => {
                let Some(to) = to.or_else(|| self.peer.clone()) else {
                    say("! no peer: use /to USER or @USER text");
                    return None;
                };
                let id = self.new_id();
                self.send(
                    writer,
                    id.clone(),
                    false,
                    text_frame(&id, &to, body.as_bytes()),
                );
            }
            Command::Typing(typing) => {
                if let Some(to_user) = self.peer_or_complain() {
                    self.queue(
                        writer,
                        client_frame::Frame::Typing(Typing {
                            to_user,
                            typing,
                            group_id: String::new(),
                        }),
                    );
                }
            }
            Command::Presence(users) => {
                self.queue(
                    writer,
                    client_frame::Frame::PresenceSubscribe(PresenceSubscribe { users }),
                );
            }
            Command::Read => self.read_receipt(writer),
            Command::Ping => {
                self.queue(writer, client_frame::Frame::Ping(Ping { nonce: now_ms() }))
            }
        }
        None
    }

    fn read_receipt(&mut self, writer: &mut ClientWriter) {
        let Some(peer) = self.peer_or_complain() else {
            return;
        };
        let Some(&up_to_seq) = self.last_from.get(&peer) else {
            say(&format!("! no message from {peer} to mark read"));
            return;
        };
        let id = self.new_id();
        let frame = client_frame::Frame::Receipt(Receipt {
            client_msg_id: id.clone(),
            to_user: peer,
            kind: ReceiptKind::Read.into(),
            up_to_seq,
        });
        self.send(writer, id, true, frame);
    }

    /// Queues a send or receipt and remembers it until its ServerAck.
    fn send(
        &mut self,
        writer: &mut ClientWriter,
        id: String,
        receipt: bool,
        frame: client_frame::Frame,
    ) {
        self.queue(writer, frame.clone());
        let outgoing = Outgoing {
            number: self.next_id,
            receipt,
            frame,
        };
        self.pending.insert(id, outgoing);
    }

    /// After a reconnect: queues every unacked send and receipt again, in order.
    fn resend_pending(&mut self, writer: &mut ClientWriter) {
        let mut pending: Vec<&Outgoing> = self.pending.values().collect();
        pending.sort_by_key(|o| o.number);
        if !pending.is_empty() {
            say(&format!("resending {} unacknowledged", pending.len()));
        }
        for outgoing in pending {
            writer.queue(outgoing.frame.clone());
        }
        self.wrote = true;
    }

    /// Queues a frame for the server.
    fn queue(&mut self, writer: &mut ClientWriter, frame: client_frame::Frame) {
        writer.queue(frame);
        self.wrote = true;
    }

    fn peer_or_complain(&self) -> Option<String> {
        if self.peer.is_none() {
            say("! no peer: use /to USER first");
        }
        self.peer.clone()
    }

    fn new_id(&mut self) -> String {
        self.next_id += 1;
        format!("cli-{:x}-{}", self.run, self.next_id)
    }
}
