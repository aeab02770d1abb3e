//! One slot group's proposals from this node: records queue here, a task takes whatever has
//! queued as one entry (the group commit), and every record's completion runs when its entry
//! is applied here (committed: acked after a majority has it on disk), or with `false` once its
//! fate is unknown.
//!
//! Entries carry this ledger's token. An entry applied with the current token is this node's
//! own: its workers already made the records, so only the completions run. Any other entry is
//! applied to the workers. When a proposal fails, or another leader's entry is applied while
//! proposals are in flight, every in-flight completion runs with `false` (the workers withdraw
//! what they made) and the token changes first, so an entry of those proposals that is
//! committed after all is applied like another node's and nothing is lost or doubled.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use bytes::Bytes;
use tokio::sync::{Semaphore, mpsc};

use crate::cluster::raft::slot::{SlotCommand, SlotError, SlotGroups};
use crate::mailbox::durability::Done;

/// Records queued for one group before appends are refused (the phone retries).
pub const QUEUE: usize = 65_536;
/// Records in one entry, at most.
pub const MAX_RECORDS: usize = 4096;
/// Bytes of records in one entry, about.
pub const MAX_BYTES: usize = 1024 * 1024;
/// Entries of one group in flight at once: one, so that everything queued during a round
/// trip goes in the next entry (fewer, larger entries cost less CPU per message than four in
/// flight did, measured).
pub const IN_FLIGHT: usize = 1;

struct State {
    token: u64,
    next_serial: u64,
    in_flight: BTreeMap<u64, Vec<Done>>,
}

/// One group's proposals.
pub struct Ledger {
    group: u64,
    queue: mpsc::Sender<(Bytes, Done)>,
    state: Mutex<State>,
}

/// What applying an entry of the group means here.
pub enum Applied {
    /// This node's own entry: its completions ran.
    Own,
    /// Another's: apply its records.
    Foreign,
}

impl Ledger {
    /// The ledger of `group`, proposing through `groups`; its task ends with the last sender.
    pub fn start(group: u64, groups: Weak<SlotGroups>) -> Arc<Ledger> {
        let (queue, queued) = mpsc::channel(QUEUE);
        let ledger = Arc::new(Ledger {
            group,
            queue,
            state: Mutex::new(State {
                token: fresh_token(),
                next_serial: 1,
                in_flight: BTreeMap::new(),
            }),
        });
        tokio::spawn(propose(Arc::downgrade(&ledger), queued, groups));
        ledger
    }

    /// Queues `record`; `Err` gives `done` back when the queue is full.
    pub fn push(&self, record: Bytes, done: Done) -> Result<(), Done> {
        self.queue
            .try_send((record, done))
            .map_err(|error| match error {
                mpsc::error::TrySendError::Full((_, done))
                | mpsc::error::TrySendError::Closed((_, done)) => done,
            })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Called for every applied entry of the group, in log order.
    pub fn applied(&self, command: &SlotCommand) -> Applied {
        let mut state = self.lock();
        if command.origin == state.token {
            let done = state.in_flight.remove(&command.serial);
            drop(state);
            for done in done.into_iter().flatten() {
                done(true);
            }
            return Applied::Own;
        }
        if !state.in_flight.is_empty() {
            // Another leader's entry: what this node has in flight will not be committed as
            // its own any more. Withdrawn before the foreign records reach the workers.
            let failed = take_all(&mut state);
            drop(state);
            fail(failed);
        }
        Applied::Foreign
    }

    /// A proposal failed: everything in flight has an unknown fate.
    fn failed(&self, serial: u64) {
        let mut state = self.lock();
        if !state.in_flight.contains_key(&serial) {
            return;
        }
        let failed = take_all(&mut state);
        drop(state);
        fail(failed);
    }
}

fn take_all(state: &mut State) -> Vec<Done> {
    state.token = fresh_token();
    std::mem::take(&mut state.in_flight)
        .into_values()
        .flatten()
        .collect()
}

fn fail(done: Vec<Done>) {
    for done in done {
        done(false);
    }
}

fn fresh_token() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // Keys drawn from the OS once per thread, then stepped: distinct on every call and in
    // every process. Never 0, the origin of entries nobody proposed through a ledger.
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
        | 1
}

/// Takes what has queued as one entry at a time and submits it, at most [`IN_FLIGHT`] at once.
async fn propose(
    ledger: Weak<Ledger>,
    mut queued: mpsc::Receiver<(Bytes, Done)>,
    groups: Weak<SlotGroups>,
) {
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some((record, done)) = queued.recv().await {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let mut bytes = record.len();
        let mut records = vec![record];
        let mut dones = vec![done];
        while records.len() < MAX_RECORDS && bytes < MAX_BYTES {
            match queued.try_recv() {
                Ok((record, done)) => {
                    bytes += record.len();
                    records.push(record);
                    dones.push(done);
                }
                Err(_) => break,
            }
        }
        let (Some(ledger), Some(groups)) = (ledger.upgrade(), groups.upgrade()) else {
            fail(dones);
            return;
        };
        let (origin, serial) = {
            let mut state = ledger.lock();
            let serial = state.next_serial;
            state.next_serial += 1;
            state.in_flight.insert(serial, dones);
            (state.token, serial)
        };
        let command = SlotCommand {
            records,
            origin,
            serial,
            media: Vec::new(),
        };
        match groups.submit(ledger.group, command).await {
            Ok(outcome) => {
                tokio::spawn(async move {
                    if let Err(error) = outcome.await {
                        note(&error);
                        ledger.failed(serial);
                    }
                    drop(permit);
                });
            }
            Err(error) => {
                note(&error);
                ledger.failed(serial);
            }
        }
    }
}

fn note(error: &SlotError) {
    tracing::debug!(%error, "slot group proposal failed");
}
