//! Write-back passes, in steps.
//!
//! A pass writes back a worker's entries accepted before its cutoff and still unacked, deletes
//! written-back entries every device has acked since, and saves changed last seqs, cursors and
//! dedup tables (see [`super::super::checkpoint`]). After a burst a pass has much to encode
//! (each mailbox's dedup table alone may be hundreds of kilobytes), and done as one job it
//! would hold the worker, and the runtime thread under it, for milliseconds while appends wait.
//! So it runs in steps of at most [`STEP_BYTES`] of store writes (or [`STEP_SLOTS`]
//! mailboxes): each step's batch goes to the store at once, and the dispatcher runs the jobs
//! queued meanwhile between steps ([`crate::dispatch::Worker::step`]).
//!
//! Why this is still one pass: every mailbox the worker held when the pass began is visited
//! once (the ones still there); a mailbox made since holds only entries accepted after the
//! pass began, newer than its cutoff, and metadata newer than the sample the pass covers. The
//! steps' batches go to the worker's store queue in order, before any later batch of the worker
//! (an eviction's), so none of them overwrites a newer write. The pass counts as applied when
//! every batch was applied and every dedup table could be saved: the worker's part of the
//! checkpoint's countdown ends only then.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{MailboxWorker, Shared, group, take, write_changes, write_entries};
use crate::group::fanout::FanOut;
use crate::mailbox::Slot;
use crate::mailbox::checkpoint::Countdown;
use crate::message::Id;
use crate::store::WriteBatch;

/// A step ends once its store batch has grown to this many bytes.
const STEP_BYTES: usize = 64 * 1024;

/// A step ends after this many mailboxes, even if they wrote little.
const STEP_SLOTS: usize = 512;

/// A pass under way.
pub(in crate::mailbox) struct Pass {
    older_than_ms: u64,
    /// The last pass failed: everything held is written again.
    rewrite: bool,
    /// The mailboxes not visited yet.
    rest: Vec<Id>,
    /// False once some step could not save a dedup table: the pass then covers no record.
    dedup_saved: bool,
    /// The worker's part of the checkpoint's countdown; `None` once finished.
    done: Option<Arc<Countdown>>,
}

impl Drop for Pass {
    /// A pass dropped unfinished (a step panicked, the worker stopped) counts as failed, so the
    /// checkpoint waiting on it goes on.
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            done.finish(false);
        }
    }
}

/// What visiting a mailbox needs besides the mailbox: the pass and the worker's settings.
struct Visit<'a> {
    pass: &'a Pass,
    dedup_window: usize,
    fanout: &'a FanOut,
    shared: &'a Shared,
}

/// One step of a pass: its batch, and what its mailboxes added.
struct Step {
    batch: WriteBatch,
    written: u64,
    /// Every dedup table of the step could be saved.
    saved: bool,
    visited: usize,
}

impl Step {
    fn new() -> Self {
        Step {
            batch: WriteBatch::new(),
            written: 0,
            saved: true,
            visited: 0,
        }
    }

    /// Adds `owner`'s part of the pass to the batch; true once the step is full.
    fn add(&mut self, visit: &Visit<'_>, owner: &Id, slot: &mut Slot) -> bool {
        let batch = &mut self.batch;
        if visit.pass.rewrite {
            slot.written_upto = 0;
            slot.dirty = true;
            slot.mailbox.dedup_mut().mark_unsaved(visit.dedup_window);
        }
        self.written += write_entries(owner, slot, batch, visit.pass.older_than_ms);
        let acked = slot
            .mailbox
            .min_cursor()
            .unwrap_or(0)
            .min(slot.written_upto);
        if acked > slot.deleted_upto {
            batch.delete_entries_up_to(owner.as_bytes(), acked);
            slot.deleted_upto = acked;
        }
        group::report_released(visit.fanout, owner, slot);
        self.saved &= write_changes(owner, slot, batch, visit.dedup_window, visit.shared);
        self.visited += 1;
        batch.approximate_bytes() >= STEP_BYTES || self.visited >= STEP_SLOTS
    }
}

impl MailboxWorker {
    /// Starts a write-back pass of entries accepted before `older_than_ms` (on the monotonic
    /// clock), reported to `done`, and runs its first step. A pass still under way (never the
    /// case with one checkpointer waiting for each pass) is finished first.
    pub(super) fn write_back(&mut self, older_than_ms: u64, done: Arc<Countdown>) {
        while self.pass.is_some() {
            self.write_back_step();
        }
        let mut pass = Pass {
            older_than_ms,
            rewrite: self.writeback_failed.swap(false, Ordering::AcqRel),
            rest: Vec::new(),
            dedup_saved: true,
            done: Some(done),
        };
        // The first step walks the map itself, and lists what it leaves for the next ones.
        let mut step = Step::new();
        let visit = Visit {
            pass: &pass,
            dedup_window: self.dedup_window,
            fanout: &self.fanout,
            shared: &self.shared,
        };
        let mut slots = self.slots.iter_mut();
        for (owner, slot) in slots.by_ref() {
            if step.add(&visit, owner, slot) {
                break;
            }
        }
        pass.rest = slots.map(|(owner, _)| owner.clone()).collect();
        self.end_step(pass, step);
    }

    /// Runs the next step of the pass under way, if any.
    pub(super) fn write_back_step(&mut self) {
        // Taken out while the step runs: a step that panics drops it, failing the pass.
        let Some(mut pass) = self.pass.take() else {
            return;
        };
        self.writeback_steps.increment(1);
        let mut step = Step::new();
        let mut rest = std::mem::take(&mut pass.rest);
        let visit = Visit {
            pass: &pass,
            dedup_window: self.dedup_window,
            fanout: &self.fanout,
            shared: &self.shared,
        };
        while let Some(owner) = rest.pop() {
            // Gone since the pass began (a snapshot replaced it): nothing of it to write.
            let Some(slot) = self.slots.get_mut(&owner) else {
                continue;
            };
            if step.add(&visit, &owner, slot) {
                break;
            }
        }
        pass.rest = rest;
        self.end_step(pass, step);
    }

    /// Ends a step: retries the dedup tables once if an append failed during it, submits its
    /// batch (with the groups' part after the last mailbox), and finishes the pass or keeps it
    /// for the next step.
    fn end_step(&mut self, mut pass: Pass, step: Step) {
        let Step {
            mut batch,
            written,
            mut saved,
            ..
        } = step;
        if !saved {
            // An append failed during the step: forget it, then save what is left, once.
            if take(&self.shared.has_failed) {
                self.forget_failed();
            }
            saved = true;
            for (owner, slot) in &mut self.slots {
                saved &= write_changes(owner, slot, &mut batch, self.dedup_window, &self.shared);
            }
        }
        pass.dedup_saved &= saved;
        let last = pass.rest.is_empty();
        if last {
            self.write_back_groups(&mut batch, pass.rewrite);
            self.pump_all();
        }
        self.written_back.increment(written);
        if !self.submit_step(batch, &pass) {
            // The store refused it: the next pass rewrites everything, this one has failed.
            pass.rest.clear();
            return;
        }
        if last {
            if let Some(done) = pass.done.take() {
                done.finish(pass.dedup_saved);
            }
        } else {
            self.pass = Some(pass);
        }
    }

    /// Sends a step's `batch` to the store, as one more part of the pass's countdown; false
    /// when the store refused it.
    fn submit_step(&mut self, batch: WriteBatch, pass: &Pass) -> bool {
        let Some(done) = &pass.done else {
            return false;
        };
        if batch.is_empty() {
            return true;
        }
        done.add_part();
        let failed = self.writeback_failed.clone();
        let shared = self.shared.clone();
        let finish = done.clone();
        let submitted = self
            .stores
            .write_batch_with(self.shard, batch, move |result| {
                if result.is_err() {
                    shared.store_failures.fetch_add(1, Ordering::AcqRel);
                    failed.store(true, Ordering::Release);
                }
                finish.finish(result.is_ok());
            });
        if submitted.is_err() {
            self.writeback_failed.store(true, Ordering::Release);
            // The callback was dropped unrun: its part ends here.
            done.finish(false);
            return false;
        }
        true
    }
}
