//! `tern-load offline-drain`: logs in every recipient named in an `offline-send` record file,
//! receives its mailbox up to QueueDrained, acks it, and checks the deliveries against the
//! record: every recorded message must arrive, at its recorded seq, in increasing seq order. A
//! message acked as queued for a recipient homed in another datacenter is recorded with seq 0
//! (its mailbox seq is assigned there): it must arrive, at any seq.
//!
//! Draining acks what it receives, so a second drain of the same mailboxes finds them empty: drain
//! once per record. A recipient whose Welcome cursor is already past recorded messages was
//! drained before; those messages still count as lost, and the JSON says why
//! (`acked_before_run`, `why_lost`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tern::proto::v1::{DeviceAck, ServerFrame, client_frame, deliver, server_frame::Frame};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::Verdict;
use super::offline_send::DEVICE;
use crate::dial::Dialer;
use crate::error::LoadError;
use crate::poll::now_or_never;
use crate::procfs::Watch;
use crate::report::{Report, round1, round3};
use crate::target::{ServerArgs, Target};

/// Logins of one recipient attempted before its drain is given up.
const LOGIN_ATTEMPTS: u32 = 20;
/// Delay between login attempts.
const LOGIN_RETRY: Duration = Duration::from_millis(500);
/// Delivered entries after which an ack goes out even if more are waiting.
const ACK_EVERY: u64 = 64;

/// Arguments of `tern-load offline-drain`.
#[derive(Debug, Clone, clap::Args)]
pub struct OfflineDrainArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The record file written by `offline-send`.
    #[arg(long)]
    record: PathBuf,
    /// Print the figures as one JSON object (the last line on stdout).
    #[arg(long)]
    json: bool,
    /// Seconds each recipient may take to reach QueueDrained.
    #[arg(long, default_value_t = 120.0)]
    timeout: f64,
    /// The server's process id: its memory and CPU time are read from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
}

/// The recorded messages: recipient → client_msg_id → seq.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Record {
    /// Recorded messages by recipient.
    pub by_recipient: BTreeMap<String, HashMap<String, u64>>,
    /// Lines read (complete ones; a torn last line is not counted).
    pub lines: u64,
}

impl Record {
    /// Recorded messages in total.
    pub fn expected(&self) -> u64 {
        self.by_recipient.values().map(|m| m.len() as u64).sum()
    }
}

/// Parses a record file. A last line without its newline (torn by a kill during the write) is
/// ignored; any other malformed line, or a message recorded twice with different seqs, is an
/// error naming the line.
pub fn parse_record(bytes: &[u8]) -> Result<Record, String> {
    let complete = match bytes.iter().rposition(|b| *b == b'\n') {
        Some(last) => &bytes[..=last],
        None => &[][..],
    };
    let text = std::str::from_utf8(complete).map_err(|e| format!("not UTF-8: {e}"))?;
    let mut record = Record::default();
    for (number, line) in text.lines().enumerate() {
        let line_no = number + 1;
        record.lines += 1;
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [recipient, id, seq] = fields[..] else {
            return Err(format!(
                "line {line_no}: expected `recipient client_msg_id seq`, got {line:?}"
            ));
        };
        let seq: u64 = seq
            .parse()
            .map_err(|_| format!("line {line_no}: bad seq {seq:?}"))?;
        let previous = record
            .by_recipient
            .entry(recipient.to_owned())
            .or_default()
            .insert(id.to_owned(), seq);
        if let Some(previous) = previous.filter(|p| *p != seq) {
            return Err(format!(
                "line {line_no}: {recipient} {id} recorded with seq {previous} and {seq}"
            ));
        }
    }
    Ok(record)
}

/// One recipient's chat deliveries in arrival order: (seq, client_msg_id).
pub type Deliveries = Vec<(u64, String)>;

/// The figures of a drain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DrainReport {
    /// Always `"offline-drain"`.
    pub scenario: &'static str,
    /// Messages in the record.
    pub expected: u64,
    /// Recorded messages delivered at their recorded seq (at any seq for those recorded with
    /// seq 0, acked as queued for another datacenter).
    pub delivered: u64,
    /// Recorded messages not delivered at their recorded seq (`expected - delivered`).
    pub lost: u64,
    /// Deliveries beyond the first of a client_msg_id to one recipient.
    pub duplicates: u64,
    /// Deliveries whose seq was not above the recipient's previous one.
    pub out_of_order: u64,
    /// Distinct messages delivered that the record does not name (sent, acked after the
    /// record's last line or never acked, e.g. when the sender was killed).
    pub unrecorded: u64,
    /// Of the lost: delivered, but never at the recorded seq.
    pub seq_mismatch: u64,
    /// Recipients whose drain did not reach QueueDrained (login failed, timeout).
    pub incomplete: u64,
    /// Of the lost: recorded at or below the cursor its recipient had at its first login, so
    /// acked before this run (an earlier drain of the same record) and never sent again.
    pub acked_before_run: u64,
    /// Why messages are lost, when this run can tell (a record drained before); else `None`.
    pub why_lost: Option<String>,
}

/// Compares the deliveries with the record; `cursors` holds each recipient's Welcome cursor at
/// its first login (entries up to it were acked before this run).
pub fn check(
    record: &Record,
    deliveries: &BTreeMap<String, Deliveries>,
    cursors: &BTreeMap<String, u64>,
) -> DrainReport {
    let mut report = DrainReport {
        scenario: "offline-drain",
        expected: record.expected(),
        ..DrainReport::default()
    };
    let none = HashMap::new();
    let recipients: BTreeSet<&String> = record
        .by_recipient
        .keys()
        .chain(deliveries.keys())
        .collect();
    for recipient in recipients {
        let recorded = record.by_recipient.get(recipient).unwrap_or(&none);
        let got = deliveries.get(recipient).map_or(&[][..], Vec::as_slice);
        let mut seqs_by_id: HashMap<&str, Vec<u64>> = HashMap::new();
        let mut previous: Option<u64> = None;
        for (seq, id) in got {
            if previous.is_some_and(|p| *seq <= p) {
                report.out_of_order += 1;
            }
            previous = Some(*seq);
            seqs_by_id.entry(id.as_str()).or_default().push(*seq);
        }
        for (id, seqs) in &seqs_by_id {
            report.duplicates += seqs.len() as u64 - 1;
            if !recorded.contains_key(*id) {
                report.unrecorded += 1;
            }
        }
        let cursor = cursors.get(recipient).copied().unwrap_or(0);
        for (id, seq) in recorded {
            // Seq 0: queued for another datacenter when acked; no seq to compare, and no way to
            // tell whether an earlier drain acked it.
            let queued = *seq == 0;
            match seqs_by_id.get(id.as_str()) {
                Some(seqs) if queued || seqs.contains(seq) => report.delivered += 1,
                Some(_) => report.seq_mismatch += 1,
                None if !queued && *seq <= cursor => report.acked_before_run += 1,
                None => {}
            }
        }
    }
    report.lost = report.expected - report.delivered;
    if report.acked_before_run > 0 {
        report.why_lost = Some(format!(
            "already drained: {} of the {} lost recorded messages were acked before this run \
             (an earlier drain of this record); drain once per record",
            report.acked_before_run, report.lost
        ));
    }
    report
}

/// Runs the scenario; fails when a recorded message was lost or delivered out of order.
pub async fn run(args: OfflineDrainArgs) -> Result<Verdict, LoadError> {
    if !(args.timeout > 0.0 && args.timeout.is_finite()) {
        return Err(LoadError::Args("--timeout must be positive".to_owned()));
    }
    let bytes = std::fs::read(&args.record).map_err(|error| {
        LoadError::Args(format!("cannot read {}: {error}", args.record.display()))
    })?;
    let record = parse_record(&bytes)
        .map_err(|error| LoadError::Args(format!("{}: {error}", args.record.display())))?;
    let target = Arc::new(Target::open(&args.server, 24 * 3600).await?);
    let watch = Watch::start(args.server_pid)?;
    let start = Instant::now();
    let dialer = target.dialer.clone();
    eprintln!(
        "offline-drain: {} recorded messages for {} recipients at {}",
        record.expected(),
        record.by_recipient.len(),
        target.dialer.describe()
    );
    let gate = Arc::new(Semaphore::new(256));
    let timeout = Duration::from_secs_f64(args.timeout);
    let mut tasks = JoinSet::new();
    for (index, recipient) in record.by_recipient.keys().enumerate() {
        let token = target.token(recipient, DEVICE)?;
        let recipient = recipient.clone();
        let gate = gate.clone();
        let dialer = dialer.clone();
        tasks.spawn(async move {
            let mut got = Vec::new();
            let mut cursor = 0;
            let drained = tokio::time::timeout(
                timeout,
                drain(
                    dialer,
                    index,
                    &recipient,
                    &token,
                    &gate,
                    &mut got,
                    &mut cursor,
                ),
            )
            .await
            .unwrap_or_else(|_| Err(format!("no QueueDrained within {} s", timeout.as_secs())));
            (recipient, got, cursor, drained)
        });
    }
    let mut deliveries = BTreeMap::new();
    let mut cursors = BTreeMap::new();
    let mut incomplete = 0;
    while let Some(joined) = tasks.join_next().await {
        let Ok((recipient, got, cursor, drained)) = joined else {
            incomplete += 1;
            continue;
        };
        if let Err(error) = drained {
            eprintln!("offline-drain: {recipient}: {error}");
            incomplete += 1;
        }
        cursors.insert(recipient.clone(), cursor);
        deliveries.insert(recipient, got);
    }
    let mut report = check(&record, &deliveries, &cursors);
    report.incomplete = incomplete;
    let wall_s = start.elapsed().as_secs_f64();
    let mut common = Report::new("offline-drain", "tern");
    common.connections = Some(record.by_recipient.len() as u64);
    common.duration_s = Some(round3(wall_s));
    common.delivered = Some(report.delivered);
    common.lost = Some(report.lost);
    common.duplicates = Some(report.duplicates);
    common.msgs_per_sec = Some(round1(report.delivered as f64 / wall_s.max(1e-3)));
    if let Some(watch) = &watch {
        common.set_watched(&watch.read()?, report.delivered);
    }
    common.put("expected", report.expected);
    common.put("out_of_order", report.out_of_order);
    common.put("unrecorded", report.unrecorded);
    common.put("seq_mismatch", report.seq_mismatch);
    common.put("incomplete", report.incomplete);
    common.put("acked_before_run", report.acked_before_run);
    common.put("why_lost", &report.why_lost);
    if args.json {
        common.print(true);
    } else {
        println!(
            "offline-drain: expected {} delivered {} lost {} (seq mismatch {}) duplicates {} out of order {} unrecorded {} incomplete {}",
            report.expected,
            report.delivered,
            report.lost,
            report.seq_mismatch,
            report.duplicates,
            report.out_of_order,
            report.unrecorded,
            report.incomplete
        );
        if let Some(why) = &report.why_lost {
            println!("offline-drain: {why}");
        }
    }
    Ok(if report.lost > 0 || report.out_of_order > 0 {
        Verdict::Fail
    } else {
        Verdict::Pass
    })
}

/// Receives one recipient's mailbox until QueueDrained, acking as it goes; reconnects (resuming
/// after the last seq received) when the connection drops. `acked_before` is set to the cursor
/// of the first Welcome: what an earlier drain acked.
async fn drain(
    dialer: Dialer,
    index: usize,
    recipient: &str,
    token: &str,
    gate: &Semaphore,
    got: &mut Deliveries,
    acked_before: &mut u64,
) -> Result<(), String> {
    let mut last_seq = 0;
    let mut failures = 0;
    loop {
        let login = {
            let _permit = gate.acquire().await.ok();
            dialer.login(index, recipient, token, last_seq).await
        };
        let (client, welcome) = match login {
            Ok(ok) => ok,
            Err(error) => {
                failures += 1;
                if failures >= LOGIN_ATTEMPTS {
                    return Err(format!("login failed: {error}"));
                }
                tokio::time::sleep(LOGIN_RETRY).await;
                continue;
            }
        };
        if last_seq == 0 && welcome.cursor > 0 {
            *acked_before = welcome.cursor;
            eprintln!(
                "offline-drain: {recipient}: entries up to seq {} were acked before (an earlier drain?)",
                welcome.cursor
            );
        }
        last_seq = last_seq.max(welcome.cursor);
        let mut acked_seq = last_seq;
        let (mut reader, mut writer) = client.split();
        let outcome = loop {
            let mut received = reader.recv().await;
            let mut outcome = None;
            loop {
                match received {
                    Ok(Some(ServerFrame { frame: Some(frame) })) => match frame {
                        Frame::Deliver(entry) => {
                            if let Some(deliver::Payload::Message(message)) = entry.payload {
                                got.push((entry.seq, message.client_msg_id));
                            }
                            last_seq = last_seq.max(entry.seq);
                        }
                        Frame::QueueDrained(_) => outcome = Some(Outcome::Drained),
                        Frame::GoAway(go_away) => {
                            outcome = Some(Outcome::Reconnect(
                                Duration::from_millis(go_away.reconnect_after_ms.into()),
                                format!("GoAway {}", go_away.message),
                            ));
                        }
                        _ => {}
                    },
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        outcome = Some(Outcome::Reconnect(LOGIN_RETRY, "closed".to_owned()));
                    }
                    Err(error) => {
                        outcome = Some(Outcome::Reconnect(LOGIN_RETRY, error.to_string()));
                    }
                }
                if outcome.is_some() || last_seq >= acked_seq + ACK_EVERY {
                    break;
                }
                match now_or_never(reader.recv()) {
                    Some(next) => received = next,
                    None => break,
                }
            }
            if last_seq > acked_seq {
                acked_seq = last_seq;
                let ack = client_frame::Frame::Ack(DeviceAck {
                    up_to_seq: last_seq,
                });
                if let Err(error) = writer.send(ack).await {
                    outcome = outcome
                        .or_else(|| Some(Outcome::Reconnect(LOGIN_RETRY, error.to_string())));
                }
            }
            if let Some(outcome) = outcome {
                break outcome;
            }
        };
        match outcome {
            Outcome::Drained => return Ok(()),
            Outcome::Reconnect(delay, why) => {
                eprintln!(
                    "offline-drain: {recipient}: connection ended ({why}); resuming after {last_seq}"
                );
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// How a drain connection ended.
enum Outcome {
    /// QueueDrained arrived.
    Drained,
    /// Reconnect after the delay (the reason is printed).
    Reconnect(Duration, String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deliveries(list: &[(&str, &[(u64, &str)])]) -> BTreeMap<String, Deliveries> {
        list.iter()
            .map(|(r, d)| {
                (
                    (*r).to_owned(),
                    d.iter().map(|(s, id)| (*s, (*id).to_owned())).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn a_torn_last_line_is_ignored_and_lines_are_grouped_by_recipient() {
        let text = b"off-r0 1-0 1\noff-r1 1-1 1\noff-r0 1-2 2\noff-r1 1-3 2\noff-r0 1-4";
        let record = parse_record(text).unwrap();
        assert_eq!(record.lines, 4);
        assert_eq!(record.expected(), 4);
        assert_eq!(record.by_recipient["off-r0"]["1-2"], 2);
        assert!(!record.by_recipient["off-r0"].contains_key("1-4"));
        // A torn line that happens to look complete is still dropped: no newline, no line.
        assert_eq!(parse_record(b"off-r0 1-0 1").unwrap().expected(), 0);
        assert_eq!(parse_record(b"").unwrap(), Record::default());
    }

    #[test]
    fn malformed_or_conflicting_lines_are_errors_with_their_line_number() {
        let bad = parse_record(b"off-r0 1-0 1\noff-r0 1-1\n").unwrap_err();
        assert!(bad.starts_with("line 2:"), "{bad}");
        let bad = parse_record(b"off-r0 1-0 x\n").unwrap_err();
        assert!(bad.contains("bad seq"), "{bad}");
        let bad = parse_record(b"off-r0 1-0 1\noff-r0 1-0 2\n").unwrap_err();
        assert!(bad.starts_with("line 2:"), "{bad}");
        // The same line twice (appended by a retried write) is harmless.
        let same = parse_record(b"off-r0 1-0 1\noff-r0 1-0 1\n").unwrap();
        assert_eq!(same.expected(), 1);
    }

    #[test]
    fn a_complete_in_order_drain_passes() {
        let record = parse_record(b"a 1-0 1\na 1-1 2\nb 1-2 1\n").unwrap();
        let got = deliveries(&[("a", &[(1, "1-0"), (2, "1-1")]), ("b", &[(1, "1-2")])]);
        let r = check(&record, &got, &BTreeMap::new());
        assert_eq!((r.expected, r.delivered, r.lost), (3, 3, 0));
        assert_eq!((r.duplicates, r.out_of_order, r.unrecorded), (0, 0, 0));
    }

    #[test]
    fn missing_and_wrong_seq_deliveries_are_lost() {
        let record = parse_record(b"a 1-0 1\na 1-1 2\na 1-2 3\nb 1-3 1\n").unwrap();
        // 1-1 never arrives, 1-2 arrives at another seq, b gets nothing.
        let got = deliveries(&[("a", &[(1, "1-0"), (4, "1-2")])]);
        let r = check(&record, &got, &BTreeMap::new());
        assert_eq!(r.delivered, 1);
        assert_eq!(r.lost, 3);
        assert_eq!(r.seq_mismatch, 1);
        assert_eq!(r.out_of_order, 0);
    }

    #[test]
    fn duplicates_unrecorded_and_out_of_order_are_counted_per_recipient() {
        let record = parse_record(b"a 1-0 1\na 1-1 2\nb 1-0 5\n").unwrap();
        let got = deliveries(&[
            // 1-0 twice (once out of order), plus 9-9 that the record does not name.
            ("a", &[(1, "1-0"), (2, "1-1"), (1, "1-0"), (3, "9-9")]),
            // The same id at another recipient is a different message, not a duplicate.
            ("b", &[(5, "1-0")]),
        ]);
        let r = check(&record, &got, &BTreeMap::new());
        assert_eq!((r.expected, r.delivered, r.lost), (3, 3, 0));
        assert_eq!(r.duplicates, 1);
        assert_eq!(r.out_of_order, 1);
        assert_eq!(r.unrecorded, 1);
    }

    #[test]
    fn messages_acked_as_queued_for_another_datacenter_may_arrive_at_any_seq() {
        // 1-1 and 1-2 were acked with seq 0 (queued); 1-2 never arrives.
        let record = parse_record(
            b"a 1-0 1
a 1-1 0
a 1-2 0
",
        )
        .unwrap();
        let got = deliveries(&[("a", &[(1, "1-0"), (7, "1-1")])]);
        let cursors = BTreeMap::from([("a".to_owned(), 3)]);
        let r = check(&record, &got, &cursors);
        assert_eq!((r.expected, r.delivered, r.lost), (3, 2, 1));
        assert_eq!(
            (r.seq_mismatch, r.acked_before_run, r.out_of_order),
            (0, 0, 0)
        );
        assert_eq!(r.why_lost, None);
    }

    #[test]
    fn a_record_drained_before_says_why_its_messages_are_lost() {
        let record = parse_record(
            b"a 1-0 1
a 1-1 2
b 1-2 1
",
        )
        .unwrap();
        // a was drained up to seq 2 by an earlier run; b never was, and 1-2 is really missing.
        let cursors = BTreeMap::from([("a".to_owned(), 2), ("b".to_owned(), 0)]);
        let r = check(&record, &BTreeMap::new(), &cursors);
        assert_eq!((r.expected, r.delivered, r.lost), (3, 0, 3));
        assert_eq!(r.acked_before_run, 2);
        let why = r.why_lost.expect("a reason");
        assert!(why.starts_with("already drained: 2 of the 3"), "{why}");
        let json = serde_json::to_value(check(&record, &BTreeMap::new(), &cursors)).unwrap();
        assert_eq!(json["acked_before_run"], 2);
        assert!(json["why_lost"].as_str().unwrap().contains("earlier drain"));
        // A first drain has no reason to give.
        let r = check(&record, &BTreeMap::new(), &BTreeMap::new());
        assert_eq!((r.acked_before_run, r.why_lost), (0, None));
    }
}
