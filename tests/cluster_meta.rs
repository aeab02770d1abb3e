//! The metadata group end to end: several `MetaGroup`s in one process over an in-process
//! transport that can cut links, each with its own data directory. Checks election, agreement
//! on the map, failover, restart from disk, join through a seed, and two safety invariants
//! (one leader per term; no node's map version ever decreases).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use tern::cluster::map::{ClusterMap, MapCommand, NodeRecord, NodeState};
use tern::cluster::raft::{MetaConfig, MetaError, MetaGroup, MetaStatus, RaftTransport, Role};
use tokio::task::JoinHandle;

/// How long any condition may take to come true (generous: the box is shared).
const PATIENCE: Duration = Duration::from_secs(60);

/// The in-process network: the running groups by id and the directed links that are cut.
#[derive(Default)]
struct Net {
    groups: Mutex<HashMap<u64, Arc<MetaGroup>>>,
    cut: Mutex<HashSet<(u64, u64)>>,
}

impl Net {
    fn is_cut(&self, from: u64, to: u64) -> bool {
        self.cut.lock().expect("lock").contains(&(from, to))
    }

    /// Cuts every link between `node` and the others, both ways.
    fn isolate(&self, node: u64, others: &[u64]) {
        let mut cut = self.cut.lock().expect("lock");
        for other in others {
            cut.insert((node, *other));
            cut.insert((*other, node));
        }
    }

    fn heal(&self) {
        self.cut.lock().expect("lock").clear();
    }

    fn group(&self, node: u64) -> Option<Arc<MetaGroup>> {
        self.groups.lock().expect("lock").get(&node).cloned()
    }
}

/// One node's end of the in-process network.
struct Link {
    from: u64,
    net: Arc<Net>,
}

impl RaftTransport for Link {
    fn call(
        &self,
        peer: u64,
        payload: Bytes,
        deadline: Duration,
    ) -> BoxFuture<'static, Result<Bytes, String>> {
        let net = self.net.clone();
        let from = self.from;
        Box::pin(async move {
            if net.is_cut(from, peer) {
                return Err(format!("link {from} -> {peer} cut"));
            }
            let group = net
                .group(peer)
                .ok_or_else(|| format!("node {peer} is not running"))?;
            let reply = tokio::time::timeout(deadline, group.handle(from, payload))
                .await
                .map_err(|_| "deadline passed".to_string())??;
            if net.is_cut(peer, from) {
                return Err(format!("link {peer} -> {from} cut"));
            }
            Ok(reply)
        })
    }
}

fn record(node: u64) -> NodeRecord {
    let base = 20_000 + node * 10;
    NodeRecord {
        mesh_addr: format!("127.0.0.1:{base}"),
        client_addr: format!("127.0.0.1:{}", base + 1),
        admin_addr: format!("127.0.0.1:{}", base + 2),
        media_addr: format!("127.0.0.1:{}", base + 3),
        state: NodeState::Joining,
    }
}

fn config(node: u64, dir: &Path, seeds: &[u64]) -> MetaConfig {
    let seeds = seeds.iter().map(|id| (*id, record(*id))).collect();
    let mut config = MetaConfig::new(node, record(node), dir.join(format!("node-{node}")), seeds);
    config.heartbeat = Duration::from_millis(100);
    config.election_timeout_min = Duration::from_millis(600);
    config.election_timeout_max = Duration::from_millis(1200);
    config.down_after = Duration::from_millis(1500);
    config.controller_interval = Duration::from_millis(200);
    config.slot_count = 16;
    // Small, so snapshots, log purges and snapshot installs over the transport all happen.
    config.snapshot_every = 4;
    config
}

/// The groups under test plus the invariant watchers.
struct Cluster {
    dir: tempfile::TempDir,
    net: Arc<Net>,
    seeds: Vec<u64>,
    /// Every (term, leader) seen, by term.
    leaders: Arc<Mutex<BTreeMap<u64, HashSet<u64>>>>,
    /// Per node: every map version it published, in order.
    versions: Arc<Mutex<HashMap<u64, Vec<u64>>>>,
    watchers: Vec<JoinHandle<()>>,
}

impl Cluster {
    async fn start(seeds: &[u64]) -> Cluster {
        let mut cluster = Cluster {
            dir: tempfile::tempdir().expect("temp dir"),
            net: Arc::new(Net::default()),
            seeds: seeds.to_vec(),
            leaders: Arc::default(),
            versions: Arc::default(),
            watchers: Vec::new(),
        };
        for node in seeds {
            cluster.start_node(*node).await;
        }
        cluster
    }

    async fn start_node(&mut self, node: u64) {
        let transport = Arc::new(Link {
            from: node,
            net: self.net.clone(),
        });
        let group = MetaGroup::start(config(node, self.dir.path(), &self.seeds), transport)
            .await
            .expect("group starts");
        let group = Arc::new(group);
        self.net
            .groups
            .lock()
            .expect("lock")
            .insert(node, group.clone());
        self.watch(node, group);
    }

    /// Records every leader this node reports and every map version it publishes.
    fn watch(&mut self, node: u64, group: Arc<MetaGroup>) {
        let leaders = self.leaders.clone();
        let versions = self.versions.clone();
        let mut maps = group.map();
        let weak = Arc::downgrade(&group);
        drop(group);
        self.watchers.push(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_millis(10));
            loop {
                let Some(group) = weak.upgrade() else { return };
                let status = group.status();
                drop(group);
                if status.role == Role::Leader {
                    leaders
                        .lock()
                        .expect("lock")
                        .entry(status.term)
                        .or_default()
                        .insert(node);
                }
                if maps.has_changed().unwrap_or(false) {
                    let version = maps.borrow_and_update().version;
                    versions
                        .lock()
                        .expect("lock")
                        .entry(node)
                        .or_default()
                        .push(version);
                }
                ticks.tick().await;
            }
        }));
    }

    async fn stop_node(&self, node: u64) {
        let group = self
            .net
            .groups
            .lock()
            .expect("lock")
            .remove(&node)
            .expect("node runs");
        group.shutdown().await;
    }

    fn statuses(&self) -> Vec<MetaStatus> {
        let groups: Vec<Arc<MetaGroup>> = self
            .net
            .groups
            .lock()
            .expect("lock")
            .values()
            .cloned()
            .collect();
        groups.iter().map(|group| group.status()).collect()
    }

    fn maps(&self) -> BTreeMap<u64, Arc<ClusterMap>> {
        let groups: Vec<(u64, Arc<MetaGroup>)> = self
            .net
            .groups
            .lock()
            .expect("lock")
            .iter()
            .map(|(id, group)| (*id, group.clone()))
            .collect();
        groups
            .into_iter()
            .map(|(id, group)| (id, group.map().borrow().clone()))
            .collect()
    }

    /// Waits until `condition` holds of the running nodes' maps; panics with them otherwise.
    async fn wait_for(
        &self,
        what: &str,
        condition: impl Fn(&BTreeMap<u64, Arc<ClusterMap>>, &[MetaStatus]) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let maps = self.maps();
            let statuses = self.statuses();
            if condition(&maps, &statuses) {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("timed out waiting for {what}\nmaps: {maps:#?}\nstatuses: {statuses:#?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Asserts the safety invariants over everything watched so far.
    fn check_invariants(&self) {
        for (term, leaders) in self.leaders.lock().expect("lock").iter() {
            assert!(leaders.len() <= 1, "term {term} had leaders {leaders:?}");
        }
        for (node, versions) in self.versions.lock().expect("lock").iter() {
            assert!(
                versions.windows(2).all(|pair| pair[0] <= pair[1]),
                "node {node}'s map went backwards: {versions:?}"
            );
        }
    }

    async fn shutdown(mut self) {
        self.check_invariants();
        for watcher in self.watchers.drain(..) {
            watcher.abort();
        }
        let groups: Vec<Arc<MetaGroup>> = self
            .net
            .groups
            .lock()
            .expect("lock")
            .drain()
            .map(|(_, group)| group)
            .collect();
        for group in groups {
            group.shutdown().await;
        }
        drop(self.dir);
    }
}

/// Nodes 1, 2 and 3, all seeds, once they agree on a leader and a map with all three active.
async fn settled_three() -> (Cluster, [(u64, NodeState); 3]) {
    let cluster = Cluster::start(&[1, 2, 3]).await;
    let active = [
        (1, NodeState::Active),
        (2, NodeState::Active),
        (3, NodeState::Active),
    ];
    cluster
        .wait_for("a settled three-node map", |maps, statuses| {
            agreed_leader(statuses).is_some() && all_agree(maps, &active)
        })
        .await;
    (cluster, active)
}

/// One leader among the running nodes, known to all of them.
fn agreed_leader(statuses: &[MetaStatus]) -> Option<u64> {
    let leaders: Vec<&MetaStatus> = statuses
        .iter()
        .filter(|status| status.role == Role::Leader)
        .collect();
    let [leader] = leaders.as_slice() else {
        return None;
    };
    statuses
        .iter()
        .all(|status| status.leader == Some(leader.node) && status.term == leader.term)
        .then_some(leader.node)
}

/// Every running node has the same map, listing exactly `nodes` in state `state`... for the
/// ones in `states`, with a full slot table.
fn all_agree(maps: &BTreeMap<u64, Arc<ClusterMap>>, states: &[(u64, NodeState)]) -> bool {
    let mut iter = maps.values();
    let Some(first) = iter.next() else {
        return false;
    };
    iter.all(|map| map == first)
        && first.nodes.len() == states.len()
        && states.iter().all(|(id, state)| {
            first
                .nodes
                .get(id)
                .is_some_and(|record| record.state == *state)
        })
        && first.placement.slots.len() == 16
        // Islands are whole: active nodes left out of every island (spares) are fewer than
        // an island's size, so no island could be formed of them.
        && states
            .iter()
            .filter(|(_, state)| *state == NodeState::Active)
            .filter(|(id, _)| {
                !first
                    .placement
                    .islands
                    .iter()
                    .any(|island| island.members.contains(id))
            })
            .count()
            < 3
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_one_leader_and_agree_on_the_map() {
    let cluster = Cluster::start(&[1, 2, 3]).await;
    let active = [
        (1, NodeState::Active),
        (2, NodeState::Active),
        (3, NodeState::Active),
    ];
    cluster
        .wait_for(
            "one leader and one map with three active nodes",
            |maps, statuses| agreed_leader(statuses).is_some() && all_agree(maps, &active),
        )
        .await;
    let maps = cluster.maps();
    let map = &maps[&1];
    assert!(
        map.version >= 6,
        "three adds, three activations and a placement: {}",
        map.version
    );
    assert_eq!(map.placement.islands.len(), 1);
    assert_eq!(map.placement.islands[0].members, vec![1, 2, 3]);
    for record in map.nodes.values() {
        assert!(record.mesh_addr.starts_with("127.0.0.1:"));
    }
    let statuses = cluster.statuses();
    for status in &statuses {
        assert_eq!(status.voters, vec![1, 2, 3]);
        assert!(status.learners.is_empty());
    }

    // A follower forwards proposals to the leader; the map refuses what it cannot apply.
    let leader = agreed_leader(&statuses).expect("a leader");
    let follower = [1, 2, 3]
        .into_iter()
        .find(|id| *id != leader)
        .expect("a follower");
    let group = cluster.net.group(follower).expect("runs");
    let refused = group
        .propose(MapCommand::SetState {
            node: 99,
            state: NodeState::Down,
        })
        .await;
    assert!(
        matches!(refused, Err(MetaError::RefusedRemotely(_))),
        "{refused:?}"
    );
    let version = group
        .propose(MapCommand::SetState {
            node: leader,
            state: NodeState::Draining,
        })
        .await
        .expect("forwarded and committed");
    assert!(version > map.version);
    cluster
        .wait_for(
            "every map with the leader draining and still on its island (a drain moves nothing)",
            |maps, _| {
                maps.values().all(|map| {
                    map.nodes[&leader].state == NodeState::Draining
                        && map
                            .placement
                            .islands
                            .iter()
                            .any(|island| island.members.contains(&leader))
                })
            },
        )
        .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_leader_is_replaced_marked_down_and_rejoins_after_restart() {
    let (mut cluster, active) = settled_three().await;
    let old = agreed_leader(&cluster.statuses()).expect("a leader");
    let old_term = cluster.statuses()[0].term;
    let placed = cluster.maps()[&old].placement.clone();
    cluster.stop_node(old).await;

    let mut expected: Vec<(u64, NodeState)> = active.to_vec();
    for (id, state) in &mut expected {
        if *id == old {
            *state = NodeState::Down;
        }
    }
    cluster
        .wait_for(
            "a new leader that marks the old one down",
            |maps, statuses| {
                agreed_leader(statuses).is_some_and(|leader| leader != old)
                    && statuses.iter().all(|status| status.term > old_term)
                    && all_agree(maps, &expected)
            },
        )
        .await;
    // Down is not gone: the old leader keeps its place, no slot moves.
    for (node, map) in cluster.maps() {
        assert_eq!(
            map.placement, placed,
            "node {node} moved slots off a node that is down"
        );
    }

    // Restarted cut off from its peers, it rebuilds the map from its own files first.
    let others: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != old).collect();
    cluster.net.isolate(old, &others);
    cluster.start_node(old).await;
    cluster
        .wait_for("the restarted node's map from its own log", |maps, _| {
            maps[&old].nodes.len() == 3 && maps[&old].placement.slots.len() == 16
        })
        .await;
    cluster.net.heal();
    cluster
        .wait_for(
            "the restarted node back, active, with the same map",
            |maps, statuses| {
                statuses.len() == 3 && agreed_leader(statuses).is_some() && all_agree(maps, &active)
            },
        )
        .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_outside_the_seeds_joins_through_a_seed() {
    let (mut cluster, _) = settled_three().await;
    cluster.start_node(4).await;
    let four = [
        (1, NodeState::Active),
        (2, NodeState::Active),
        (3, NodeState::Active),
        (4, NodeState::Active),
    ];
    cluster
        .wait_for(
            "node 4 in the group and active in every map",
            |maps, statuses| {
                maps.len() == 4
                    && all_agree(maps, &four)
                    && statuses
                        .iter()
                        .all(|status| status.learners == vec![4] && status.voters == vec![1, 2, 3])
            },
        )
        .await;
    assert_eq!(cluster.maps()[&4].nodes[&4].mesh_addr, record(4).mesh_addr);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_leader_is_replaced_and_the_group_heals() {
    let (cluster, active) = settled_three().await;
    let old = agreed_leader(&cluster.statuses()).expect("a leader");
    let others: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != old).collect();
    cluster.net.isolate(old, &others);
    let mut expected: Vec<(u64, NodeState)> = active.to_vec();
    for (id, state) in &mut expected {
        if *id == old {
            *state = NodeState::Down;
        }
    }
    cluster
        .wait_for(
            "the majority side elects a leader and marks the old one down",
            |maps, statuses| {
                let majority: Vec<MetaStatus> = statuses
                    .iter()
                    .filter(|status| status.node != old)
                    .cloned()
                    .collect();
                let majority_maps: BTreeMap<u64, Arc<ClusterMap>> = maps
                    .iter()
                    .filter(|(id, _)| **id != old)
                    .map(|(id, map)| (*id, map.clone()))
                    .collect();
                agreed_leader(&majority).is_some() && all_agree(&majority_maps, &expected)
            },
        )
        .await;
    cluster.check_invariants();
    cluster.net.heal();
    cluster
        .wait_for(
            "all three back on one leader and one map",
            |maps, statuses| agreed_leader(statuses).is_some() && all_agree(maps, &active),
        )
        .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learners_become_voters_until_five_vote() {
    let mut cluster = Cluster::start(&[1, 2, 3]).await;
    let active: Vec<(u64, NodeState)> = (1..=3).map(|id| (id, NodeState::Active)).collect();
    cluster
        .wait_for("a settled three-node map", |maps, statuses| {
            agreed_leader(statuses).is_some() && all_agree(maps, &active)
        })
        .await;
    cluster.start_node(4).await;
    cluster.start_node(5).await;
    let five: Vec<(u64, NodeState)> = (1..=5).map(|id| (id, NodeState::Active)).collect();
    cluster
        .wait_for("five active nodes, all voters", |maps, statuses| {
            maps.len() == 5
                && all_agree(maps, &five)
                && statuses.iter().all(|status| {
                    status.voters == vec![1, 2, 3, 4, 5] && status.learners.is_empty()
                })
        })
        .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lowest_seed_that_lost_its_files_rejoins_the_group_the_others_hold() {
    let (mut cluster, active) = settled_three().await;
    let placed = cluster.maps()[&2].placement.clone();
    cluster.stop_node(1).await;
    std::fs::remove_dir_all(cluster.dir.path().join("node-1")).expect("wipe node 1");
    // Its map starts again from nothing: only the versions published from now on are compared.
    cluster.versions.lock().expect("lock").remove(&1);
    cluster.start_node(1).await;
    cluster
        .wait_for(
            "the wiped seed back in the same group, with the same map",
            |maps, statuses| {
                statuses.len() == 3 && agreed_leader(statuses).is_some() && all_agree(maps, &active)
            },
        )
        .await;
    for (node, map) in cluster.maps() {
        assert_eq!(map.placement, placed, "node {node} holds another placement");
    }
    cluster.shutdown().await;
}
