//! Replicated slots: the bridge between this node's mailbox workers and its slot groups.
//!
//! - Writes: a worker's record goes to the [`Ledger`] of its key's slot group (the workers'
//!   [`Replicate`]), which proposes records in batches; a record is durable (acked, pushed,
//!   read) once its entry is committed on a majority of the island and applied here.
//! - Applies: every committed entry reaches this node's [`SlotApplier`]; another node's records
//!   go to the workers that own their keys as `Replay` operations (a follower keeps warm, a
//!   returning node catches up), this node's own only run their completions.
//! - Leadership: a task copies who leads each group into the node's [`Leaders`] table (which
//!   every route reads) and joins the groups of this node's island as the map places them.
//!
//! Supervision: [`Replica::start`] returns the follower task's handle; the slot groups' own
//! tasks stop with [`SlotGroups::shutdown`].

mod ledger;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use futures_util::future::BoxFuture;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cluster::leaders::{Leaders, island_groups, serving_leader, slot_group};
use crate::cluster::map::ClusterMap;
use crate::cluster::placement::NodeId;
use crate::cluster::raft::slot::{SlotApplier, SlotCommand, SlotGroups};
use crate::cluster::route::slot_of;
use crate::mailbox::durability::{Done, Mark, Replicate};
use crate::mailbox::record::{self, Record};
use crate::mailbox::recovery::{decode_slot_mark, slot_checkpoint_key};
use crate::mailbox::snapshot::Owners;
use crate::mailbox::{MailboxOp, Mailboxes};
use crate::media::Media;
use crate::message::Id;
use crate::proto::storage::StoreRows;

use ledger::{Applied, Ledger};

/// How often the leaders table is brought up to date from the slot groups.
const FOLLOW_EVERY: Duration = Duration::from_millis(50);
/// Attempts at installing a snapshot before the group gives up on this node.
const INSTALL_ATTEMPTS: u32 = 10;

/// The ledgers and the workers, shared by the write and apply sides.
#[derive(Default)]
pub struct Shared {
    ledgers: DashMap<u64, Arc<Ledger>>,
    mailboxes: OnceLock<Arc<Mailboxes>>,
    /// The cluster map (which slots a group has).
    map: OnceLock<watch::Receiver<Arc<ClusterMap>>>,
    /// Per group: `Replay` operations queued on the workers and not yet applied. The workers'
    /// lanes are not ordered among themselves, so a leader serves its phones only once none is
    /// left (its workers then hold everything committed before its term).
    replaying: DashMap<u64, Arc<AtomicI64>>,
    /// The node's media: entries of media changes are applied to it, and its share of a
    /// group's state travels in the group's snapshots.
    media: OnceLock<Arc<Media>>,
}

impl Shared {
    /// Replicates `media` through the slot groups from now on.
    pub fn attach_media(&self, media: Arc<Media>) {
        let _ = self.media.set(media);
    }

    fn replaying(&self, group: u64) -> Arc<AtomicI64> {
        self.replaying.entry(group).or_default().clone()
    }

    /// The users and groups whose slots are in slot group `group`, as the map places them now.
    fn owners(&self, group: u64) -> Option<Owners> {
        let map = self.map.get()?.borrow().clone();
        Some(Owners::new(move |owner| {
            let slot = slot_of(owner, map.placement.slots.len() as u32);
            map.placement
                .island_of(slot)
                .is_some_and(|island| slot_group(island.id, slot) == group)
        }))
    }
}

/// This node's replicated slots.
pub struct Replica {
    me: NodeId,
    shared: Arc<Shared>,
    groups: Arc<SlotGroups>,
    map: watch::Receiver<Arc<ClusterMap>>,
}

impl Replica {
    /// The applier the slot groups are started with (before the replica exists).
    pub fn applier() -> Arc<Shared> {
        Arc::new(Shared::default())
    }

    /// Starts replicating `mailboxes` through `groups` (started with `shared` as applier),
    /// joining the groups of this node's island as `map` places them, once the island has
    /// `island_size` members, and keeping `leaders`.
    pub fn start(
        me: NodeId,
        shared: Arc<Shared>,
        groups: Arc<SlotGroups>,
        map: watch::Receiver<Arc<ClusterMap>>,
        mailboxes: Arc<Mailboxes>,
        leaders: Arc<Leaders>,
        island_size: usize,
    ) -> (Arc<Replica>, JoinHandle<()>) {
        let _ = shared.mailboxes.set(mailboxes);
        let _ = shared.map.set(map.clone());
        let replica = Arc::new(Replica {
            me,
            shared,
            groups,
            map,
        });
        let task = tokio::spawn(follow(replica.clone(), leaders, island_size));
        (replica, task)
    }

    /// The group of `key`'s slot, if its slot is placed.
    fn group_of(&self, key: &str) -> Option<u64> {
        let map = self.map.borrow();
        let slot = slot_of(key.as_bytes(), map.placement.slots.len() as u32);
        let island = map.placement.island_of(slot)?;
        Some(slot_group(island.id, slot))
    }
}

impl Replicate for Replica {
    fn append(&self, key: &str, record: Bytes, done: Done) -> Result<(), Done> {
        let Some(group) = self.group_of(key) else {
            return Err(done);
        };
        let Some(ledger) = self.shared.ledgers.get(&group).map(|ledger| ledger.clone()) else {
            return Err(done);
        };
        ledger.push(record, done)
    }

    fn marks(&self) -> Vec<Mark> {
        self.groups
            .marks()
            .into_iter()
            .map(|(group, index, point)| Mark {
                group,
                index,
                point,
            })
            .collect()
    }

    fn checkpointed(&self, marks: Vec<Mark>) {
        self.groups.checkpointed(
            marks
                .into_iter()
                .map(|mark| (mark.group, mark.point))
                .collect(),
        );
    }
}

impl SlotApplier for Shared {
    fn apply(&self, group: u64, index: u64, command: SlotCommand) -> BoxFuture<'static, ()> {
        if command.records.is_empty() && !command.media.is_empty() {
            // Media changes come through no ledger: they neither are a ledger's own entry nor
            // fail what it has in flight.
            return match self.media.get() {
                Some(media) => media.apply_entry(group, index, command.media),
                None => {
                    tracing::error!(group, index, "media changes came before the media attached");
                    Box::pin(async {})
                }
            };
        }
        let ledger = self.ledgers.get(&group).map(|ledger| ledger.clone());
        if let Some(ledger) = ledger
            && let Applied::Own = ledger.applied(&command)
        {
            return Box::pin(async {});
        }
        let mailboxes = self.mailboxes.get().cloned();
        let pending = self.replaying(group);
        Box::pin(async move {
            let Some(mailboxes) = mailboxes else {
                tracing::error!(group, "a committed entry came before the workers started");
                return;
            };
            for (key, records) in by_key(command.records) {
                // Waits for room: a committed record is never dropped.
                pending.fetch_add(1, Ordering::AcqRel);
                let op = MailboxOp::Replay {
                    key,
                    records,
                    pending: pending.clone(),
                };
                if mailboxes.submit_wait(op).await.is_err() {
                    tracing::warn!(
                        group,
                        "the workers stopped before a committed entry applied"
                    );
                    return;
                }
            }
        })
    }

    fn export(&self, group: u64) -> BoxFuture<'static, Result<Bytes, String>> {
        let mailboxes = self.mailboxes.get().cloned();
        let owners = self.owners(group);
        let media = self.media.get().cloned();
        Box::pin(async move {
            let (Some(mailboxes), Some(owners)) = (mailboxes, owners) else {
                return Err(format!("slot group {group}: not started"));
            };
            let mut snapshot = mailboxes
                .export(owners.clone())
                .await
                .map_err(|error| error.to_string())?;
            if let Some(media) = media {
                // Fields concatenate: the media rows follow the mailbox rows' encoding.
                let rows = tokio::task::spawn_blocking(move || {
                    media.export_replicated(&|key| owners.contains(key))
                })
                .await
                .map_err(|error| error.to_string())?
                .map_err(|error| error.to_string())?;
                if !rows.is_empty() {
                    let mut joined = snapshot.to_vec();
                    prost::Message::encode(
                        &StoreRows {
                            rows: Vec::new(),
                            media: rows,
                        },
                        &mut joined,
                    )
                    .map_err(|error| error.to_string())?;
                    snapshot = Bytes::from(joined);
                }
            }
            Ok(snapshot)
        })
    }

    fn install(
        &self,
        group: u64,
        index: u64,
        point: Bytes,
        snapshot: Bytes,
    ) -> BoxFuture<'static, Result<(), String>> {
        let mailboxes = self.mailboxes.get().cloned();
        let owners = self.owners(group);
        let media = self.media.get().cloned();
        Box::pin(async move {
            let (Some(mailboxes), Some(owners)) = (mailboxes, owners) else {
                return Err(format!("slot group {group}: not started"));
            };
            if let Some(media) = media {
                install_media(media, group, index, owners.clone(), snapshot.clone()).await?;
            }
            let mark = Mark {
                group,
                index,
                point,
            };
            // A store that is busy or failing now may not be later: an install that fails
            // stops the group here, so it is tried a few times first (it starts over safely).
            let mut attempt = 0;
            loop {
                attempt += 1;
                match mailboxes.install(owners.clone(), &snapshot, &mark).await {
                    Ok(()) => return Ok(()),
                    Err(error) if attempt < INSTALL_ATTEMPTS => {
                        tracing::warn!(group, attempt, %error, "installing a slot group snapshot failed; trying again");
                        tokio::time::sleep(FOLLOW_EVERY * attempt).await;
                    }
                    Err(error) => return Err(error.to_string()),
                }
            }
        })
    }

    fn saved(&self, group: u64) -> BoxFuture<'static, Option<Bytes>> {
        let stores = self
            .mailboxes
            .get()
            .map(|mailboxes| mailboxes.stores().clone());
        Box::pin(async move {
            let stores = stores?;
            let key = slot_checkpoint_key(group);
            let saved = async { stores.get_record(0, &key)?.await }.await;
            let saved = saved.unwrap_or_else(|error| {
                tracing::error!(group, %error, "reading a slot group's durable point failed");
                None
            });
            saved
                .as_ref()
                .and_then(decode_slot_mark)
                .map(|(_, point)| point)
        })
    }
}

/// Installs the media share of a group's snapshot (before its mailbox rows, whose durable
/// point then covers it), and asks for the objects it references.
async fn install_media(
    media: Arc<Media>,
    group: u64,
    index: u64,
    owners: Owners,
    snapshot: Bytes,
) -> Result<(), String> {
    let rows = <StoreRows as prost::Message>::decode(snapshot)
        .map_err(|error| error.to_string())?
        .media;
    let installer = media.clone();
    let needed = tokio::task::spawn_blocking(move || {
        installer.install_replicated(group, index, &|key| owners.contains(key), rows)
    })
    .await
    .map_err(|error| error.to_string())?
    .map_err(|error| error.to_string())?;
    media.ask_refill(needed);
    Ok(())
}

/// The decoded records of an entry, by the key (mailbox or group) they are about, each key's
/// in order.
fn by_key(records: Vec<Bytes>) -> Vec<(Id, Vec<Record>)> {
    let mut keys: Vec<(Id, Vec<Record>)> = Vec::new();
    let mut index: HashMap<Id, usize> = HashMap::new();
    for payload in records {
        if payload.is_empty() {
            // A barrier: orders a retry's answer, changes nothing.
            continue;
        }
        let record = match record::decode(payload) {
            Ok(record) => record,
            Err(error) => {
                tracing::error!(%error, "a committed record does not decode");
                continue;
            }
        };
        let key = match &record {
            Record::Appended { owner, .. }
            | Record::Cursor { owner, .. }
            | Record::Revoked { owner, .. }
            | Record::Push { owner, .. }
            | Record::GroupCopy { owner, .. } => owner.clone(),
            Record::GroupAppended(entry) => entry.group_id.clone(),
            Record::GroupFannedOut { group_id, .. } => group_id.clone(),
        };
        match index.get(&key) {
            Some(at) => keys[*at].1.push(record),
            None => {
                index.insert(key.clone(), keys.len());
                keys.push((key, vec![record]));
            }
        }
    }
    keys
}

/// Joins the groups of this node's island once the island is whole, and keeps the leaders
/// table (and so every route) in step with the groups.
async fn follow(replica: Arc<Replica>, leaders: Arc<Leaders>, island_size: usize) {
    let mut tick = tokio::time::interval(FOLLOW_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (islands, map) = {
            let map = replica.map.borrow().clone();
            let islands: Vec<_> = map
                .placement
                .islands
                .iter()
                .filter(|island| island.members.contains(&replica.me))
                // Founded once, when the island first has its size; a short island's groups
                // go on with the members they have.
                .filter(|island| island.founded(island_size))
                .cloned()
                .collect();
            (islands, map)
        };
        let mut placed = std::collections::HashSet::new();
        for island in islands {
            for group in island_groups(island.id) {
                let Some(preferred) = serving_leader(&map, &island, group) else {
                    continue;
                };
                placed.insert(group);
                if replica.shared.ledgers.contains_key(&group) {
                    replica.groups.retarget(group, &island.members, preferred);
                    continue;
                }
                let founders = island.founding_voters(replica.me);
                match replica
                    .groups
                    .join(group, &island.members, preferred, founders)
                    .await
                {
                    Ok(()) => {
                        let ledger = Ledger::start(group, Arc::downgrade(&replica.groups));
                        replica.shared.ledgers.insert(group, ledger);
                    }
                    Err(error) => tracing::warn!(group, %error, "could not join a slot group"),
                }
            }
        }
        // Groups of islands this node is no longer on (taken out of the cluster while it ran).
        let left: Vec<u64> = replica
            .shared
            .ledgers
            .iter()
            .map(|entry| *entry.key())
            .filter(|group| !placed.contains(group))
            .collect();
        for group in left {
            replica.shared.ledgers.remove(&group);
            replica.groups.leave(group).await;
            leaders.set(group, None);
        }
        let backlog: i64 = replica
            .shared
            .replaying
            .iter()
            .map(|pending| pending.load(Ordering::Relaxed).max(0))
            .sum();
        metrics::gauge!(crate::cluster::raft::slot::telemetry::REPLAY_BACKLOG).set(backlog as f64);
        let mut now_led = false;
        for (group, leader) in replica.groups.leadership() {
            let leader = leader.filter(|leader| {
                *leader != replica.me
                    || replica.shared.replaying(group).load(Ordering::Acquire) <= 0
            });
            if leaders.set(group, leader) {
                tracing::debug!(group, ?leader, "slot group leader");
                now_led |= leader == Some(replica.me);
            }
        }
        if now_led && let Some(mailboxes) = replica.shared.mailboxes.get() {
            // The groups of the slots this node now leads fan out from here: what their
            // entries still owe their members goes out now, not at the next write-back.
            mailboxes.broadcast_wait(|| MailboxOp::PumpGroups).await;
        }
    }
}
