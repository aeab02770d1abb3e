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
//! In a cluster, recipients, authors and groups another node owns are that node's: the lane
//! hands their part to [`Elsewhere`] (set once the node joined its cluster), which sends each
//! entry once to every node with recipients, in group order.
//!
//! Supervision: a lane ends only when [`FanOut::stop`] is called (shutdown) or the mailboxes
//! have stopped; the node's supervisor treats any other end of a lane task as fatal.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};
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

/// Mailboxes and groups another node owns: where the fan-out sends their part (in a cluster).
pub trait Elsewhere: Send + Sync {
    /// Sends `entry` to those of `recipients` another node owns, in group order per node; each
    /// of them finishes `done` once (its copy durable there, or failed: the entry is handed to
    /// the fan-out again later). Returns the recipients owned here.
    fn copy(&self, entry: &Arc<GroupEntry>, recipients: &[Id], done: &Arc<Countdown>) -> Vec<Id>;
    /// Sends `notice` to those of `authors` another node owns; returns the ones owned here.
    fn receipt(&self, notice: &GroupReceiptNotice, authors: Vec<Id>) -> Vec<Id>;
    /// Tells `group`'s owner that `member` released its copies up to `upto`, when that is
    /// another node; false when the group is here.
    fn released(&self, group: &Id, member: &Id, upto: u64) -> bool;
    /// Relays typing in `group` to those of `members` another node owns; returns the ones
    /// owned here.
    fn typing(&self, group: &Id, from_user: &Id, typing: bool, members: Vec<Id>) -> Vec<Id>;
    /// Whether this node serves `group` now: with replicated slots a follower holds the
    /// group's entries too, but only its slot group's leader fans them out.
    fn serves(&self, _group: &Id) -> bool {
        true
    }
}

/// Set once, when the node joins its cluster; unset on a node without one.
pub type ElsewhereCell = Arc<OnceLock<Arc<dyn Elsewhere>>>;

/// The senders of the fan-out lanes.
#[derive(Clone)]
pub struct FanOut {
    lanes: Arc<[mpsc::Sender<FanOutJob>]>,
    /// Cancelled by [`FanOut::stop`].
    stop: CancellationToken,
    /// The other nodes' part of the fan-out, in a cluster.
    elsewhere: ElsewhereCell,
}

impl std::fmt::Debug for FanOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FanOut")
            .field("lanes", &self.lanes.len())
            .field("clustered", &self.elsewhere.get().is_some())
            .finish()
    }
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
                elsewhere: Arc::default(),
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

    /// Where the other nodes' part goes (its lanes and the groups' workers read it).
    pub fn elsewhere(&self) -> &ElsewhereCell {
        &self.elsewhere
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
    elsewhere: ElsewhereCell,
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
                let copies = Copies {
                    entry,
                    recipients: &recipients,
                    accepted,
                };
                copy_entry(&mailboxes, elsewhere.get(), copies, permit).await
            }
            FanOutJob::Receipt { notice, authors } => {
                drop(permit);
                let authors = match elsewhere.get() {
                    Some(elsewhere) => elsewhere.receipt(&notice, authors),
                    None => authors,
                };
                copy_receipt(&mailboxes, notice, authors).await
            }
            FanOutJob::Released {
                group,
                member,
                upto,
            } => {
                drop(permit);
                if elsewhere
                    .get()
                    .is_some_and(|elsewhere| elsewhere.released(&group, &member, upto))
                {
                    continue;
                }
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

/// One entry to copy.
struct Copies<'a> {
    entry: Arc<GroupEntry>,
    recipients: &'a [Id],
    /// When the group accepted it (for the fan-out latency).
    accepted: Instant,
}

/// Appends `entry` to every recipient's mailbox (those another node owns through
/// `elsewhere`); a task then waits for them all to be durable and reports to the group's
/// worker. Returns true when the mailboxes have stopped.
async fn copy_entry(
    mailboxes: &Arc<Mailboxes>,
    elsewhere: Option<&Arc<dyn Elsewhere>>,
    copies: Copies<'_>,
    permit: OwnedSemaphorePermit,
) -> bool {
    let Copies {
        entry,
        recipients,
        accepted,
    } = copies;
    let (countdown, outcome) = Countdown::new(recipients.len());
    let here = match elsewhere {
        Some(elsewhere) => Cow::Owned(elsewhere.copy(&entry, recipients, &countdown)),
        None => Cow::Borrowed(recipients),
    };
    let copy_id = copy_id(&entry);
    for recipient in here.iter() {
        let job = copy_job(recipient.clone(), &entry, &copy_id, &countdown);
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

/// The dedup key of an entry's copies: the group position, never a phone's own id.
pub fn copy_id(entry: &GroupEntry) -> Arc<str> {
    Arc::from(format!("#{}/{}", entry.group_id, entry.group_seq))
}

/// The append of `entry`'s copy to `recipient`'s mailbox, counted down by `done` once durable.
pub fn copy_job(
    recipient: Id,
    entry: &Arc<GroupEntry>,
    copy_id: &Arc<str>,
    done: &Arc<Countdown>,
) -> AppendJob {
    AppendJob {
        owner: recipient,
        from_user: entry.from_user.clone(),
        from_device: entry.from_device.clone(),
        client_msg_id: copy_id.clone(),
        server_id: entry.server_id,
        timestamp_ms: entry.timestamp_ms,
        content: Content::Copy(Payload::Group(entry.clone())),
        reply: None,
        done: Some(done.clone()),
    }
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
