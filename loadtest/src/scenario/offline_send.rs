//! `tern-load offline-send`: sender phones send messages to recipients that are never logged
//! in, and every ServerAck is appended to a record file as `recipient client_msg_id seq`.
//!
//! The record is the server's promise: each line is a message the server said was durable.
//! `tern-load offline-drain` later logs the recipients in and checks that every recorded
//! message arrives at its recorded seq. The sender survives a server restart (kill -9
//! included): it reconnects with backoff and resends its unacked messages with the same ids.
//!
//! Message `k` (0..M) is sent by sender `k % N` to recipient `(k / N) % R`; its id is
//! `<run>-<k>`, the run being the start time in milliseconds, so that ids stay unique across
//! runs appended to the same file.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tern::client::{Client, ClientError, ClientWriter, text_frame};
use tern::proto::v1::{DeviceAck, ErrorCode, ServerFrame, client_frame, server_frame::Frame};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::Verdict;
use crate::bucket::Bucket;
use crate::dial::Dialer;
use crate::error::LoadError;
use crate::poll::now_or_never;
use crate::procfs::Watch;
use crate::progress::{bump, get};
use crate::report::{Report, round1, round3};
use crate::target::{ServerArgs, Target};

/// The device every sender (and recipient) logs in as.
pub const DEVICE: &str = "d";
/// A sender gives up when it could not connect or log in for this long.
const GIVE_UP: Duration = Duration::from_secs(10);
/// First delay before reconnecting; doubled per failed attempt.
const RECONNECT_BASE: Duration = Duration::from_millis(100);
/// Longest delay between reconnect attempts.
const RECONNECT_MAX: Duration = Duration::from_secs(1);
/// First delay before retrying a refused message; doubled per refusal of the same message.
const RETRY_BASE: Duration = Duration::from_millis(50);
/// Longest retry delay.
const RETRY_MAX: Duration = Duration::from_secs(1);
/// Share of the server's per-connection frame limit a sender uses.
const FRAME_RATE_SHARE: f64 = 0.9;
/// Frames handled before the sender writes again.
const READ_BATCH: usize = 1024;
/// Sends queued before the sender reads again.
const SEND_BATCH: usize = 64;
/// Error lines printed per run.
const ERRORS_SHOWN: u64 = 20;

/// Arguments of `tern-load offline-send`.
#[derive(Debug, Clone, clap::Args)]
pub struct OfflineSendArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Sender phones (users `<prefix>s<i>`).
    #[arg(long)]
    users: usize,
    /// Messages in total, spread over the senders.
    #[arg(long)]
    messages: u64,
    /// File the acked messages are appended to (`recipient client_msg_id seq` per line).
    #[arg(long)]
    record: PathBuf,
    /// Recipients (users `<prefix>r<j>`, never logged in); defaults to --users.
    #[arg(long)]
    recipients: Option<usize>,
    /// Prefix of the user names.
    #[arg(long, default_value = "off-")]
    user_prefix: String,
    /// Unacked sends per sender, at most.
    #[arg(long, default_value_t = 32)]
    window: usize,
    /// The server's process id: its memory and CPU time are read from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
}

/// How messages are spread and named.
#[derive(Debug, Clone)]
struct Plan {
    run: u64,
    senders: usize,
    recipients: usize,
    messages: u64,
    prefix: String,
}

impl Plan {
    fn sender(&self, i: usize) -> String {
        format!("{}s{i}", self.prefix)
    }

    fn recipient_of(&self, k: u64) -> String {
        let j = (k / self.senders as u64) % self.recipients as u64;
        format!("{}r{j}", self.prefix)
    }

    fn id(&self, k: u64) -> String {
        format!("{}-{k}", self.run)
    }

    /// The message number in an id of this run.
    fn parse_id(&self, id: &str) -> Option<u64> {
        let (run, k) = id.split_once('-')?;
        if run.parse::<u64>().ok()? != self.run {
            return None;
        }
        k.parse().ok().filter(|k| *k < self.messages)
    }

    /// Message numbers of sender `i`: i, i + N, i + 2N... below M.
    fn messages_of(&self, i: usize) -> std::iter::StepBy<std::ops::Range<u64>> {
        (i as u64..self.messages).step_by(self.senders)
    }
}

/// One record line.
pub fn record_line(recipient: &str, client_msg_id: &str, seq: u64) -> String {
    format!("{recipient} {client_msg_id} {seq}\n")
}

/// The record file, shared by the senders; every append is flushed to the OS at once, so a
/// kill -9 of this process keeps every line written.
struct Recorder {
    file: Mutex<BufWriter<File>>,
}

impl Recorder {
    fn open(path: &PathBuf) -> io::Result<Self> {
        let file = File::options().create(true).append(true).open(path)?;
        Ok(Self {
            file: Mutex::new(BufWriter::new(file)),
        })
    }

    fn append(&self, lines: &[String]) -> io::Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        for line in lines {
            file.write_all(line.as_bytes())?;
        }
        file.flush()
    }

    fn flush(&self) -> io::Result<()> {
        self.file
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .flush()
    }
}

/// Run-wide counters.
#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    acked: AtomicU64,
    refused: AtomicU64,
    retries: AtomicU64,
    failed: AtomicU64,
    reconnects: AtomicU64,
    go_aways: AtomicU64,
    duplicate_acks: AtomicU64,
    errors_shown: AtomicU64,
}

impl Counters {
    fn show_error(&self, line: &str) {
        let shown = self.errors_shown.fetch_add(1, Ordering::Relaxed);
        if shown < ERRORS_SHOWN {
            eprintln!("offline-send: {line}");
        } else if shown == ERRORS_SHOWN {
            eprintln!("offline-send: (further errors are only counted)");
        }
    }
}

struct Shared {
    plan: Plan,
    target: Target,
    dialer: Dialer,
    recorder: Recorder,
    window: usize,
    counters: Counters,
    dial_gate: Semaphore,
}

/// Why a sender stopped before all its messages were acked.
enum Stop {
    /// The server could not be reached for [`GIVE_UP`].
    Gone(LoadError),
    /// The record file could not be written.
    Record(io::Error),
}

/// Runs the scenario: Pass once all messages are acked, Fail when the server is gone for good
/// (or a message was refused permanently).
pub async fn run(args: OfflineSendArgs) -> Result<Verdict, LoadError> {
    if args.users == 0 || args.window == 0 || args.recipients == Some(0) {
        return Err(LoadError::Args(
            "--users, --recipients and --window must be at least 1".to_owned(),
        ));
    }
    let target = Target::open(&args.server, 24 * 3600).await?;
    let watch = Watch::start(args.server_pid)?;
    let recorder = Recorder::open(&args.record).map_err(|error| {
        LoadError::Args(format!("cannot open {}: {error}", args.record.display()))
    })?;
    let run_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let plan = Plan {
        run: run_ms,
        senders: args.users,
        recipients: args.recipients.unwrap_or(args.users),
        messages: args.messages,
        prefix: args.user_prefix.clone(),
    };
    eprintln!(
        "offline-send: {} messages from {} senders to {} recipients via {}, window {}, run {}, record {}",
        plan.messages,
        plan.senders,
        plan.recipients,
        target.dialer.describe(),
        args.window,
        plan.run,
        args.record.display()
    );
    let shared = Arc::new(Shared {
        dialer: target.dialer.clone(),
        target,
        plan,
        recorder,
        window: args.window,
        counters: Counters::default(),
        dial_gate: Semaphore::new(256),
    });

    let mut tasks = JoinSet::new();
    for i in 0..args.users {
        tasks.spawn(sender(i, shared.clone()));
    }
    let start = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    let mut stop = None;
    loop {
        tokio::select! {
            joined = tasks.join_next() => match joined {
                None => break,
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(error))) => {
                    stop = Some(error);
                    tasks.abort_all();
                }
                Some(Err(join)) if join.is_cancelled() => {}
                Some(Err(join)) => {
                    stop = Some(Stop::Record(io::Error::other(join.to_string())));
                    tasks.abort_all();
                }
            },
            _ = ticker.tick() => progress(&shared.counters, start),
        }
    }
    progress(&shared.counters, start);
    let flushed = shared.recorder.flush();
    let c = &shared.counters;
    let wall_s = start.elapsed().as_secs_f64();
    let mut report = Report::new("offline-send", "tern");
    report.connections = Some(args.users as u64);
    report.duration_s = Some(round3(wall_s));
    report.sent = Some(get(&c.sent));
    report.acked = Some(get(&c.acked));
    report.msgs_per_sec = Some(round1(get(&c.acked) as f64 / wall_s.max(1e-3)));
    if let Some(watch) = &watch {
        report.set_watched(&watch.read()?, get(&c.acked));
    }
    for (name, counter) in [
        ("refused", &c.refused),
        ("retries", &c.retries),
        ("failed", &c.failed),
        ("reconnects", &c.reconnects),
        ("go_aways", &c.go_aways),
        ("duplicate_acks", &c.duplicate_acks),
    ] {
        report.put(name, get(counter));
    }
    report.put("run", shared.plan.run);
    report.put(
        "complete",
        stop.is_none() && get(&c.acked) == shared.plan.messages,
    );
    report.print(true);
    match (stop, flushed) {
        (Some(Stop::Record(error)), _) | (None, Err(error)) => Err(LoadError::Args(format!(
            "cannot write {}: {error}",
            args.record.display()
        ))),
        (Some(Stop::Gone(error)), _) => {
            eprintln!(
                "offline-send: server unreachable for more than {} s, giving up: {error}",
                GIVE_UP.as_secs()
            );
            Ok(Verdict::Fail)
        }
        (None, Ok(())) if get(&c.failed) > 0 => Ok(Verdict::Fail),
        (None, Ok(())) => Ok(Verdict::Pass),
    }
}

fn progress(c: &Counters, start: Instant) {
    eprintln!(
        "[{:>4.0}s] sent {} acked {} refused {} retries {} reconnects {} goaways {}",
        start.elapsed().as_secs_f64(),
        get(&c.sent),
        get(&c.acked),
        get(&c.refused),
        get(&c.retries),
        get(&c.reconnects),
        get(&c.go_aways),
    );
}

/// One sender's unacked messages.
#[derive(Debug, Default)]
struct Outbox {
    /// Message number → refusals so far.
    pending: BTreeMap<u64, u32>,
    /// Messages to send again, by due time (acked ones are skipped when due).
    retries: VecDeque<(Instant, u64)>,
}

impl Outbox {
    fn refused(&mut self, k: u64, now: Instant) -> bool {
        let Some(refusals) = self.pending.get_mut(&k) else {
            return false;
        };
        *refusals = refusals.saturating_add(1);
        let delay = RETRY_BASE
            .saturating_mul(1 << (*refusals).min(16).saturating_sub(1))
            .min(RETRY_MAX);
        let at = now + delay;
        let position = self.retries.partition_point(|(t, _)| *t <= at);
        self.retries.insert(position, (at, k));
        true
    }

    fn resend_all(&mut self, now: Instant) {
        self.retries.clear();
        self.retries.extend(self.pending.keys().map(|k| (now, *k)));
    }

    fn next_retry(&mut self) -> Option<Instant> {
        while let Some(&(at, k)) = self.retries.front() {
            if self.pending.contains_key(&k) {
                return Some(at);
            }
            self.retries.pop_front();
        }
        None
    }
}

/// Why a connection ended.
enum End {
    /// Everything acked.
    Done,
    /// GoAway: reconnect after this delay.
    GoAway(Duration),
    /// The connection failed.
    Lost(ClientError),
    /// The record could not be written.
    Record(io::Error),
}

struct Sender<'a> {
    shared: &'a Shared,
    index: usize,
    user: String,
    todo: std::iter::Peekable<std::iter::StepBy<std::ops::Range<u64>>>,
    outbox: Outbox,
    frames: Bucket,
    /// Highest seq of the sender's own mailbox received, and acked.
    last_seq: u64,
    acked_seq: u64,
}

async fn sender(index: usize, shared: Arc<Shared>) -> Result<(), Stop> {
    let plan = &shared.plan;
    let user = plan.sender(index);
    let token = shared.target.token(&user, DEVICE).map_err(Stop::Gone)?;
    let mut s = Sender {
        shared: &shared,
        index,
        user,
        todo: plan.messages_of(index).peekable(),
        outbox: Outbox::default(),
        frames: Bucket::unlimited(Instant::now()),
        last_seq: 0,
        acked_seq: 0,
    };
    let mut delay = Duration::ZERO;
    let mut failing_since: Option<Instant> = None;
    let mut connections = 0u64;
    while !s.done() {
        tokio::time::sleep(delay).await;
        let login = {
            let _permit = shared.dial_gate.acquire().await.ok();
            shared.dialer.login(index, &s.user, &token, 0).await
        };
        let (client, welcome) = match login {
            Ok(ok) => ok,
            Err(error) => {
                let since = *failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() > GIVE_UP {
                    return Err(Stop::Gone(error));
                }
                if connections > 0 || since.elapsed() > Duration::from_secs(1) {
                    shared
                        .counters
                        .show_error(&format!("{}: reconnect failed: {error}", s.user));
                }
                delay = (delay * 2).clamp(RECONNECT_BASE, RECONNECT_MAX);
                continue;
            }
        };
        failing_since = None;
        if connections > 0 {
            bump(&shared.counters.reconnects);
        }
        connections += 1;
        let frame_rate = f64::from(if welcome.frames_per_sec > 0 {
            welcome.frames_per_sec
        } else {
            shared.target.config.limits.frames_per_sec
        }) * FRAME_RATE_SHARE;
        let now = Instant::now();
        s.frames = Bucket::new(frame_rate, (frame_rate * 0.1).max(1.0), 1.0, now);
        s.last_seq = welcome.cursor;
        s.acked_seq = welcome.cursor;
        s.outbox.resend_all(now);
        delay = match s.drive(client).await {
            End::Done => break,
            End::GoAway(after) => {
                bump(&shared.counters.go_aways);
                after
            }
            End::Lost(error) => {
                shared
                    .counters
                    .show_error(&format!("{}: connection lost: {error}", s.user));
                RECONNECT_BASE
            }
            End::Record(error) => return Err(Stop::Record(error)),
        };
    }
    Ok(())
}

impl Sender<'_> {
    fn done(&mut self) -> bool {
        self.todo.peek().is_none() && self.outbox.pending.is_empty()
    }

    async fn drive(&mut self, client: Client) -> End {
        let (mut reader, mut writer) = client.split();
        let sleep = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(sleep);
        loop {
            if self.done() {
                return End::Done;
            }
            let wake = self.queue_sends(&mut writer, Instant::now());
            if let Err(error) = writer.flush().await {
                return End::Lost(error);
            }
            if let Some(at) = wake {
                sleep.as_mut().reset(at.into());
            }
            tokio::select! {
                received = reader.recv() => {
                    let mut received = received;
                    let mut lines = Vec::new();
                    let mut end = None;
                    for _ in 0..READ_BATCH {
                        match received {
                            Ok(Some(ServerFrame { frame: Some(frame) })) => {
                                end = self.handle(frame, &mut lines);
                            }
                            Ok(Some(ServerFrame { frame: None })) => {}
                            Ok(None) => end = Some(End::Lost(ClientError::Closed)),
                            Err(error) => end = Some(End::Lost(error)),
                        }
                        if end.is_some() {
                            break;
                        }
                        match now_or_never(reader.recv()) {
                            Some(next) => received = next,
                            None => break,
                        }
                    }
                    // Record before anything else: these acks are the server's promises.
                    if let Err(error) = self.shared.recorder.append(&lines) {
                        return End::Record(error);
                    }
                    if let Some(end) = end {
                        return end;
                    }
                    if self.last_seq > self.acked_seq {
                        self.acked_seq = self.last_seq;
                        writer.queue(client_frame::Frame::Ack(DeviceAck { up_to_seq: self.last_seq }));
                    }
                }
                () = &mut sleep, if wake.is_some() => {}
            }
        }
    }

    /// Queues due retries and new messages; returns when to look again (`None`: when a frame
    /// arrives).
    fn queue_sends(&mut self, writer: &mut ClientWriter, now: Instant) -> Option<Instant> {
        for _ in 0..SEND_BATCH {
            let retry_at = self.outbox.next_retry();
            let retry_due = retry_at.is_some_and(|at| at <= now);
            let new_due =
                self.outbox.pending.len() < self.shared.window && self.todo.peek().is_some();
            if !retry_due && !new_due {
                return retry_at;
            }
            if !self.frames.ready(now) {
                return Some(self.frames.next_ready(now));
            }
            let k = if retry_due {
                bump(&self.shared.counters.retries);
                self.outbox.retries.pop_front().map(|(_, k)| k)
            } else {
                let k = self.todo.next();
                if let Some(k) = k {
                    self.outbox.pending.insert(k, 0);
                    bump(&self.shared.counters.sent);
                }
                k
            };
            if let Some(k) = k {
                let plan = &self.shared.plan;
                let body = format!("offline {} {k} from {}", plan.run, self.index);
                writer.queue(text_frame(
                    &plan.id(k),
                    &plan.recipient_of(k),
                    body.as_bytes(),
                ));
                self.frames.force_take(now);
            }
        }
        Some(now)
    }

    /// Handles one frame; appends a record line per first ack; `Some` when the connection ends.
    fn handle(&mut self, frame: Frame, lines: &mut Vec<String>) -> Option<End> {
        let counters = &self.shared.counters;
        let plan = &self.shared.plan;
        match frame {
            Frame::ServerAck(ack) => {
                if ack.duplicate {
                    bump(&counters.duplicate_acks);
                }
                let Some(k) = plan.parse_id(&ack.client_msg_id) else {
                    counters.show_error(&format!(
                        "{}: ack for an unknown id {:?}",
                        self.user, ack.client_msg_id
                    ));
                    return None;
                };
                if self.outbox.pending.remove(&k).is_some() {
                    bump(&counters.acked);
                    lines.push(record_line(
                        &plan.recipient_of(k),
                        &ack.client_msg_id,
                        ack.seq,
                    ));
                }
            }
            Frame::Error(error) => {
                let code = ErrorCode::try_from(error.code).unwrap_or(ErrorCode::Unspecified);
                let k = plan.parse_id(&error.client_msg_id);
                match (code, k) {
                    (
                        ErrorCode::Overloaded | ErrorCode::RateLimited | ErrorCode::StorageFailure,
                        Some(k),
                    ) => {
                        if self.outbox.refused(k, Instant::now()) {
                            bump(&counters.refused);
                        }
                    }
                    (_, Some(k)) => {
                        if self.outbox.pending.remove(&k).is_some() {
                            bump(&counters.failed);
                        }
                        counters.show_error(&format!(
                            "{}: message {} refused for good: {code:?} {}",
                            self.user, error.client_msg_id, error.message
                        ));
                    }
                    (_, None) => counters
                        .show_error(&format!("{}: error {code:?}: {}", self.user, error.message)),
                }
            }
            Frame::GoAway(go_away) => {
                return Some(End::GoAway(Duration::from_millis(
                    go_away.reconnect_after_ms.into(),
                )));
            }
            Frame::Deliver(deliver) => self.last_seq = self.last_seq.max(deliver.seq),
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(senders: usize, recipients: usize, messages: u64) -> Plan {
        Plan {
            run: 1_700_000_000_123,
            senders,
            recipients,
            messages,
            prefix: "off-".to_owned(),
        }
    }

    #[test]
    fn every_message_has_exactly_one_sender_and_ids_round_trip() {
        let p = plan(3, 2, 10);
        let mut all: Vec<u64> = (0..3).flat_map(|i| p.messages_of(i)).collect();
        all.sort_unstable();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        assert_eq!(p.parse_id(&p.id(7)), Some(7));
        assert_eq!(p.parse_id("1700000000124-7"), None, "another run");
        assert_eq!(p.parse_id(&p.id(10)), None, "beyond --messages");
        // Sender 0 sends 0, 3, 6, 9 to r0, r1, r0, r1.
        let to: Vec<String> = p.messages_of(0).map(|k| p.recipient_of(k)).collect();
        assert_eq!(to, ["off-r0", "off-r1", "off-r0", "off-r1"]);
    }

    #[test]
    fn refused_messages_wait_and_acked_ones_are_skipped() {
        let t = Instant::now();
        let mut o = Outbox::default();
        o.pending.insert(4, 0);
        o.pending.insert(8, 0);
        assert!(o.refused(4, t));
        assert!(o.refused(8, t));
        assert!(!o.refused(5, t), "not pending");
        assert_eq!(o.next_retry(), Some(t + RETRY_BASE));
        o.pending.remove(&4);
        assert_eq!(o.retries.len(), 2);
        assert_eq!(o.next_retry(), Some(t + RETRY_BASE));
        assert_eq!(o.retries.len(), 1, "the acked message was dropped");
        o.resend_all(t);
        assert_eq!(o.retries, [(t, 8)]);
    }
}
