//! Write-back and checkpoints: every `checkpoint_interval_secs`, each worker writes what has
//! stayed unacked longer than `writeback_delay_secs` (and changed cursors and last seqs) to the
//! stores; the stores are flushed and fsynced; then the journal segments whose records are all
//! reflected in the stores are released.
//!
//! Which journal records a pass covers: before each pass the checkpointer samples every
//! journal's durable LSN with the time. A record durable at sample time `t` was accepted before
//! `t`, so once a pass has written back everything accepted before `t` (and all changed
//! metadata), every record up to that sample's LSN is either acked or in the stores, and the
//! journal may drop it. Entries younger than the delay are never written back, which is why the
//! released sample is one at least the delay old.
//!
//! With replicated slots the same holds for each slot group's applied point: the sample takes
//! it before the pass (a record applied by then is in a worker's cache, an other node's as a
//! `Replay` queued on the lane the pass comes after, stamped accepted at 0), the checkpoint
//! saves it with the stores, and the group may then release its log up to it
//! ([`super::durability::Replicate::checkpointed`]).
//!
//! Every time here (samples, the pass's cutoff, and the entries' `accepted_ms` it is compared
//! with) is on the process's monotonic clock ([`crate::clock::monotonic_ms`]): with the wall
//! clock, a step backwards between an append and a sample would make the entry look younger than
//! the sample, and the sample's release would drop a record whose entry was never written back.
//! Entries recovered at start are stamped 0, older than any sample of this process.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::MailboxOp;
use super::Mailboxes;
use super::durability::Mark;
use super::recovery::{checkpoint_key, decode_slot_mark, encode_slot_mark, slot_checkpoint_key};
use crate::clock::monotonic_ms;
use crate::config::MailboxConfig;
use crate::store::WriteBatch;

/// Counts down the workers of one pass; resolves to whether all succeeded.
#[derive(Debug)]
pub struct Countdown {
    remaining: AtomicUsize,
    failed: AtomicBool,
    done: Mutex<Option<oneshot::Sender<bool>>>,
}

impl Countdown {
    /// A countdown of `parts`, and the receiver of its outcome.
    pub fn new(parts: usize) -> (Arc<Self>, oneshot::Receiver<bool>) {
        let (tx, rx) = oneshot::channel();
        let countdown = Arc::new(Self {
            remaining: AtomicUsize::new(parts),
            failed: AtomicBool::new(false),
            done: Mutex::new(Some(tx)),
        });
        if parts == 0 {
            countdown.finish_all();
        }
        (countdown, rx)
    }

    /// One more part, to be finished before the countdown can end; only added by a part
    /// that has not finished yet (a worker adding its pass's store batches one by one).
    pub fn add_part(&self) {
        self.remaining.fetch_add(1, Ordering::AcqRel);
    }

    /// One part finished.
    pub fn finish(&self, ok: bool) {
        if !ok {
            self.failed.store(true, Ordering::Release);
        }
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.finish_all();
        }
    }

    fn finish_all(&self) {
        let sender = self
            .done
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(sender) = sender {
            let _ = sender.send(!self.failed.load(Ordering::Acquire));
        }
    }
}

/// Runs write-back passes until the node shuts down.
pub async fn run(mailboxes: Arc<Mailboxes>, config: MailboxConfig, shutdown: CancellationToken) {
    let delay_ms = u64::from(config.writeback_delay_secs) * 1000;
    let mut interval = tokio::time::interval(std::time::Duration::from_secs(
        config.checkpoint_interval_secs.into(),
    ));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut samples: VecDeque<Sample> = VecDeque::new();
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let now = monotonic_ms();
        let journals = mailboxes.journals();
        let replicate = mailboxes.replicated();
        samples.push_back(Sample {
            at: now,
            lsns: journals.iter().map(|j| j.stats().durable_lsn).collect(),
            marks: replicate
                .as_ref()
                .map(|replicate| replicate.marks())
                .unwrap_or_default(),
        });
        let cutoff = now.saturating_sub(delay_ms);
        if !pass(&mailboxes, cutoff).await {
            metrics::counter!(crate::metrics::CHECKPOINT_FAILURES).increment(1);
            continue;
        }
        // The newest sample at least the delay (plus a second of slack) old.
        let mut release = None;
        while samples
            .front()
            .is_some_and(|sample| sample.at + 1000 <= cutoff)
        {
            release = samples.pop_front();
        }
        if let Some(sample) = release {
            if checkpoint(&mailboxes, &sample).await {
                for (journal, lsn) in journals.iter().zip(&sample.lsns) {
                    journal.release(*lsn);
                }
                if let Some(replicate) = &replicate {
                    replicate.checkpointed(sample.marks);
                }
                metrics::counter!(crate::metrics::CHECKPOINTS).increment(1);
            } else {
                metrics::counter!(crate::metrics::CHECKPOINT_FAILURES).increment(1);
            }
        }
    }
}

/// One write-back pass over every worker; true when every worker's batch was applied.
async fn pass(mailboxes: &Mailboxes, older_than_ms: u64) -> bool {
    let (countdown, outcome) = Countdown::new(mailboxes.workers());
    // On the internal lanes, waiting for room: a refused pass would hold back every
    // checkpoint.
    let refused = mailboxes
        .broadcast_wait(|| MailboxOp::WriteBack {
            older_than_ms,
            done: countdown.clone(),
        })
        .await;
    for _ in 0..refused {
        countdown.finish(false);
    }
    let applied = outcome.await.unwrap_or(false);
    if !applied {
        // Retried at the next interval; a failed store database reopens by itself.
        tracing::warn!(refused, "write-back pass failed; nothing released");
    }
    applied
}

/// What was durable or applied at one instant, before a pass.
struct Sample {
    /// On the monotonic clock.
    at: u64,
    /// Each journal's durable LSN.
    lsns: Vec<u64>,
    /// Each slot group's applied point (replicated slots).
    marks: Vec<Mark>,
}

/// Records the journals' checkpoint LSNs and the slot groups' durable points (those newer than
/// what is saved: a snapshot installed since the sample saved a newer one), and makes the
/// stores durable.
async fn checkpoint(mailboxes: &Mailboxes, sample: &Sample) -> bool {
    let stores = mailboxes.stores();
    let mut batch = WriteBatch::new();
    for (index, lsn) in sample.lsns.iter().enumerate() {
        batch.put_record(
            &checkpoint_key(index),
            bytes::Bytes::copy_from_slice(&lsn.to_be_bytes()),
        );
    }
    // Held until the batch is queued: a snapshot's point is not written in between.
    let _points = mailboxes.points().await;
    for mark in &sample.marks {
        let key = slot_checkpoint_key(mark.group);
        let saved = async { stores.get_record(0, &key)?.await }.await;
        let Ok(saved) = saved.map_err(|error| tracing::warn!(%error, "checkpoint failed")) else {
            return false;
        };
        let newer = saved
            .as_ref()
            .and_then(decode_slot_mark)
            .is_none_or(|(index, _)| index < mark.index);
        if newer {
            batch.put_record(&key, encode_slot_mark(mark.index, &mark.point));
        }
    }
    let written = match stores.write_batch(0, batch) {
        Ok(written) => written.await,
        Err(error) => Err(error),
    };
    let checkpointed = match written {
        Ok(()) => stores.checkpoint_all().await,
        Err(error) => Err(error),
    };
    match checkpointed {
        Ok(()) => true,
        Err(error) => {
            tracing::warn!(%error, "checkpoint failed; nothing released");
            false
        }
    }
}
