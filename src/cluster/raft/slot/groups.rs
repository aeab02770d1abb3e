//! [`SlotGroups`]: this node's members of the slot groups. Starts one openraft instance per
//! group the node is a member of, all over the node's one [`LogEngine`] and its coalesced
//! network; commits proposals (a proposal returns once a majority has it on disk and this
//! node applied it); serves the groups' inbound batches; and runs one ticker for all groups.
//!
//! The ticker sends every led group's heartbeat at the same instant (openraft's own heartbeat
//! timers are off), so the coalescer carries them to each peer in one call; and it hands a
//! group's leadership back to the member the group prefers once that member is up and caught
//! up (a transfer, not an election), which is what spreads leaders over an island.
//!
//! Supervision: the ticker task and every group's openraft tasks stop on
//! [`SlotGroups::shutdown`] (the ticker also when the groups are dropped).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;
use openraft::async_runtime::WatchReceiver;
use openraft::errors::{ClientWriteError, RaftError};
use openraft::impls::ProgressResponder;
use openraft::{BasicNode, ChangeMembers, Config, Instant as _, Raft, ServerState, SnapshotPolicy};
use prost::Message;

use super::chunks::{Chunked, Chunks};
use super::coalesce::Coalescer;
use super::network::SlotNetwork;
use super::state_machine::{SlotApplier, SlotStateMachine};
use super::telemetry;
use super::{LogEngine, SlotCommand, SlotTypes};
use crate::cluster::raft::network::SNAPSHOT_DEADLINE;
use crate::cluster::raft::tasks::Tasks;
use crate::cluster::raft::transport::RaftTransport;
use crate::cluster::raft::{convert, runtime};
use crate::proto::mesh as pb;

/// Heartbeats between two looks at where a group's leadership should be.
const PLACEMENT_EVERY: u64 = 4;
/// Entries a preferred member may still have to apply when leadership is handed back to it.
const APPLY_SLACK: u64 = 8;
/// While this node drains: entries the member taking a group over may still have to apply (it
/// serves once it applied them; the transfer itself waits until it holds every entry).
const DRAIN_APPLY_SLACK: u64 = 256;
/// Entries a learner may still lack when it is made a voter (it holds the rest within a
/// heartbeat or two; a voter far behind would weaken the group's majority until it caught up).
const CATCH_UP_SLACK: u64 = 64;
/// Journal records of the slot log that describe nothing any more (purged, replaced) before a
/// compaction restates the live ones and releases the rest.
const COMPACT_AFTER_DEAD: usize = 65_536;
/// Election timeouts a member that is not a group's preferred leader waits before it
/// initializes the group itself (the preferred leader may never come).
const FOUNDING_PATIENCE: u32 = 3;

/// Settings of one node's slot groups.
#[derive(Clone, Debug)]
pub struct SlotGroupsConfig {
    /// This node's id.
    pub node: u64,
    /// Leader heartbeat interval (every group's, sent together).
    pub heartbeat: Duration,
    /// Election timeout, lower bound.
    pub election_timeout_min: Duration,
    /// Election timeout, upper bound.
    pub election_timeout_max: Duration,
    /// Seeds openraft's random draws in simulations; `None` draws from the OS.
    pub rng_seed: Option<u64>,
    /// Entries kept past the durable point for a member that is behind; a member further
    /// behind gets a snapshot.
    pub max_lag: u64,
    /// Bytes of a snapshot sent per call.
    pub chunk_bytes: usize,
}

impl SlotGroupsConfig {
    /// The defaults: heartbeat 100 ms, election timeout 1-2 s.
    pub fn new(node: u64) -> SlotGroupsConfig {
        SlotGroupsConfig {
            node,
            heartbeat: Duration::from_millis(100),
            election_timeout_min: Duration::from_millis(1000),
            election_timeout_max: Duration::from_millis(2000),
            rng_seed: None,
            max_lag: 100_000,
            chunk_bytes: 1 << 20,
        }
    }
}

/// Why a slot group could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    /// This node is not a member of the group.
    #[error("slot group {0} is not on this node")]
    UnknownGroup(u64),
    /// Another member leads the group (the one named, when known): ask it.
    #[error("slot group {group} is led by {leader:?}, not this node")]
    NotLeader {
        /// The group.
        group: u64,
        /// Its leader, when known.
        leader: Option<u64>,
    },
    /// The group's openraft stopped, or the proposal's fate is unknown.
    #[error("slot group {group}: {reason}")]
    Failed {
        /// The group.
        group: u64,
        /// Why.
        reason: String,
    },
    /// openraft refused the configuration.
    #[error("slot raft config: {0}")]
    Config(String),
}

/// What the map wants of a group: its voters, and the member that should lead it.
#[derive(Clone, Debug, Default)]
struct Target {
    /// The voters (the island's members), in the island's order.
    voters: Vec<u64>,
    /// The member that should lead while it is up.
    preferred: u64,
}

/// One group on this node.
struct Member {
    raft: Raft<SlotTypes, SlotStateMachine>,
    /// What the map wants of the group (changed by [`SlotGroups::retarget`]).
    target: std::sync::Mutex<Target>,
    /// A membership change of the group is running (one at a time).
    changing: Arc<std::sync::atomic::AtomicBool>,
    /// Its state machine (the durable point).
    machine: SlotStateMachine,
    /// Every voter holds the entries up to this index (the most any leader told, or this
    /// node computed while leading): the log up to it may go once it is durable here.
    retain: AtomicU64,
}

impl Member {
    fn target(&self) -> std::sync::MutexGuard<'_, Target> {
        self.target
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

struct Inner {
    config: SlotGroupsConfig,
    raft_config: Arc<Config>,
    engine: Arc<LogEngine>,
    coalescer: Arc<Coalescer>,
    applier: Arc<dyn SlotApplier>,
    groups: RwLock<HashMap<u64, Arc<Member>>>,
    /// Serializes [`SlotGroups::join`]: one openraft instance per group.
    joining: tokio::sync::Mutex<()>,
    /// Held by the one [`SlotGroups::release`] running (one compaction of the log engine at a
    /// time).
    releasing: tokio::sync::Mutex<()>,
    /// Snapshots arriving in chunks.
    chunks: Chunks,
    /// This node drains: its leaderships go at every heartbeat, to a member that holds all
    /// but [`CATCH_UP_SLACK`] entries (the transfer waits for the rest).
    draining: std::sync::atomic::AtomicBool,
}

/// This node's members of the slot groups.
pub struct SlotGroups {
    inner: Arc<Inner>,
    tasks: Tasks,
}

impl SlotGroups {
    /// Slot groups over `engine`, sending through `transport` and applying to `applier`; none
    /// is joined yet.
    pub fn start(
        config: SlotGroupsConfig,
        engine: Arc<LogEngine>,
        transport: Arc<dyn RaftTransport>,
        applier: Arc<dyn SlotApplier>,
    ) -> Result<SlotGroups, SlotError> {
        let raft_config = Config {
            cluster_name: "tern-slot".into(),
            heartbeat_interval: millis(config.heartbeat),
            election_timeout_min: millis(config.election_timeout_min),
            election_timeout_max: millis(config.election_timeout_max),
            install_snapshot_timeout: millis(SNAPSHOT_DEADLINE),
            // The ticker sends every group's heartbeat at once.
            enable_heartbeat: false,
            // The log is released by compaction after write-back, never by openraft alone.
            snapshot_policy: SnapshotPolicy::Never,
            api_channel_size: Some(4096),
            notification_channel_size: Some(4096),
            enable_pre_vote: Some(true),
            // A leader back from a crash before its group elected another must not lead on in
            // its old term: the committed id its log saved may be behind (it is not fsynced),
            // so entries committed and acked before the crash may still be unapplied here, and
            // `leadership` would name this node (its applied entries are of the current term)
            // while its workers lack them: it would serve reads with holes and number new
            // entries over them. An election puts a blank entry of a new term after them.
            enable_leader_restore: Some(false),
            ..Config::default()
        }
        .validate()
        .map_err(|error| SlotError::Config(error.to_string()))?;
        let inner = Arc::new(Inner {
            config,
            raft_config: Arc::new(raft_config),
            engine,
            coalescer: Arc::new(Coalescer::new(transport)),
            applier,
            groups: RwLock::new(HashMap::new()),
            joining: tokio::sync::Mutex::new(()),
            releasing: tokio::sync::Mutex::new(()),
            chunks: Chunks::default(),
            draining: std::sync::atomic::AtomicBool::new(false),
        });
        let ticker = tokio::spawn(tick(Arc::downgrade(&inner)));
        let tasks = Tasks::default();
        tasks.push(ticker);
        Ok(SlotGroups { inner, tasks })
    }

    /// Joins `group`, whose voters are to be `members` and whose preferred leader is
    /// `preferred`: starts its openraft over this node's log of the group. With `founders`
    /// (this node is one of the members the group is founded with), the preferred leader
    /// founds the group when it has no log yet, another founder only if it is still unfounded
    /// after a few election timeouts; without, this node never initializes the group and waits
    /// for its leader to add it (a membership change). Joining a group already joined does
    /// nothing.
    pub async fn join(
        &self,
        group: u64,
        members: &[u64],
        preferred: u64,
        founders: Option<&[u64]>,
    ) -> Result<(), SlotError> {
        let _joining = self.inner.joining.lock().await;
        if self.inner.member(group).is_some() {
            return Ok(());
        }
        let inner = &self.inner;
        let saved = inner
            .applier
            .saved(group)
            .await
            .map(|saved| decode_meta(&saved))
            .transpose()
            .map_err(|error| failed(group, error))?;
        let machine = SlotStateMachine::new(group, inner.applier.clone(), saved);
        let raft = Raft::new(
            inner.config.node,
            inner.raft_config.clone(),
            SlotNetwork::new(
                group,
                inner.coalescer.clone(),
                inner.applier.clone(),
                inner.config.chunk_bytes,
            ),
            inner.engine.group(group),
            machine.clone(),
        );
        let raft = match inner.config.rng_seed {
            Some(seed) => runtime::seeded(seed ^ group.wrapping_mul(0x9e37_79b9), raft).await,
            None => raft.await,
        }
        .map_err(|error| failed(group, error))?;
        if let Some(founders) = founders {
            let voters: BTreeMap<u64, BasicNode> = founders
                .iter()
                .map(|id| (*id, BasicNode::default()))
                .collect();
            let wait = if preferred == inner.config.node {
                Duration::ZERO
            } else {
                inner.config.election_timeout_max * FOUNDING_PATIENCE
            };
            let founder = raft.clone();
            let founding = tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                if let Ok(false) = founder.is_initialized().await {
                    // Refused when another member's founding entry arrived meanwhile: fine.
                    let _ = founder.initialize(voters).await;
                }
            });
            self.tasks.push(founding);
        }
        inner
            .groups
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(
                group,
                Arc::new(Member {
                    raft,
                    target: std::sync::Mutex::new(Target {
                        voters: members.to_vec(),
                        preferred,
                    }),
                    changing: Arc::default(),
                    machine,
                    retain: AtomicU64::new(0),
                }),
            );
        Ok(())
    }

    /// The map changed what it wants of `group`: its voters are to be `members` (its leader
    /// adds the new ones as learners, makes them voters once they caught up and takes the
    /// others out, in one joint change), led by `preferred` once that member is a voter.
    pub fn retarget(&self, group: u64, members: &[u64], preferred: u64) {
        if let Some(member) = self.inner.member(group) {
            let mut target = member.target();
            if target.voters != members || target.preferred != preferred {
                tracing::info!(group, ?members, preferred, "slot group target membership");
                *target = Target {
                    voters: members.to_vec(),
                    preferred,
                };
            }
        }
    }

    /// This node drains (or no longer does): its led groups are handed over at every
    /// heartbeat, with a looser catch-up condition (openraft's transfer waits for the target
    /// to hold every entry, and the leader takes no new entry meanwhile).
    pub fn set_draining(&self, draining: bool) {
        self.inner.draining.store(draining, Ordering::Release);
    }

    /// Stops this node's member of `group` (the map no longer places this node in it).
    pub async fn leave(&self, group: u64) {
        let _joining = self.inner.joining.lock().await;
        let member = self
            .inner
            .groups
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&group);
        if let Some(member) = member {
            tracing::info!(group, "left a slot group");
            if let Err(error) = member.raft.shutdown().await {
                tracing::warn!(group, %error, "slot raft shutdown");
            }
        }
    }

    /// Every group's applied point now, `(group, index, encoded SnapshotMeta)`: durable once
    /// a write-back that starts after this call is checkpointed with it
    /// ([`SlotGroups::checkpointed`]).
    pub fn marks(&self) -> Vec<(u64, u64, Bytes)> {
        self.inner
            .members()
            .into_iter()
            .map(|(group, member)| {
                let mark = member.machine.mark();
                let index = mark.last_log_id.map_or(0, |log_id| log_id.index);
                let meta = convert::snapshot_meta_to_proto(&mark);
                (group, index, Bytes::from(meta.encode_to_vec()))
            })
            .collect()
    }

    /// A checkpoint saved `marks` with the stores: releases the groups' logs up to them
    /// ([`SlotGroups::release`]) in a task that stops with the groups.
    pub fn checkpointed(self: &Arc<Self>, marks: Vec<(u64, Bytes)>) {
        let groups = self.clone();
        self.tasks
            .push(tokio::spawn(async move { groups.release(&marks).await }));
    }

    /// A checkpoint saved `marks` with the stores: each group's durable point moves there,
    /// and its log is purged up to it, as far as every voter holds the entries; then the log
    /// engine drops what no group needs any more.
    /// A release still running when the next checkpoint comes makes that one's skip (the next
    /// checkpoint's marks cover it), so releases never queue up.
    pub async fn release(&self, marks: &[(u64, Bytes)]) {
        let Ok(_one) = self.inner.releasing.try_lock() else {
            return;
        };
        for (group, mark) in marks {
            let Some(member) = self.inner.member(*group) else {
                continue;
            };
            let meta = match decode_meta(mark) {
                Ok(meta) => meta,
                Err(error) => {
                    tracing::error!(group, %error, "a slot group's durable point does not decode");
                    continue;
                }
            };
            member.machine.durable_at(meta);
            purge(&self.inner, *group, &member).await;
        }
        let dead = self.inner.engine.dead_records();
        if dead >= COMPACT_AFTER_DEAD {
            match self.inner.engine.compact().await {
                Ok(restated) => {
                    tracing::debug!(dead, restated, "slot log compacted");
                    metrics::counter!(telemetry::COMPACTIONS).increment(1);
                }
                Err(error) => tracing::warn!(%error, "slot log compaction failed"),
            }
        }
    }

    /// Commits `command` as one entry of `group`; returns the entry's log index once a
    /// majority has it on disk and this node applied it. Only the leader takes proposals.
    pub async fn propose(&self, group: u64, command: SlotCommand) -> Result<u64, SlotError> {
        let member = self
            .inner
            .member(group)
            .ok_or(SlotError::UnknownGroup(group))?;
        match member.raft.client_write(command).await {
            Ok(response) => {
                metrics::counter!(telemetry::COMMITTED).increment(1);
                Ok(response.log_id.index)
            }
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                metrics::counter!(telemetry::FAILED, "cause" => "not_leader").increment(1);
                Err(SlotError::NotLeader {
                    group,
                    leader: forward.leader_id,
                })
            }
            Err(error) => {
                metrics::counter!(telemetry::FAILED, "cause" => "failed").increment(1);
                Err(failed(group, error))
            }
        }
    }

    /// Hands `command` to `group`'s openraft (in the order of calls: a later submission is a
    /// later entry) and returns what resolves once it is committed and applied here, or why
    /// not. Only the leader takes it.
    pub async fn submit(
        &self,
        group: u64,
        command: SlotCommand,
    ) -> Result<impl Future<Output = Result<u64, SlotError>> + Send + 'static, SlotError> {
        let member = self
            .inner
            .member(group)
            .ok_or(SlotError::UnknownGroup(group))?;
        let (responder, outcome) = ProgressResponder::<
            SlotTypes,
            openraft::raft::ClientWriteResult<SlotTypes>,
        >::complete_only();
        member
            .raft
            .client_write_ff(command, Some(responder))
            .await
            .map_err(|error| failed(group, error))?;
        Ok(async move {
            match outcome.await {
                Ok(Ok(response)) => {
                    metrics::counter!(telemetry::COMMITTED).increment(1);
                    Ok(response.log_id.index)
                }
                Ok(Err(ClientWriteError::ForwardToLeader(forward))) => {
                    metrics::counter!(telemetry::FAILED, "cause" => "not_leader").increment(1);
                    Err(SlotError::NotLeader {
                        group,
                        leader: forward.leader_id,
                    })
                }
                Ok(Err(error)) => {
                    metrics::counter!(telemetry::FAILED, "cause" => "failed").increment(1);
                    Err(failed(group, error))
                }
                Err(_) => {
                    metrics::counter!(telemetry::FAILED, "cause" => "failed").increment(1);
                    Err(failed(group, "the proposal was dropped"))
                }
            }
        })
    }

    /// The leader of `group` this node knows of.
    pub fn leader(&self, group: u64) -> Option<u64> {
        self.inner
            .member(group)
            .and_then(|member| member.raft.metrics().borrow_watched().current_leader)
    }

    /// Every group's leader as this node knows it; a group this node leads is named only once
    /// it applied everything committed before its term (its state is whole), until then `None`.
    pub fn leadership(&self) -> Vec<(u64, Option<u64>)> {
        self.inner
            .members()
            .into_iter()
            .map(|(group, member)| {
                let metrics = member.raft.metrics().borrow_watched().clone();
                let leader = match metrics.state {
                    ServerState::Leader => metrics
                        .last_applied
                        .is_some_and(|applied| applied.leader_id.term == metrics.current_term)
                        .then_some(self.inner.config.node),
                    _ => metrics
                        .current_leader
                        .filter(|leader| *leader != self.inner.config.node),
                };
                (group, leader)
            })
            .collect()
    }

    /// Every group as `GET /cluster` shows it: `{group, voters, learners, joint, leader, term,
    /// applied, logged, durable, purged, retain}` in group order (`voters`, `learners`: the
    /// membership this node knows, `joint` while it changes; `applied`: the log id of the last
    /// entry applied here,
    /// `term-node-index`; `logged`: the index of the last entry in this node's log;
    /// `durable`: the index up to which the stores hold what was applied;
    /// `purged`: the log before it is gone; `retain`: every voter holds the entries up to it).
    pub fn view(&self) -> Vec<serde_json::Value> {
        let mut members = self.inner.members();
        members.sort_unstable_by_key(|(group, _)| *group);
        members
            .into_iter()
            .map(|(group, member)| {
                let metrics = member.raft.metrics().borrow_watched().clone();
                let applied = metrics.last_applied.map(|log_id| {
                    format!(
                        "{}-{}-{}",
                        log_id.leader_id.term, log_id.leader_id.node_id, log_id.index
                    )
                });
                let membership = metrics.membership_config.membership();
                let voters: Vec<u64> = membership.voter_ids().collect();
                let learners: Vec<u64> = membership.learner_ids().collect();
                serde_json::json!({
                    "group": group,
                    "voters": voters,
                    "learners": learners,
                    "joint": membership.get_joint_config().len() > 1,
                    "leader": metrics.current_leader,
                    "term": metrics.current_term,
                    "applied": applied,
                    "logged": metrics.last_log_index,
                    "durable": member.machine.durable().map(|log_id| log_id.index),
                    "purged": metrics.purged.map(|log_id| log_id.index),
                    "retain": member.retain.load(Ordering::Acquire),
                })
            })
            .collect()
    }

    /// Whether every group this node is a member of has a leader and was applied here up to
    /// within `slack` entries of what its leader last said was committed: a node catching up
    /// from its peers' logs is not in sync yet.
    pub fn in_sync(&self, slack: u64) -> bool {
        self.inner.members().iter().all(|(_, member)| {
            let metrics = member.raft.metrics();
            let metrics = metrics.borrow_watched();
            let applied = metrics
                .last_applied
                .as_ref()
                .map_or(0, |log_id| log_id.index);
            let committed = metrics
                .cluster_committed
                .as_ref()
                .map_or(0, |log_id| log_id.index);
            metrics.current_leader.is_some() && applied + slack >= committed
        })
    }

    /// The voters of `group` as this node knows them, in order (empty if it is not a member).
    pub fn voters(&self, group: u64) -> Vec<u64> {
        self.inner.member(group).map_or_else(Vec::new, |member| {
            member
                .raft
                .metrics()
                .borrow_watched()
                .membership_config
                .membership()
                .voter_ids()
                .collect()
        })
    }

    /// The groups this node leads now, in order.
    pub fn led(&self) -> Vec<u64> {
        let mut led: Vec<u64> = self
            .inner
            .members()
            .into_iter()
            .filter(|(_, member)| member.raft.is_leader())
            .map(|(group, _)| group)
            .collect();
        led.sort_unstable();
        led
    }

    /// The index of the last entry of `group` this node applied.
    pub fn applied(&self, group: u64) -> Option<u64> {
        self.inner.member(group).and_then(|member| {
            member
                .raft
                .metrics()
                .borrow_watched()
                .last_applied
                .map(|log_id| log_id.index)
        })
    }

    /// Calls and requests sent to peers so far.
    pub fn sent(&self) -> (u64, u64) {
        let stats = self.inner.coalescer.stats();
        (
            stats.batches.load(std::sync::atomic::Ordering::Relaxed),
            stats.rpcs.load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// Serves one inbound `SlotBatch` from a peer: every request goes to its group's openraft
    /// (all at once), and the responses come back in the batch's order.
    pub async fn handle(&self, _from: u64, payload: Bytes) -> Result<Bytes, String> {
        let batch = pb::SlotBatch::decode(payload).map_err(|error| error.to_string())?;
        let responses = join_all(batch.rpcs.into_iter().map(|rpc| {
            if rpc.retain > 0
                && let Some(member) = self.inner.member(rpc.group)
            {
                member.retain.fetch_max(rpc.retain, Ordering::AcqRel);
            }
            self.inner.serve(rpc.group, rpc.request)
        }))
        .await;
        let responses = responses
            .into_iter()
            .map(|response| pb::RaftResponse {
                response: Some(response),
            })
            .collect();
        Ok(Bytes::from(
            pb::SlotBatchReply { responses }.encode_to_vec(),
        ))
    }

    /// Stops the ticker and every group's openraft (no leadership hand-over).
    pub async fn shutdown(&self) {
        self.tasks.stop().await;
        for (group, member) in self.inner.members() {
            if let Err(error) = member.raft.shutdown().await {
                tracing::warn!(group, %error, "slot raft shutdown");
            }
        }
    }
}

impl Inner {
    fn member(&self, group: u64) -> Option<Arc<Member>> {
        self.groups
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&group)
            .cloned()
    }

    fn members(&self) -> Vec<(u64, Arc<Member>)> {
        self.groups
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .map(|(group, member)| (*group, member.clone()))
            .collect()
    }

    /// One request of an inbound batch.
    async fn serve(
        &self,
        group: u64,
        request: Option<pb::RaftRequest>,
    ) -> pb::raft_response::Response {
        use pb::raft_request::Request;
        use pb::raft_response::Response;
        let Some(member) = self.member(group) else {
            return failure(format!("slot group {group} is not on this node"));
        };
        let Some(request) = request.and_then(|request| request.request) else {
            return failure("empty request");
        };
        let raft = &member.raft;
        let outcome: Result<Response, String> = async {
            Ok(match request {
                Request::Vote(vote) => {
                    let vote = convert::vote_request_from_proto(&vote).map_err(text)?;
                    Response::Vote(convert::vote_response_to_proto(
                        &raft.vote(vote).await.map_err(text)?,
                    ))
                }
                Request::PreVote(vote) => {
                    let vote = convert::vote_request_from_proto(&vote).map_err(text)?;
                    Response::Vote(convert::vote_response_to_proto(
                        &raft.pre_vote(vote).await.map_err(text)?,
                    ))
                }
                Request::Append(append) => {
                    let append = convert::append_request_from_proto(
                        append,
                        super::convert::entry_from_proto,
                    )
                    .map_err(text)?;
                    Response::Append(convert::append_response_to_proto(
                        &raft.append_entries(append).await.map_err(text)?,
                    ))
                }
                Request::Snapshot(snapshot) => {
                    let vote = snapshot.vote.as_ref().ok_or("snapshot without vote")?;
                    let vote = convert::vote_from_proto(vote);
                    let meta_proto = snapshot.meta.as_ref().ok_or("snapshot without meta")?;
                    let meta = convert::snapshot_meta_from_proto(meta_proto).map_err(text)?;
                    let data = if snapshot.offset == 0 && !snapshot.more {
                        snapshot.data
                    } else {
                        let chunked = self
                            .chunks
                            .take(
                                group,
                                Bytes::from(meta_proto.encode_to_vec()),
                                snapshot.offset,
                                &snapshot.data,
                                snapshot.more,
                            )
                            .map_err(text)?;
                        match chunked {
                            Chunked::More(held) => {
                                return Ok(Response::Applied(pb::AppliedResponse { index: held }));
                            }
                            Chunked::Whole(data) => data,
                        }
                    };
                    let snapshot = openraft::type_config::alias::SnapshotOf::<SlotTypes, Bytes> {
                        meta,
                        snapshot: data,
                    };
                    Response::Snapshot(convert::snapshot_response_to_proto(
                        &raft
                            .install_full_snapshot(vote, snapshot)
                            .await
                            .map_err(text)?,
                    ))
                }
                Request::Transfer(transfer) => {
                    let transfer = convert::transfer_request_from_proto(&transfer).map_err(text)?;
                    Response::Transfer(convert::transfer_response_to_proto(
                        &raft.handle_transfer_leader(transfer).await.map_err(text)?,
                    ))
                }
                Request::Applied(_) => Response::Applied(pb::AppliedResponse {
                    index: raft
                        .metrics()
                        .borrow_watched()
                        .last_applied
                        .map_or(0, |log_id| log_id.index),
                }),
                _ => return Err("not a slot group request".to_owned()),
            })
        }
        .await;
        outcome.unwrap_or_else(failure)
    }
}

/// Every heartbeat: the heartbeats of all led groups together; every few: leadership back to
/// preferred members that are up and caught up; the led-groups gauge.
async fn tick(inner: std::sync::Weak<Inner>) {
    let Some(heartbeat) = inner.upgrade().map(|inner| inner.config.heartbeat) else {
        return;
    };
    let mut interval = tokio::time::interval(heartbeat);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks: u64 = 0;
    loop {
        interval.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        ticks += 1;
        let mut led = 0;
        for (group, member) in inner.members() {
            if !member.raft.is_leader() {
                continue;
            }
            led += 1;
            retain(&inner, group, &member);
            let _ = member.raft.trigger().heartbeat().await;
            if ticks.is_multiple_of(PLACEMENT_EVERY) {
                reconfigure(group, &member);
            }
            if ticks.is_multiple_of(PLACEMENT_EVERY) || inner.draining.load(Ordering::Acquire) {
                hand_back(&inner, group, &member).await;
            }
        }
        metrics::gauge!(telemetry::LED).set(f64::from(led));
        if ticks.is_multiple_of(PLACEMENT_EVERY) {
            metrics::gauge!(telemetry::LOG_ENTRIES).set(inner.engine.entries() as f64);
        }
    }
}

/// As `group`'s leader, moves its membership one step towards the map's target: members the
/// target adds become learners; once each of them holds all but [`CATCH_UP_SLACK`] entries, one
/// joint change makes the target the voters (a voter it leaves out leaves the group); learners
/// the target does not name are taken out. One change at a time, in a task of its own (a
/// change commits through the group's log).
fn reconfigure(group: u64, member: &Member) {
    let target: BTreeSet<u64> = member.target().voters.iter().copied().collect();
    if target.is_empty() || member.changing.load(Ordering::Acquire) {
        return;
    }
    let change = {
        let metrics = member.raft.metrics();
        let metrics = metrics.borrow_watched();
        let membership = metrics.membership_config.membership();
        if metrics.state != ServerState::Leader || membership.get_joint_config().len() > 1 {
            return;
        }
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let learners: BTreeSet<u64> = membership.learner_ids().collect();
        let last = metrics.last_log_index.unwrap_or(0);
        let caught_up = |id: &u64| {
            metrics
                .replication
                .as_ref()
                .and_then(|replication| replication.get(id).copied().flatten())
                .is_some_and(|matched| matched.index + CATCH_UP_SLACK >= last)
        };
        let missing: Vec<u64> = target
            .iter()
            .filter(|id| !voters.contains(id) && !learners.contains(id))
            .copied()
            .collect();
        let stray: BTreeSet<u64> = learners.difference(&target).copied().collect();
        if !missing.is_empty() {
            Change::AddLearners(missing)
        } else if voters != target && target.difference(&voters).all(caught_up) {
            Change::Voters(target)
        } else if voters == target && !stray.is_empty() {
            Change::Forget(stray)
        } else {
            return;
        }
    };
    member.changing.store(true, Ordering::Release);
    let raft = member.raft.clone();
    let changing = member.changing.clone();
    tokio::spawn(async move {
        let outcome = match &change {
            Change::AddLearners(ids) => {
                let mut outcome = Ok(());
                for id in ids {
                    outcome = raft
                        .add_learner(*id, BasicNode::default(), false)
                        .await
                        .map(|_| ());
                    if outcome.is_err() {
                        break;
                    }
                }
                outcome
            }
            Change::Voters(voters) => raft
                .change_membership(ChangeMembers::ReplaceAllVoters(voters.clone()), false)
                .await
                .map(|_| ()),
            Change::Forget(ids) => raft
                .change_membership(ChangeMembers::RemoveNodes(ids.clone()), false)
                .await
                .map(|_| ()),
        };
        match outcome {
            Ok(()) => {
                metrics::counter!(telemetry::MEMBERSHIP_CHANGES).increment(1);
                tracing::info!(group, ?change, "slot group membership changed");
            }
            Err(error) => {
                tracing::info!(group, ?change, %error, "slot group membership change not done")
            }
        }
        changing.store(false, Ordering::Release);
    });
}

/// One step of [`reconfigure`].
#[derive(Debug)]
enum Change {
    /// Add these as learners.
    AddLearners(Vec<u64>),
    /// Make these the voters.
    Voters(BTreeSet<u64>),
    /// Take these learners out.
    Forget(BTreeSet<u64>),
}

/// Hands `group`'s leadership to its preferred member when that member acknowledged the last
/// heartbeat, holds every entry this leader has and has applied about all of them (a member
/// still applying a long backlog could not serve for a while after taking over).
async fn hand_back(inner: &Inner, group: u64, member: &Member) {
    let me = inner.config.node;
    let preferred = member.target().preferred;
    if preferred == me {
        return;
    }
    let draining = inner.draining.load(Ordering::Acquire);
    let (lag_allowed, apply_slack) = if draining {
        (CATCH_UP_SLACK, DRAIN_APPLY_SLACK)
    } else {
        (0, APPLY_SLACK)
    };
    let (ready, committed) = {
        let metrics = member.raft.metrics().borrow_watched().clone();
        let membership = metrics.membership_config.membership();
        // Leadership goes to voters only (a member being added is a learner until it caught
        // up), and not while the membership changes.
        let voter = membership.get_joint_config().len() == 1
            && membership.voter_ids().any(|voter| voter == preferred);
        let caught_up = metrics
            .replication
            .as_ref()
            .and_then(|replication| replication.get(&preferred).copied().flatten())
            .map(|matched| matched.index + lag_allowed >= metrics.last_log_index.unwrap_or(0))
            .unwrap_or(false);
        let alive = metrics
            .heartbeat
            .as_ref()
            .and_then(|heartbeat| heartbeat.get(&preferred).copied().flatten())
            .is_some_and(|acked| acked.elapsed() < inner.config.heartbeat * 3);
        (
            metrics.state == ServerState::Leader && voter && caught_up && alive,
            metrics.cluster_committed.map_or(0, |log_id| log_id.index),
        )
    };
    if !ready {
        return;
    }
    let applied = inner
        .coalescer
        .call_alone(
            preferred,
            group,
            pb::raft_request::Request::Applied(pb::AppliedRequest {}),
            inner.config.heartbeat,
        )
        .await;
    let Ok(pb::raft_response::Response::Applied(applied)) = applied else {
        return;
    };
    if applied.index + apply_slack < committed {
        return;
    }
    if member
        .raft
        .trigger()
        .transfer_leader(preferred)
        .await
        .is_ok()
    {
        metrics::counter!(telemetry::TRANSFERS).increment(1);
        tracing::info!(group, to = preferred, "slot group leadership handed back");
    }
}

/// As `group`'s leader: the index up to which every member holds the entries (the least any
/// voter or learner matched: a learner being added catches up from the log, not from snapshot
/// after snapshot), told to the followers with the next appends.
fn retain(inner: &Inner, group: u64, member: &Member) {
    let held = {
        let metrics = member.raft.metrics();
        let metrics = metrics.borrow_watched();
        let Some(replication) = metrics.replication.as_ref() else {
            return;
        };
        let me = inner.config.node;
        metrics
            .membership_config
            .membership()
            .nodes()
            .map(|(voter, _)| *voter)
            .map(|voter| {
                if voter == me {
                    metrics.last_log_index.unwrap_or(0)
                } else {
                    replication
                        .get(&voter)
                        .copied()
                        .flatten()
                        .map_or(0, |matched| matched.index)
                }
            })
            .min()
            .unwrap_or(0)
    };
    if held > 0 {
        member.retain.fetch_max(held, Ordering::AcqRel);
        inner.coalescer.set_retain(group, held);
    }
}

/// Purges `group`'s log up to its durable point, as far as every voter holds the entries, or
/// past a member more than `max_lag` entries behind it (that member gets a snapshot); openraft
/// purges only what its snapshot, the durable point, covers.
async fn purge(inner: &Inner, group: u64, member: &Member) {
    let Some(durable) = member.machine.durable() else {
        return;
    };
    let held = member.retain.load(Ordering::Acquire);
    let upto = if durable.index.saturating_sub(held) > inner.config.max_lag {
        durable.index - inner.config.max_lag
    } else {
        durable.index.min(held)
    };
    let (snapshot, purged) = {
        let metrics = member.raft.metrics();
        let metrics = metrics.borrow_watched();
        (metrics.snapshot, metrics.purged)
    };
    if purged.is_some_and(|purged| purged.index >= upto) || upto == 0 {
        return;
    }
    if snapshot < Some(durable) {
        if member.raft.trigger().snapshot().await.is_err() {
            return;
        }
        let built = member
            .raft
            .wait(Some(inner.config.election_timeout_max))
            .snapshot(durable, "durable point")
            .await;
        if built.is_err() {
            tracing::debug!(
                group,
                "slot group snapshot not built in time; purging later"
            );
            return;
        }
    }
    if member.raft.trigger().purge_log(upto).await.is_ok() {
        metrics::counter!(telemetry::PURGES).increment(1);
    }
}

fn decode_meta(
    bytes: &Bytes,
) -> Result<openraft::type_config::alias::SnapshotMetaOf<SlotTypes>, String> {
    let meta = pb::SnapshotMeta::decode(bytes.clone()).map_err(text)?;
    convert::snapshot_meta_from_proto(&meta).map_err(text)
}

fn failed(group: u64, error: impl std::fmt::Display) -> SlotError {
    SlotError::Failed {
        group,
        reason: error.to_string(),
    }
}

fn text(error: impl std::fmt::Display) -> String {
    error.to_string()
}

fn failure(message: impl std::fmt::Display) -> pb::raft_response::Response {
    pb::raft_response::Response::Failure(pb::RaftFailure {
        message: message.to_string(),
        leader: None,
    })
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
