//! [`MetaGroup`]: one node's member of the metadata Raft group. Starts openraft over the log
//! store, state machine and network; bootstraps the group from the seeds; registers this node
//! in the map (joining through a seed when it is not one); serves inbound RPCs; forwards
//! proposals to the leader; runs the controller while leading.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use openraft::async_runtime::WatchReceiver;
use openraft::errors::{ClientWriteError, RaftError};
use openraft::{BasicNode, Config, Raft, RaftMetrics, ServerState, SnapshotPolicy};
use tokio::sync::watch;
use tokio::time::Instant;

use super::MetaTypes;
use super::log_store::{LogStore, LogStoreError};
use super::network::{self, Network, RPC_DEADLINE};
use super::state_machine::StateMachine;
use super::transport::RaftTransport;
use crate::cluster::map::{ClusterMap, MapCommand, MapError, NodeRecord};
use crate::cluster::placement::NodeId;
use crate::proto::mesh as pb;

mod bootstrap;
mod inbound;
mod tasks;

/// How many times a proposal or join may be passed on towards the leader.
const MAX_HOPS: u32 = 2;
/// How long [`MetaGroup::propose`] keeps trying to reach a leader.
const PROPOSE_PATIENCE: Duration = Duration::from_secs(10);
/// Pause between attempts while no leader is reachable.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Settings of one node's member of the metadata group.
#[derive(Clone, Debug)]
pub struct MetaConfig {
    /// This node's id.
    pub node: NodeId,
    /// This node's addresses (its state is decided by the leader).
    pub record: NodeRecord,
    /// The node's data directory; the group keeps its files in `cluster/` under it.
    pub data_dir: PathBuf,
    /// The seed nodes from the cluster file; the one with the lowest id bootstraps the group.
    pub seeds: Vec<(NodeId, NodeRecord)>,
    /// Leader heartbeat interval.
    pub heartbeat: Duration,
    /// Election timeout, lower bound (a random timeout in `[min, max)` is drawn).
    pub election_timeout_min: Duration,
    /// Election timeout, upper bound.
    pub election_timeout_max: Duration,
    /// The controller marks a node `Down` after this long without acknowledging the leader.
    pub down_after: Duration,
    /// How often the controller runs on the leader.
    pub controller_interval: Duration,
    /// Nodes per island.
    pub replication: usize,
    /// Slots in the slot table.
    pub slot_count: u32,
    /// Applied entries between two snapshots (after which the log prefix is purged).
    pub snapshot_every: u64,
    /// Seeds openraft's random draws (election timeouts) so that a simulated run repeats
    /// exactly; `None` (the default, and every production node) draws from the OS.
    pub rng_seed: Option<u64>,
}

impl MetaConfig {
    /// A configuration with the defaults: heartbeat 250 ms, election timeout 1-2 s, down after
    /// 5 s, controller every second, replication 3, 256 slots, a snapshot every 1000 entries.
    pub fn new(
        node: NodeId,
        record: NodeRecord,
        data_dir: PathBuf,
        seeds: Vec<(NodeId, NodeRecord)>,
    ) -> MetaConfig {
        MetaConfig {
            node,
            record,
            data_dir,
            seeds,
            heartbeat: Duration::from_millis(250),
            election_timeout_min: Duration::from_millis(1000),
            election_timeout_max: Duration::from_millis(2000),
            down_after: Duration::from_secs(5),
            controller_interval: Duration::from_secs(1),
            replication: 3,
            slot_count: 256,
            snapshot_every: 1000,
            rng_seed: None,
        }
    }
}

/// The group's failures.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// The log file could not be opened.
    #[error(transparent)]
    Log(#[from] LogStoreError),
    /// The snapshot file could not be read.
    #[error("cluster snapshot: {0}")]
    Snapshot(std::io::Error),
    /// openraft refused the configuration.
    #[error("raft config: {0}")]
    Config(String),
    /// openraft stopped (shut down, or a storage error).
    #[error("raft stopped: {0}")]
    Stopped(String),
    /// No leader could be reached in time.
    #[error("no metadata leader reachable: {0}")]
    NoLeader(String),
    /// The map refused the command.
    #[error(transparent)]
    Refused(#[from] MapError),
    /// The leader's map refused the forwarded command (its reason).
    #[error("refused by the leader: {0}")]
    RefusedRemotely(String),
    /// An inbound request did not decode.
    #[error("malformed request: {0}")]
    Malformed(String),
}

/// This node's role in the group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Leads the group.
    Leader,
    /// A voter following the leader.
    Follower,
    /// A voter asking for votes.
    Candidate,
    /// Receives the log, does not vote.
    Learner,
    /// Stopped.
    Shutdown,
}

/// What `GET /cluster` shows of the group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetaStatus {
    /// This node.
    pub node: NodeId,
    /// Its role.
    pub role: Role,
    /// The leader it knows of.
    pub leader: Option<NodeId>,
    /// The current term.
    pub term: u64,
    /// Index of the last applied entry.
    pub last_applied: Option<u64>,
    /// Voters.
    pub voters: Vec<NodeId>,
    /// Learners.
    pub learners: Vec<NodeId>,
    /// Version of the map it has applied.
    pub map_version: u64,
}

struct Shared {
    config: MetaConfig,
    raft: Raft<MetaTypes, StateMachine>,
    state_machine: StateMachine,
    transport: Arc<dyn RaftTransport>,
    stop: watch::Sender<bool>,
}

/// One node's member of the metadata group.
pub struct MetaGroup {
    shared: Arc<Shared>,
    tasks: crate::cluster::raft::tasks::Tasks,
}

impl MetaGroup {
    /// Opens the group's files under `config.data_dir/cluster`, starts openraft and the
    /// group's tasks, and bootstraps the group if this is the lowest seed and it never was.
    pub async fn start(
        config: MetaConfig,
        transport: Arc<dyn RaftTransport>,
    ) -> Result<MetaGroup, MetaError> {
        let dir = config.data_dir.join("cluster");
        let log_store = LogStore::open(&dir)?;
        let state_machine = StateMachine::open(&dir).map_err(MetaError::Snapshot)?;
        let raft_config = Config {
            cluster_name: "tern-meta".into(),
            heartbeat_interval: millis(config.heartbeat),
            election_timeout_min: millis(config.election_timeout_min),
            election_timeout_max: millis(config.election_timeout_max),
            install_snapshot_timeout: millis(network::SNAPSHOT_DEADLINE),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every),
            max_in_snapshot_log_to_keep: config.snapshot_every,
            // Bounded: the map changes rarely, so a few hundred queued requests is plenty.
            api_channel_size: Some(1024),
            notification_channel_size: Some(1024),
            enable_pre_vote: Some(true),
            ..Config::default()
        }
        .validate()
        .map_err(|error| MetaError::Config(error.to_string()))?;
        let raft = Raft::new(
            config.node,
            Arc::new(raft_config),
            Network::new(transport.clone()),
            log_store,
            state_machine.clone(),
        );
        // openraft's tasks are spawned here and inherit the seed (when there is one).
        let raft = match config.rng_seed {
            Some(seed) => super::runtime::seeded(seed, raft).await,
            None => raft.await,
        }
        .map_err(|error| MetaError::Stopped(error.to_string()))?;
        let (stop, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            config,
            raft,
            state_machine,
            transport,
            stop,
        });
        let owned = crate::cluster::raft::tasks::Tasks::default();
        if shared.is_bootstrapper() && !shared.raft.is_initialized().await.map_err(stopped)? {
            owned.push(tokio::spawn(bootstrap::bootstrap(shared.clone())));
        }
        let me = vec![(shared.config.node, shared.config.record.clone())];
        owned.push(tokio::spawn(tasks::register(shared.clone(), me)));
        owned.push(tokio::spawn(tasks::control(shared.clone())));
        Ok(MetaGroup {
            shared,
            tasks: owned,
        })
    }

    /// The applied map, updated on every change.
    pub fn map(&self) -> watch::Receiver<Arc<ClusterMap>> {
        self.shared.state_machine.subscribe()
    }

    /// The group as this node sees it.
    pub fn status(&self) -> MetaStatus {
        let metrics = self.shared.raft.metrics().borrow_watched().clone();
        let membership = metrics.membership_config.membership();
        MetaStatus {
            node: self.shared.config.node,
            role: match metrics.state {
                ServerState::Leader => Role::Leader,
                ServerState::Follower => Role::Follower,
                ServerState::Candidate => Role::Candidate,
                ServerState::Learner => Role::Learner,
                ServerState::Shutdown => Role::Shutdown,
            },
            leader: metrics.current_leader,
            term: metrics.current_term,
            last_applied: metrics.last_applied.map(|log_id| log_id.index),
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
            map_version: self.shared.state_machine.map().version,
        }
    }

    /// While this node leads the group: hands the leadership to a voter that holds every entry
    /// and acknowledged a heartbeat within `fresh` (openraft's leader transfer: the new leader
    /// takes over at once, with no election timeout). The voter it was handed to, if any.
    pub async fn hand_over(&self, fresh: std::time::Duration) -> Option<NodeId> {
        let to = {
            let metrics = self.shared.raft.metrics();
            let metrics = metrics.borrow_watched();
            if metrics.state != ServerState::Leader {
                return None;
            }
            let me = self.shared.config.node;
            let replication = metrics.replication.as_ref()?;
            let heartbeat = metrics.heartbeat.as_ref()?;
            let voters: Vec<NodeId> = metrics.membership_config.membership().voter_ids().collect();
            voters
                .into_iter()
                .filter(|voter| *voter != me)
                .find(|voter| {
                    let holds = replication
                        .get(voter)
                        .and_then(|matched| matched.as_ref())
                        .map(|matched| matched.index)
                        >= metrics.last_log_index;
                    let answers = heartbeat
                        .get(voter)
                        .and_then(|at| at.as_ref())
                        .is_some_and(|at| openraft::Instant::elapsed(&**at) < fresh);
                    holds && answers
                })?
        };
        self.shared.raft.trigger().transfer_leader(to).await.ok()?;
        tracing::info!(to, "metadata leadership handed over");
        Some(to)
    }

    /// Commits `command` through the leader (forwarding if this node is not it); returns the
    /// map version after it.
    pub async fn propose(&self, command: MapCommand) -> Result<u64, MetaError> {
        self.shared.propose(command).await
    }

    /// Serves one inbound request from peer `from`: decodes it, hands it to the local Raft (or
    /// forwards a proposal to the leader) and encodes the reply.
    pub async fn handle(&self, from: NodeId, payload: Bytes) -> Result<Bytes, String> {
        self.shared.handle(from, payload).await
    }

    /// Stops the group's tasks and openraft (no leadership hand-over).
    pub async fn shutdown(&self) {
        self.shared.stop.send_replace(true);
        self.tasks.stop().await;
        if let Err(error) = self.shared.raft.shutdown().await {
            tracing::warn!(%error, "metadata raft shutdown");
        }
    }
}

impl Drop for MetaGroup {
    fn drop(&mut self) {
        // The tasks are aborted as `tasks` is dropped.
        self.shared.stop.send_replace(true);
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn stopped(error: impl std::fmt::Display) -> MetaError {
    MetaError::Stopped(error.to_string())
}

fn failure(message: impl std::fmt::Display, leader: Option<NodeId>) -> pb::raft_response::Response {
    pb::raft_response::Response::Failure(pb::RaftFailure {
        message: message.to_string(),
        leader,
    })
}

/// The seeds that form the first voter set: the first 3 by id, or 5 when there are at least 5.
fn initial_voters(seeds: &[(NodeId, NodeRecord)]) -> BTreeMap<NodeId, BasicNode> {
    let mut sorted: Vec<&(NodeId, NodeRecord)> = seeds.iter().collect();
    sorted.sort_by_key(|(id, _)| *id);
    let count = if sorted.len() >= 5 { 5 } else { 3 };
    sorted
        .into_iter()
        .take(count)
        .map(|(id, record)| {
            (
                *id,
                BasicNode {
                    addr: record.mesh_addr.clone(),
                },
            )
        })
        .collect()
}

/// Outcome of one attempt to get a request to the leader.
enum Attempt<T> {
    Done(T),
    /// No leader right now (or it moved); worth retrying.
    Retry(String),
    /// Final.
    Failed(MetaError),
}

impl Shared {
    fn is_bootstrapper(&self) -> bool {
        self.config.seeds.iter().map(|(id, _)| *id).min() == Some(self.config.node)
    }

    fn metrics(&self) -> RaftMetrics<MetaTypes> {
        self.raft.metrics().borrow_watched().clone()
    }

    async fn initialize(&self) -> Result<(), MetaError> {
        let voters = initial_voters(&self.config.seeds);
        tracing::info!(voters = ?voters.keys().collect::<Vec<_>>(), "initializing the metadata group");
        match self.raft.initialize(voters).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(error)) => {
                // Already initialized meanwhile (a vote or entries arrived): nothing to do.
                tracing::info!(%error, "metadata group not initialized here");
                Ok(())
            }
            Err(RaftError::Fatal(error)) => Err(stopped(error)),
        }
    }

    /// Where to send a request this node cannot serve: the known leader, else a seed.
    fn route(&self, attempt: usize) -> Option<NodeId> {
        let metrics = self.raft.metrics().borrow_watched().clone();
        if let Some(leader) = metrics.current_leader
            && leader != self.config.node
        {
            return Some(leader);
        }
        let others: Vec<NodeId> = self
            .config
            .seeds
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| *id != self.config.node)
            .collect();
        if others.is_empty() {
            None
        } else {
            Some(others[attempt % others.len()])
        }
    }

    async fn propose(&self, command: MapCommand) -> Result<u64, MetaError> {
        let deadline = Instant::now() + PROPOSE_PATIENCE;
        let mut attempt = 0;
        loop {
            let outcome = if self.raft.is_leader() {
                self.write_local(command.clone()).await
            } else {
                self.propose_remote(&command, attempt).await
            };
            match outcome {
                Attempt::Done(version) => return Ok(version),
                Attempt::Failed(error) => return Err(error),
                Attempt::Retry(reason) if Instant::now() >= deadline => {
                    return Err(MetaError::NoLeader(reason));
                }
                Attempt::Retry(_) => {}
            }
            attempt += 1;
            if *self.stop.borrow() {
                return Err(MetaError::Stopped("shut down".into()));
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    async fn write_local(&self, command: MapCommand) -> Attempt<u64> {
        match self.raft.client_write(command).await {
            Ok(response) => match response.data {
                Ok(version) => Attempt::Done(version),
                Err(refused) => Attempt::Failed(MetaError::Refused(refused)),
            },
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                Attempt::Retry(format!("leader moved to {:?}", forward.leader_id))
            }
            Err(RaftError::APIError(error)) => Attempt::Retry(error.to_string()),
            Err(RaftError::Fatal(error)) => Attempt::Failed(stopped(error)),
        }
    }

    async fn propose_remote(&self, command: &MapCommand, attempt: usize) -> Attempt<u64> {
        let Some(target) = self.route(attempt) else {
            return Attempt::Retry("no peer to ask".into());
        };
        let request = pb::raft_request::Request::Propose(pb::ProposeRequest {
            command: Some(command.to_proto()),
            hops: 0,
        });
        match network::call(&self.transport, target, request, RPC_DEADLINE * 5).await {
            Ok(pb::raft_response::Response::Propose(reply)) => propose_outcome(reply),
            Ok(_) => Attempt::Retry(format!("node {target} answered another kind")),
            Err(error) => Attempt::Retry(format!("node {target}: {error}")),
        }
    }

    /// Adds `node` to the group as a learner (if it is not a member) and to the map; leader only.
    async fn join_local(&self, node: NodeId, record: NodeRecord) -> Attempt<u64> {
        let member = self
            .metrics()
            .membership_config
            .membership()
            .nodes()
            .any(|(id, _)| *id == node);
        if !member {
            let learner = BasicNode {
                addr: record.mesh_addr.clone(),
            };
            match self.raft.add_learner(node, learner, false).await {
                Ok(_) => {}
                Err(RaftError::APIError(error)) => return Attempt::Retry(error.to_string()),
                Err(RaftError::Fatal(error)) => return Attempt::Failed(stopped(error)),
            }
        }
        self.write_local(MapCommand::AddNode { node, record }).await
    }

    async fn join_remote(&self, node: NodeId, record: &NodeRecord, attempt: usize) -> Attempt<u64> {
        let Some(target) = self.route(attempt) else {
            return Attempt::Retry("no peer to ask".into());
        };
        let request = pb::raft_request::Request::Join(pb::JoinRequest {
            node,
            record: Some(record.to_proto()),
            hops: 0,
        });
        match network::call(&self.transport, target, request, RPC_DEADLINE * 5).await {
            Ok(pb::raft_response::Response::Join(reply)) => Attempt::Done(reply.version),
            Ok(_) => Attempt::Retry(format!("node {target} answered another kind")),
            Err(error) => Attempt::Retry(format!("node {target}: {error}")),
        }
    }
}

fn propose_outcome(reply: pb::ProposeResponse) -> Attempt<u64> {
    if reply.rejected.is_empty() {
        Attempt::Done(reply.version)
    } else {
        Attempt::Failed(MetaError::RefusedRemotely(reply.rejected))
    }
}
