//! The fan-out: copies accepted group log entries into their recipients' mailboxes, and group
//! receipts into their authors' mailboxes, off the sender's path.
//!
//! `lanes` tasks, each with a bounded queue; a group always uses the same lane, so its entries
//! reach every mailbox in group order. A group worker reserves a queue slot before it accepts a
//! post (a full queue answers OVERLOADED, nothing is journaled), so an accepted entry always
//! finds room. Each entry's mailbox appends are counted down; when all are durable the lane
//! tells the group's worker (`GroupFannedOut`), which then forgets the entry. In-flight entries
//! per lane are bounded by a semaphore, so a slow journal slows the fan-out, not memory.
//!
//! Supervision: a lane ends only when [`FanOut::stop`] is called (shutdown) or the mailboxes
//! have stopped; the node's supervisor treats any other end of a lane task as fatal.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::mailbox::checkpoint::Countdown;
use crate::mailbox::{AppendJob, Content, MailboxOp, Mailboxes};
use crate::message::{GroupEntry, GroupReceiptNotice, Id, Payload};
use crate::metrics as names;
use crate::shard::key_hash;

/// Entries of one lane whose appends are still in flight.
const IN_FLIGHT_PER_LANE: usize = 256;

/// What the fan-out copies.
#[derive(Debug)]
pub enum FanOutJob {
    /// A group log entry, to each recipient's mailbox.
    Entry {
        /// The entry.
        entry: Arc<GroupEntry>,
        /// Its recipients.
        recipients: Arc<[Id]>,
        /// When the group accepted it (for the fan-out latency).
        accepted: Instant,
    },
    /// A member's receipt, to each author's mailbox.
    Receipt {
        /// The receipt.
        notice: GroupReceiptNotice,
        /// The authors it concerns.
        authors: Vec<Id>,
    },
    /// A mailbox released every copy of the group's entries up to a seq: to the group's worker.
    Released {
        /// The group.
        group: Id,
        /// The mailbox's owner.
        member: Id,
        /// Up to this group seq.
        upto: u64,
    },
}

/// The senders of the fan-out lanes.
#[derive(Debug, Clone)]
pub struct FanOut {
    lanes: Arc<[mpsc::Sender<FanOutJob>]>,
    /// Cancelled by [`FanOut::stop`].
    stop: CancellationToken,
}

/// A reserved slot in a fan-out lane: sending through it cannot fail or wait.
pub type FanOutPermit = mpsc::OwnedPermit<FanOutJob>;

impl FanOut {
    /// `lanes` lanes of `capacity` jobs each, and their receivers for [`run_lane`].
    pub fn new(lanes: usize, capacity: usize) -> (Self, Vec<mpsc::Receiver<FanOutJob>>) {
        let (senders, receivers): (Vec<_>, Vec<_>) =
            (0..lanes.max(1)).map(|_| mpsc::channel(capacity)).unzip();
        (
            Self {
                lanes: senders.into(),
                stop: CancellationToken::new(),
            },
            receivers,
        )
    }

    /// Reserves a slot in `group`'s lane; `None` when it is full.
    pub fn reserve(&self, group: &Id) -> Option<FanOutPermit> {
        let lane = (key_hash(group.as_bytes()) % self.lanes.len() as u64) as usize;
        self.lanes[lane].clone().try_reserve_owned().ok()
    }

    /// Ends every lane after the job it is handing out (shutdown); entries still queued are
    /// handed to the fan-out again by recovery.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Jobs one lane holds.
    pub fn capacity(&self) -> usize {
        self.lanes[0].max_capacity()
    }

    /// Cancelled once the fan-out stops (its lanes watch it).
    pub fn stopped(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Jobs waiting in all lanes.
    pub fn depth(&self) -> usize {
        self.lanes
            .iter()
            .map(|lane| lane.max_capacity() - lane.capacity())
            .sum()
    }
}

/// Runs one lane until its senders are gone, `stop` is cancelled or the mailboxes stop.
pub async fn run_lane(
    mut jobs: mpsc::Receiver<FanOutJob>,
    mailboxes: Arc<Mailboxes>,
    stop: CancellationToken,
) {
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT_PER_LANE));
    let sizes = metrics::histogram!(names::GROUP_FANOUT_RECIPIENTS);
    loop {
        let job = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            job = jobs.recv() => match job {
                Some(job) => job,
                None => return,
            },
        };
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let stopped = match job {
            FanOutJob::Entry {
                entry,
                recipients,
                accepted,
            } => {
                sizes.record(recipients.len() as f64);
                copy_entry(&mailboxes, entry, &recipients, accepted, permit).await
            }
            FanOutJob::Receipt { notice, authors } => {
                drop(permit);
                copy_receipt(&mailboxes, notice, authors).await
            }
            FanOutJob::Released {
                group,
                member,
                upto,
            } => {
                drop(permit);
                let op = MailboxOp::GroupReleased {
                    group,
                    member,
                    upto,
                };
                mailboxes.submit_wait(op).await.is_err()
            }
        };
        if stopped {
            return;
        }
    }
}

/// Appends `entry` to every recipient's mailbox; a task then waits for them all to be durable
/// and reports to the group's worker. Returns true when the mailboxes have stopped.
async fn copy_entry(
    mailboxes: &Arc<Mailboxes>,
    entry: Arc<GroupEntry>,
    recipients: &[Id],
    accepted: Instant,
    permit: OwnedSemaphorePermit,
) -> bool {
    let (countdown, outcome) = Countdown::new(recipients.len());
    // The dedup key of a copy: its author and the group position, never a phone's own id.
    let copy_id: Arc<str> = Arc::from(format!("#{}/{}", entry.group_id, entry.group_seq));
    for recipient in recipients {
        let job = AppendJob {
            owner: recipient.clone(),
            from_user: entry.from_user.clone(),
            from_device: entry.from_device.clone(),
            client_msg_id: copy_id.clone(),
            server_id: entry.server_id,
            timestamp_ms: entry.timestamp_ms,
            content: Content::Copy(Payload::Group(entry.clone())),
            reply: None,
            done: Some(countdown.clone()),
        };
        if mailboxes
            .submit_wait(MailboxOp::Append(Box::new(job)))
            .await
            .is_err()
        {
            return true;
        }
    }
    let mailboxes = mailboxes.clone();
    tokio::spawn(async move {
        let complete = outcome.await.unwrap_or(false);
        metrics::histogram!(names::GROUP_FANOUT_SECONDS).record(accepted.elapsed().as_secs_f64());
        drop(permit);
        let _ = mailboxes
            .submit_wait(MailboxOp::GroupFannedOut {
                group: entry.group_id.clone(),
                group_seq: entry.group_seq,
                complete,
            })
            .await;
    });
    false
}

/// Appends a member's receipt to each author's mailbox (losing one only loses a notice).
async fn copy_receipt(mailboxes: &Mailboxes, notice: GroupReceiptNotice, authors: Vec<Id>) -> bool {
    let client_msg_id: Arc<str> = Arc::from(format!(
        "#{}/{:?}/{}",
        notice.group_id, notice.kind, notice.up_to_group_seq
    ));
    for author in authors {
        let job = AppendJob {
            owner: author,
            from_user: notice.from_user.clone(),
            from_device: notice.from_device.clone(),
            client_msg_id: client_msg_id.clone(),
            server_id: 0,
            timestamp_ms: crate::clock::now_ms(),
            content: Content::Copy(Payload::GroupReceipt(notice.clone())),
            reply: None,
            done: None,
        };
        if mailboxes
            .submit_wait(MailboxOp::Append(Box::new(job)))
            .await
            .is_err()
        {
            return true;
        }
    }
    false
}
