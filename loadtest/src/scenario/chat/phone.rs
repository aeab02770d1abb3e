//! One phone of the chat scenario: sends to its partner, checks what the partner sends, acks,
//! and reconnects (with resume) after a GoAway or a lost connection. A login answered with
//! GoAway ELSEWHERE (the user is homed in another datacenter) is repeated at once at that
//! datacenter's addresses, which the phone keeps using from then on.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tern::client::{Client, ClientError, ClientWriter, text_frame};
use tern::proto::v1::{Ping, Welcome, client_frame};
use tokio::sync::{Semaphore, mpsc, watch};

mod inbound;

use super::outbox::Outbox;
use super::wan::PairClass;
use crate::body::{self, Stamp};
use crate::bucket::Bucket;
use crate::dial::Dialer;
use crate::error::LoadError;
use crate::latency::{LatencyBuffer, SharedLatency};
use crate::progress::{Counters, bump};
use crate::tracker::{Delivery, Tracker};

/// Sends queued before the phone reads again.
const SEND_BATCH: usize = 64;
/// Error frames printed to stderr (per run), so that a storm of them stays readable.
const ERRORS_SHOWN: u64 = 10;
/// Delay before repeating an ack the server refused (acks are cumulative: the repeat covers
/// everything received meanwhile).
const ACK_RETRY: Duration = Duration::from_millis(100);
/// Share of the server's per-connection frame limit a phone uses by default.
pub const FRAME_RATE_SHARE: f64 = 0.9;
/// First delay before reconnecting after a lost connection; doubled per failed attempt.
const RECONNECT_BASE: Duration = Duration::from_millis(100);
/// Longest delay between reconnect attempts.
const RECONNECT_MAX: Duration = Duration::from_secs(2);
/// GoAway ELSEWHERE answers one login attempt follows before it gives up (the home datacenter
/// should log the phone in; more redirects mean the datacenters disagree about its home).
const MAX_REDIRECTS: u32 = 3;

/// Where the scenario is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Phones log in.
    Connecting,
    /// Phones send.
    Sending,
    /// No new messages; retries, acks and deliveries finish.
    Draining,
    /// Phones disconnect.
    Stopped,
}

/// What every phone of a run shares.
#[derive(Debug)]
pub struct Shared {
    /// Identifies this run's messages.
    pub run: u64,
    /// Body size in bytes.
    pub size: usize,
    /// Unacked sends per phone, at most.
    pub window: usize,
    /// Messages per second per phone; 0 sends as fast as the window allows.
    pub rate_per_phone: f64,
    /// Frames per second per connection the phone allows itself (0 is unlimited); `None`
    /// takes [`FRAME_RATE_SHARE`] of the limit the server announces in Welcome.
    pub frame_rate: Option<f64>,
    /// The configuration's `limits.frames_per_sec`, for servers whose Welcome has no limit.
    pub config_frames_per_sec: u32,
    /// Phones in the run (to stagger their first sends).
    pub phones: usize,
    /// Live counters (shared with the progress reporter).
    pub counters: Arc<Counters>,
    /// End-to-end latencies.
    pub latency: SharedLatency,
    /// End-to-end latencies of same- and cross-datacenter pairs (with `--wan-config`).
    pub by_class: Option<ClassLatency>,
    /// Times from a GoAway to the next login.
    pub reconnect: SharedLatency,
    /// Bounds concurrent connection attempts.
    pub dial_gate: Semaphore,
    /// Error frames printed so far.
    pub errors_shown: AtomicU64,
}

/// End-to-end latencies by pair class.
#[derive(Debug)]
pub struct ClassLatency {
    /// Pairs homed in one datacenter.
    pub same: SharedLatency,
    /// Pairs homed in two datacenters.
    pub cross: SharedLatency,
}

impl Default for ClassLatency {
    fn default() -> Self {
        Self {
            same: SharedLatency::new(16),
            cross: SharedLatency::new(16),
        }
    }
}

impl Shared {
    /// The histogram of pairs of `class`, when latencies are kept by class.
    fn class_latency(&self, class: Option<PairClass>) -> Option<&SharedLatency> {
        let by_class = self.by_class.as_ref()?;
        Some(match class? {
            PairClass::Same => &by_class.same,
            PairClass::Cross => &by_class.cross,
        })
    }
}

/// One phone's latency buffers: every delivery, and its pair's class.
#[derive(Debug)]
pub struct Recorder {
    all: LatencyBuffer,
    class: LatencyBuffer,
}

impl Recorder {
    /// Buffers for phone `index`.
    pub fn new(index: usize) -> Self {
        Self {
            all: LatencyBuffer::new(index),
            class: LatencyBuffer::new(index),
        }
    }

    /// Records the latency of one delivery to `phone`.
    pub fn record(&mut self, phone: &Phone, shared: &Shared, micros: u64) {
        self.all.record(&shared.latency, micros);
        if let Some(class) = shared.class_latency(phone.class) {
            self.class.record(class, micros);
        }
    }

    /// Hands the buffered latencies to the shared histograms.
    pub fn flush(&mut self, phone: &Phone, shared: &Shared) {
        self.all.flush(&shared.latency);
        if let Some(class) = shared.class_latency(phone.class) {
            self.class.flush(class);
        }
    }
}

/// One phone's identity and bookkeeping.
#[derive(Debug)]
pub struct Phone {
    /// Phone number in the run (picks the source address and the latency shard).
    pub index: usize,
    /// Where it logs in: phone `index` at address `index` mod n (the cluster's nodes, or its
    /// home datacenter's).
    pub dialer: Dialer,
    /// Whether its pair is homed in one datacenter or two (with `--wan-config`).
    pub class: Option<PairClass>,
    /// This phone's user.
    pub user: String,
    /// The user it chats with.
    pub partner: String,
    /// Login token.
    pub token: String,
    /// This phone's messages.
    pub outgoing: Arc<Mutex<Tracker>>,
    /// The partner's messages.
    pub incoming: Arc<Mutex<Tracker>>,
}

/// Why a connection ended.
enum End {
    /// The run is over.
    Stopped,
    /// The server sent GoAway: reconnect after this delay, preferably to one of these
    /// addresses (the other nodes of a cluster, when the node is going away); true when the
    /// reason was ELSEWHERE (the addresses are the user's home datacenter's).
    GoAway(Duration, Vec<String>, bool),
    /// The connection failed.
    Lost(ClientError),
}

/// Runs one phone: logs in, reports on `ready`, waits for the run to start, then chats until
/// the phase is [`Phase::Stopped`].
pub async fn run(
    phone: Phone,
    shared: Arc<Shared>,
    mut phase: watch::Receiver<Phase>,
    ready: mpsc::Sender<Result<(), LoadError>>,
) {
    let mut dialer = phone.dialer.clone();
    let first = login_fresh(&phone, &shared, &mut dialer).await;
    let Some(((mut client, welcome), _open)) =
        enter(first, &shared.counters, &mut phase, ready).await
    else {
        return;
    };
    let mut state = State::new(&phone, &shared, &welcome);
    let mut shift = 0;
    loop {
        let end = state.drive(client, &mut phase).await;
        let mut told_to_go = None;
        let mut delay = match end {
            End::Stopped => break,
            End::GoAway(delay, alternates, elsewhere) => {
                told_to_go = Some(Instant::now());
                match home_dialer(&dialer, &alternates).filter(|_| elsewhere) {
                    Some(home) => {
                        dialer = home;
                        shift = 0;
                    }
                    None => shift = follow(&dialer, phone.index, shift, &alternates),
                }
                delay
            }
            End::Lost(error) => {
                bump(&shared.counters.disconnects);
                state.show_error(&format!("{}: connection lost: {error}", phone.user));
                RECONNECT_BASE
            }
        };
        client = loop {
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = phase.wait_for(|p| *p == Phase::Stopped) => {
                    state.finish();
                    return;
                }
            }
            match login(&phone, &shared, &mut dialer, state.last_seq, shift).await {
                Ok((client, _)) => {
                    bump(&shared.counters.reconnects);
                    if let Some(at) = told_to_go {
                        let micros = u64::try_from(at.elapsed().as_micros()).unwrap_or(u64::MAX);
                        shared.reconnect.record_all(phone.index, &[micros]);
                    }
                    break client;
                }
                Err(error) => {
                    state.show_error(&format!("{}: reconnect failed: {error}", phone.user));
                    delay = (delay * 2).clamp(RECONNECT_BASE, RECONNECT_MAX);
                    // The next attempt goes to the next server, as a phone with several
                    // addresses would: a node that is down does not keep its phones away.
                    shift += 1;
                }
            }
        };
        state.outbox.resend_all(Instant::now());
        state.last_ack_at = None;
    }
    state.finish();
}

/// The shift that makes connection `index` go to the first of `alternates` the dialer knows
/// (a GoAway's other nodes); without one, the next server (the one going away is not
/// retried first).
fn follow(dialer: &Dialer, index: usize, shift: usize, alternates: &[String]) -> usize {
    let now = index + shift;
    let count = dialer.servers().len().max(1);
    alternates
        .iter()
        .filter_map(|addr| addr.parse::<std::net::SocketAddr>().ok())
        .find_map(|addr| dialer.servers().iter().position(|server| *server == addr))
        .map_or(shift + 1, |target| {
            shift + (target + count - now % count) % count
        })
}

/// A dialer for the addresses of a GoAway ELSEWHERE, plain or TLS as `dialer` (none parse:
/// `None`).
fn home_dialer(dialer: &Dialer, alternates: &[String]) -> Option<Dialer> {
    let addrs: Vec<SocketAddr> = alternates
        .iter()
        .filter_map(|addr| addr.parse().ok())
        .collect();
    dialer.elsewhere(&addrs).ok()
}

/// Logs in to `dialer`'s server for connection `phone.index + shift` (0: the phone's own). A
/// GoAway ELSEWHERE replaces `dialer` with the home datacenter's addresses it names and the
/// login is repeated there at once.
async fn login(
    phone: &Phone,
    shared: &Shared,
    dialer: &mut Dialer,
    resume_after: u64,
    shift: usize,
) -> Result<(Client, Welcome), LoadError> {
    // The gate is never closed; if it were, dialing without it is still correct.
    let _permit = shared.dial_gate.acquire().await.ok();
    let mut redirects = 0;
    loop {
        let login = dialer
            .login(phone.index + shift, &phone.user, &phone.token, resume_after)
            .await;
        match login {
            Ok(login) => {
                bump(&shared.counters.logins);
                return Ok(login);
            }
            Err(LoadError::Elsewhere { user, alternates }) => {
                bump(&shared.counters.elsewhere);
                match home_dialer(dialer, &alternates) {
                    Some(home) if redirects < MAX_REDIRECTS => {
                        *dialer = home;
                        redirects += 1;
                    }
                    _ => return Err(LoadError::Elsewhere { user, alternates }),
                }
            }
            Err(error) => {
                if matches!(error, LoadError::Handshake { .. }) {
                    bump(&shared.counters.handshake_failures);
                }
                return Err(error);
            }
        }
    }
}

/// Counts a phone in `Counters::open` while it exists.
pub struct OpenConnection<'a>(&'a Counters);

impl<'a> OpenConnection<'a> {
    /// Counts one more open connection.
    pub fn new(counters: &'a Counters) -> Self {
        counters.open.fetch_add(1, Ordering::Relaxed);
        Self(counters)
    }
}

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Reports the first connection's outcome to the coordinator and waits for the sending phase;
/// the connection (counted open) when the run goes on, `None` when it failed or was stopped.
pub async fn enter<'a, T>(
    first: Result<T, LoadError>,
    counters: &'a Counters,
    phase: &mut watch::Receiver<Phase>,
    ready: mpsc::Sender<Result<(), LoadError>>,
) -> Option<(T, OpenConnection<'a>)> {
    let connected = match first {
        Ok(connected) => {
            let _ = ready.send(Ok(())).await;
            connected
        }
        Err(error) => {
            let _ = ready.send(Err(error)).await;
            return None;
        }
    };
    drop(ready);
    let open = OpenConnection::new(counters);
    let started = match phase.wait_for(|p| *p != Phase::Connecting).await {
        Ok(current) => *current != Phase::Stopped,
        Err(_) => false,
    };
    started.then_some((connected, open))
}

/// Counts a message from the partner (its stamp, if it is one of this run's), with its latency.
pub fn count_delivery(
    phone: &Phone,
    shared: &Shared,
    latency: &mut Recorder,
    stamp: Option<Stamp>,
) {
    let counters = &shared.counters;
    let Some(stamp) = stamp else {
        bump(&counters.unexpected);
        return;
    };
    let delivery = phone
        .incoming
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .delivered(stamp.counter);
    match delivery {
        Delivery::First => {
            bump(&counters.delivered);
            latency.record(phone, shared, body::now_us().saturating_sub(stamp.sent_us));
        }
        Delivery::Duplicate => bump(&counters.duplicates),
        Delivery::Unknown => bump(&counters.unexpected),
    }
}

/// The first login of a run. Entries left in the mailbox by earlier runs are skipped (by logging
/// in again with `resume_after` at the mailbox's last seq) so that they do not compete with
/// this run's messages.
async fn login_fresh(
    phone: &Phone,
    shared: &Shared,
    dialer: &mut Dialer,
) -> Result<(Client, Welcome), LoadError> {
    let (client, welcome) = login(phone, shared, dialer, 0, 0).await?;
    if welcome.last_seq <= welcome.cursor {
        return Ok((client, welcome));
    }
    drop(client);
    shared
        .counters
        .backlog_skipped
        .fetch_add(welcome.last_seq - welcome.cursor, Ordering::Relaxed);
    login(phone, shared, dialer, welcome.last_seq, 0).await
}

/// A phone's state across its connections.
struct State<'a> {
    phone: &'a Phone,
    shared: &'a Shared,
    outbox: Outbox,
    pacer: Bucket,
    frames: Bucket,
    latency: Recorder,
    /// Highest mailbox seq received (and handled).
    last_seq: u64,
    /// Highest seq acked to the server.
    acked_seq: u64,
    /// When to repeat an ack refused by the server's rate limit.
    ack_retry_at: Option<Instant>,
    /// Frames queued on the writer and not flushed.
    queued: bool,
    /// When the last frames were written.
    last_write: Instant,
    /// Ping after this long without writing (a third of the server's idle timeout).
    keepalive: Option<Duration>,
    /// Pings sent (their nonces).
    pings: u64,
    /// When this connection last got an ack (none yet on it: a gap across this phone's own
    /// reconnect is not a pause of the server's).
    last_ack_at: Option<Instant>,
}

/// The earlier of two optional deadlines.
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl<'a> State<'a> {
    fn new(phone: &'a Phone, shared: &'a Shared, welcome: &Welcome) -> Self {
        let now = Instant::now();
        // Stagger the first paced send over one interval so phones do not send in lockstep.
        let stagger = phone.index as f64 / shared.phones.max(1) as f64;
        let rate = shared.rate_per_phone;
        let pacer = Bucket::new(rate, (rate * 0.05).max(1.0), stagger, now);
        let frame_rate = shared.frame_rate.unwrap_or_else(|| {
            let announced = welcome.frames_per_sec;
            let limit = if announced > 0 {
                announced
            } else {
                shared.config_frames_per_sec
            };
            f64::from(limit) * FRAME_RATE_SHARE
        });
        let frames = Bucket::new(frame_rate, (frame_rate * 0.1).max(1.0), 1.0, now);
        Self {
            phone,
            shared,
            outbox: Outbox::new(shared.window),
            pacer,
            frames,
            latency: Recorder::new(phone.index),
            last_seq: welcome.cursor,
            acked_seq: welcome.cursor,
            ack_retry_at: None,
            last_ack_at: None,
            queued: false,
            last_write: now,
            keepalive: (welcome.idle_timeout_secs > 0)
                .then(|| Duration::from_secs(welcome.idle_timeout_secs.into()) / 3),
            pings: 0,
        }
    }

    /// Serves one connection until it ends.
    async fn drive(&mut self, client: Client, phase: &mut watch::Receiver<Phase>) -> End {
        let (mut reader, mut writer) = client.split();
        // A connection starts by acking what the resume cursor already covers.
        self.acked_seq = self.acked_seq.max(self.last_seq);
        let sleep = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(sleep);
        loop {
            let current = *phase.borrow_and_update();
            if current == Phase::Stopped {
                return End::Stopped;
            }
            let now = Instant::now();
            if self.ack_retry_at.is_some_and(|at| at <= now) {
                self.ack_retry_at = None;
                self.queue_ack_again(&mut writer);
            }
            let ping_at = self.keepalive.map(|every| self.last_write + every);
            if ping_at.is_some_and(|at| at <= now) {
                self.queue_ping(&mut writer, now);
            }
            let wake = earliest(
                self.queue_sends(&mut writer, current, now),
                earliest(self.ack_retry_at, ping_at),
            );
            if let Err(error) = self.flush(&mut writer).await {
                return End::Lost(error);
            }
            if let Some(at) = wake {
                sleep.as_mut().reset(at.into());
            }
            tokio::select! {
                received = reader.recv() => {
                    if let Some(end) = self.on_received(received, &mut reader, &mut writer) {
                        return end;
                    }
                }
                () = &mut sleep, if wake.is_some() => {}
                changed = phase.changed() => {
                    if changed.is_err() {
                        return End::Stopped;
                    }
                }
            }
        }
    }

    async fn flush(&mut self, writer: &mut ClientWriter) -> Result<(), ClientError> {
        if std::mem::take(&mut self.queued) {
            writer.flush().await?;
            self.last_write = Instant::now();
        }
        Ok(())
    }

    /// A Ping, so that a phone with nothing to send is not closed as idle.
    fn queue_ping(&mut self, writer: &mut ClientWriter, now: Instant) {
        self.pings += 1;
        writer.queue(client_frame::Frame::Ping(Ping { nonce: self.pings }));
        self.frames.force_take(now);
        self.queued = true;
    }

    /// Queues due retries and new messages; returns when to look again (`None`: only when a
    /// frame arrives or the phase changes).
    fn queue_sends(
        &mut self,
        writer: &mut ClientWriter,
        phase: Phase,
        now: Instant,
    ) -> Option<Instant> {
        let paced = self.shared.rate_per_phone > 0.0;
        for _ in 0..SEND_BATCH {
            let can_send_new = phase == Phase::Sending && self.outbox.has_room();
            let retry_due = self.outbox.next_retry().is_some_and(|at| at <= now);
            let new_due = can_send_new && self.pacer.ready(now);
            if !retry_due && !new_due {
                let pacer_wake = (can_send_new && paced).then(|| self.pacer.next_ready(now));
                return earliest(self.outbox.next_retry(), pacer_wake);
            }
            if !self.frames.ready(now) {
                return Some(self.frames.next_ready(now));
            }
            if retry_due {
                // `None` here only drops entries of messages acked meanwhile.
                if let Some((counter, pending)) = self.outbox.due_retry(now) {
                    self.outgoing().retried(counter);
                    self.queue_send(writer, counter, pending.sent_us, now);
                    bump(&self.shared.counters.retries);
                }
            } else {
                self.pacer.try_take(now);
                let sent_us = body::now_us();
                let counter = self.outbox.push(sent_us);
                self.outgoing().sent(counter);
                bump(&self.shared.counters.sent);
                self.shared
                    .counters
                    .in_flight
                    .fetch_add(1, Ordering::Relaxed);
                self.queue_send(writer, counter, sent_us, now);
            }
        }
        // More to send: come back right after reading what arrived meanwhile.
        Some(now)
    }

    fn queue_send(&mut self, writer: &mut ClientWriter, counter: u64, sent_us: u64, now: Instant) {
        let stamp = Stamp {
            run: self.shared.run,
            sender: u32::try_from(self.phone.index).unwrap_or(u32::MAX),
            counter,
            sent_us,
        };
        let id = body::client_msg_id(self.shared.run, counter);
        writer.queue(text_frame(
            &id,
            &self.phone.partner,
            &stamp.encode(self.shared.size),
        ));
        self.frames.force_take(now);
        self.queued = true;
    }

    fn outgoing(&self) -> std::sync::MutexGuard<'_, Tracker> {
        self.phone
            .outgoing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Prints one problem to stderr, up to [`ERRORS_SHOWN`] per run.
    fn show_error(&self, line: &str) {
        let shown = self.shared.errors_shown.fetch_add(1, Ordering::Relaxed);
        if shown < ERRORS_SHOWN {
            eprintln!("{line}");
        } else if shown == ERRORS_SHOWN {
            eprintln!("(further errors are only counted)");
        }
    }

    /// Hands the remaining latencies to the shared histogram.
    fn finish(&mut self) {
        self.latency.flush(self.phone, self.shared);
    }
}
