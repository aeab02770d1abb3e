//! Slot groups of three nodes in one process, over an in-memory transport that can cut any
//! direction between two nodes, each node with its own log engine on disk.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;

use super::state_machine::SlotApplier;
use super::{LogEngine, SlotCommand, SlotError, SlotGroups, SlotGroupsConfig};
use crate::cluster::raft::transport::RaftTransport;
use crate::journal::JournalConfig;

/// One group's applied entries: (index, records).
type AppliedLog = Vec<(u64, Vec<Bytes>)>;

/// Records every applied entry, per group.
#[derive(Default)]
pub(super) struct Recorded {
    applied: Mutex<HashMap<u64, AppliedLog>>,
}

impl Recorded {
    pub(super) fn of(&self, group: u64) -> AppliedLog {
        self.applied
            .lock()
            .expect("lock")
            .get(&group)
            .cloned()
            .unwrap_or_default()
    }
}

impl SlotApplier for Recorded {
    fn apply(&self, group: u64, index: u64, command: SlotCommand) -> BoxFuture<'static, ()> {
        let mut applied = self.applied.lock().expect("lock");
        let log = applied.entry(group).or_default();
        // Re-applied after a restart: the same index, the same records.
        if log.last().is_none_or(|(last, _)| *last < index) {
            log.push((index, command.records));
        }
        Box::pin(async {})
    }

    fn export(&self, _group: u64) -> BoxFuture<'static, Result<Bytes, String>> {
        Box::pin(async { Err("snapshots are not used here".into()) })
    }

    fn install(
        &self,
        _group: u64,
        _index: u64,
        _mark: Bytes,
        _snapshot: Bytes,
    ) -> BoxFuture<'static, Result<(), String>> {
        Box::pin(async { Err("snapshots are not used here".into()) })
    }

    fn saved(&self, _group: u64) -> BoxFuture<'static, Option<Bytes>> {
        Box::pin(async { None })
    }
}

/// The nodes, and which directions are cut.
#[derive(Default)]
pub(super) struct Net {
    nodes: Mutex<HashMap<u64, Weak<SlotGroups>>>,
    cut: Mutex<HashSet<(u64, u64)>>,
}

impl Net {
    pub(super) fn cut(&self, from: u64, to: u64) {
        self.cut.lock().expect("lock").insert((from, to));
    }

    pub(super) fn isolate(&self, node: u64, others: &[u64]) {
        for other in others {
            self.cut(node, *other);
            self.cut(*other, node);
        }
    }

    pub(super) fn heal(&self) {
        self.cut.lock().expect("lock").clear();
    }

    fn is_cut(&self, from: u64, to: u64) -> bool {
        self.cut.lock().expect("lock").contains(&(from, to))
    }
}

struct Link {
    me: u64,
    net: Arc<Net>,
}

impl RaftTransport for Link {
    fn call(
        &self,
        peer: u64,
        payload: Bytes,
        deadline: Duration,
    ) -> BoxFuture<'static, Result<Bytes, String>> {
        let (me, net) = (self.me, self.net.clone());
        Box::pin(async move {
            let target = net.nodes.lock().expect("lock").get(&peer).cloned();
            let target = target.and_then(|target| target.upgrade());
            let Some(target) = target.filter(|_| !net.is_cut(me, peer)) else {
                tokio::time::sleep(deadline.min(Duration::from_millis(50))).await;
                return Err(format!("node {peer} unreachable"));
            };
            let reply = target.handle(me, payload).await;
            if net.is_cut(peer, me) {
                return Err(format!("reply from node {peer} lost"));
            }
            reply
        })
    }
}

/// One node: its slot groups and where its log lives.
pub(super) struct Node {
    pub(super) id: u64,
    pub(super) groups: Arc<SlotGroups>,
    pub(super) applied: Arc<Recorded>,
    dir: PathBuf,
}

pub(super) fn config(dir: &Path) -> JournalConfig {
    let mut config = JournalConfig::new(dir.to_path_buf());
    config.segment_bytes = 1 << 20;
    config
}

/// Starts node `id` over the log in `dir` and joins `groups` (group -> preferred leader),
/// every group over `members`; a node among `founders` may found them.
pub(super) async fn start(
    net: &Arc<Net>,
    id: u64,
    dir: &Path,
    members: &[u64],
    groups: &[(u64, u64)],
    founders: &[u64],
) -> Node {
    // A crashed node's last handles may still be let go of (a proposal in flight holds one).
    let mut attempts = 0;
    let engine = loop {
        match LogEngine::open(config(dir)) {
            Ok(engine) => break engine,
            Err(error) if attempts < 100 => {
                attempts += 1;
                let _ = error;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("opens the log: {error}"),
        }
    };
    let applied = Arc::new(Recorded::default());
    let mut settings = SlotGroupsConfig::new(id);
    settings.heartbeat = Duration::from_millis(50);
    settings.election_timeout_min = Duration::from_millis(400);
    settings.election_timeout_max = Duration::from_millis(800);
    let slot_groups = Arc::new(
        SlotGroups::start(
            settings,
            engine,
            Arc::new(Link {
                me: id,
                net: net.clone(),
            }),
            applied.clone(),
        )
        .expect("starts"),
    );
    net.nodes
        .lock()
        .expect("lock")
        .insert(id, Arc::downgrade(&slot_groups));
    for (group, preferred) in groups {
        slot_groups
            .join(
                *group,
                members,
                *preferred,
                founders.contains(&id).then_some(founders),
            )
            .await
            .expect("joins");
    }
    Node {
        id,
        groups: slot_groups,
        applied,
        dir: dir.to_path_buf(),
    }
}

impl Node {
    /// Stops the node as a crash would (its openraft tasks end, nothing handed over).
    pub(super) async fn crash(self, net: &Net) -> PathBuf {
        net.nodes.lock().expect("lock").remove(&self.id);
        self.groups.shutdown().await;
        self.dir
    }
}

/// Waits until `check` holds, polling.
pub(super) async fn until(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..400 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting until {what}");
}

/// The leader of `group` that every live node agrees on.
pub(super) fn agreed_leader(nodes: &[&Node], group: u64) -> Option<u64> {
    let leader = nodes[0].groups.leader(group)?;
    let agreed = nodes
        .iter()
        .all(|node| node.groups.leader(group) == Some(leader));
    let leads = nodes
        .iter()
        .any(|node| node.id == leader && node.groups.led().contains(&group));
    (agreed && leads).then_some(leader)
}

/// Proposes `text` to `group` on whichever live node leads it, retrying while none does.
pub(super) async fn commit(nodes: &[&Node], group: u64, text: String) -> u64 {
    for _ in 0..400 {
        for node in nodes {
            match node.groups.propose(group, command(&text)).await {
                Ok(index) => return index,
                Err(SlotError::NotLeader { .. } | SlotError::Failed { .. }) => {}
                Err(other) => panic!("{other}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no leader of group {group} committed {text}");
}

const MEMBERS: [u64; 3] = [1, 2, 3];

fn command(text: &str) -> SlotCommand {
    SlotCommand {
        records: vec![Bytes::from(text.to_owned())],
        origin: 0,
        serial: 0,
        media: Vec::new(),
    }
}

/// 24 groups, each node the preferred leader of 8.
fn groups() -> Vec<(u64, u64)> {
    (0..24)
        .map(|group| (group, MEMBERS[group as usize % 3]))
        .collect()
}

async fn three(net: &Arc<Net>, dirs: &[tempfile::TempDir]) -> Vec<Node> {
    let mut nodes = Vec::new();
    for (i, id) in MEMBERS.iter().enumerate() {
        nodes.push(start(net, *id, dirs[i].path(), &MEMBERS, &groups(), &MEMBERS).await);
    }
    nodes
}

fn leaders_spread(nodes: &[&Node], groups: &[(u64, u64)]) -> bool {
    groups
        .iter()
        .all(|(group, preferred)| agreed_leader(nodes, *group) == Some(*preferred))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaders_spread_and_idle_groups_share_one_call_per_peer_per_heartbeat() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("dir")).collect();
    let net = Arc::new(Net::default());
    let nodes = three(&net, &dirs).await;
    let refs: Vec<&Node> = nodes.iter().collect();
    until("every group is led by the node it prefers", || {
        leaders_spread(&refs, &groups())
    })
    .await;
    for node in &nodes {
        assert_eq!(node.groups.led().len(), 8, "node {}", node.id);
    }
    let before: Vec<(u64, u64)> = nodes.iter().map(|node| node.groups.sent()).collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (node, (batches, rpcs)) in nodes.iter().zip(before) {
        let (batches_now, rpcs_now) = node.groups.sent();
        let (batches, rpcs) = (batches_now - batches, rpcs_now - rpcs);
        // 8 led groups x 2 peers per heartbeat: one call per group would make calls == rpcs;
        // coalesced, it is one call per peer per heartbeat (80 calls for 640 requests here).
        assert!(rpcs >= 16, "node {}: {rpcs} requests", node.id);
        assert!(
            batches * 4 <= rpcs,
            "node {}: {batches} calls carried {rpcs} requests",
            node.id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_entries_survive_a_crashed_leader_and_it_takes_its_groups_back() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("dir")).collect();
    let net = Arc::new(Net::default());
    let mut nodes = three(&net, &dirs).await;
    {
        let refs: Vec<&Node> = nodes.iter().collect();
        until("leaders spread", || leaders_spread(&refs, &groups())).await;
    }
    let mut acked: Vec<(u64, u64, String)> = Vec::new();
    for round in 0..3 {
        for (group, _) in groups() {
            let text = format!("g{group}-r{round}");
            let refs: Vec<&Node> = nodes.iter().collect();
            acked.push((group, commit(&refs, group, text.clone()).await, text));
        }
    }
    // Node 1 leads groups 0, 3, 6, ...: it crashes; its groups elect among nodes 2 and 3.
    let crashed = nodes.remove(0);
    let dir = crashed.crash(&net).await;
    for round in 3..6 {
        for (group, _) in groups() {
            let text = format!("g{group}-r{round}");
            let refs: Vec<&Node> = nodes.iter().collect();
            acked.push((group, commit(&refs, group, text.clone()).await, text));
        }
    }
    // It comes back from its log, catches up, and gets its leaderships back by transfer.
    nodes.insert(0, start(&net, 1, &dir, &MEMBERS, &groups(), &MEMBERS).await);
    let refs: Vec<&Node> = nodes.iter().collect();
    until("the returned node leads its groups again", || {
        leaders_spread(&refs, &groups())
    })
    .await;
    let last = acked.iter().map(|(_, index, _)| *index).max().unwrap_or(0);
    until("every node applied everything", || {
        groups().iter().all(|(group, _)| {
            let wanted = acked
                .iter()
                .filter(|(g, _, _)| g == group)
                .map(|(_, index, _)| *index)
                .max();
            refs.iter()
                .all(|node| node.groups.applied(*group) >= wanted)
        })
    })
    .await;
    assert!(last > 0);
    for node in &nodes {
        for (group, index, text) in &acked {
            let log = node.applied.of(*group);
            let found: Vec<_> = log
                .iter()
                .filter(|(_, records)| records.iter().any(|r| r == text.as_bytes()))
                .collect();
            assert_eq!(found.len(), 1, "node {}: {text} applied once", node.id);
            assert_eq!(found[0].0, *index, "node {}: {text} at its index", node.id);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_back_before_an_election_leads_again_only_after_one() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("dir")).collect();
    let net = Arc::new(Net::default());
    let mut nodes = three(&net, &dirs).await;
    {
        let refs: Vec<&Node> = nodes.iter().collect();
        until("leaders spread", || leaders_spread(&refs, &groups())).await;
    }
    for (group, _) in groups()
        .into_iter()
        .filter(|(_, preferred)| *preferred == 1)
    {
        let refs: Vec<&Node> = nodes.iter().collect();
        commit(&refs, group, format!("g{group}")).await;
    }
    // Node 1 crashes and is back at once, before its peers' election timeout, but cut off from
    // them. Its log may hold entries committed after the committed id it saved (that id is not
    // fsynced): leading on in its old term, it would name itself leader with those entries
    // unapplied, and its workers would serve reads and number new entries without them.
    let dir = nodes.remove(0).crash(&net).await;
    net.isolate(1, &[2, 3]);
    nodes.insert(0, start(&net, 1, &dir, &MEMBERS, &groups(), &MEMBERS).await);
    for _ in 0..12 {
        let named: Vec<u64> = nodes[0]
            .groups
            .leadership()
            .into_iter()
            .filter(|(_, leader)| *leader == Some(1))
            .map(|(group, _)| group)
            .collect();
        assert!(
            named.is_empty(),
            "node 1 leads {named:?} without an election"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // Reachable again, it takes its groups back (elected or handed back, in a new term).
    net.heal();
    let refs: Vec<&Node> = nodes.iter().collect();
    until("the returned node leads its groups again", || {
        leaders_spread(&refs, &groups())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_member_is_replaced_by_a_learner_that_catches_up_and_holds_everything() {
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().expect("dir")).collect();
    let net = Arc::new(Net::default());
    let mut nodes = three(&net, &dirs).await;
    {
        let refs: Vec<&Node> = nodes.iter().collect();
        until("leaders spread", || leaders_spread(&refs, &groups())).await;
    }
    let mut acked: Vec<(u64, u64, String)> = Vec::new();
    let mut round = 0;
    let mut commit_round = async |nodes: &[Node], acked: &mut Vec<(u64, u64, String)>| {
        for (group, _) in groups() {
            let text = format!("g{group}-r{round}");
            let refs: Vec<&Node> = nodes.iter().collect();
            acked.push((group, commit(&refs, group, text.clone()).await, text));
        }
        round += 1;
    };
    commit_round(&nodes, &mut acked).await;
    commit_round(&nodes, &mut acked).await;
    // Node 2 dies for good; node 4 takes its place (the island's order: 1, 4, 3). Node 4 is
    // no founder: it never initializes a group, it waits to be added.
    drop(nodes.remove(1).crash(&net).await);
    commit_round(&nodes, &mut acked).await;
    let island = [1, 4, 3];
    let placed: Vec<(u64, u64)> = groups()
        .iter()
        .map(|(group, _)| (*group, island[*group as usize % 3]))
        .collect();
    nodes.push(start(&net, 4, dirs[3].path(), &island, &placed, &MEMBERS).await);
    for node in &nodes {
        for (group, preferred) in &placed {
            node.groups.retarget(*group, &island, *preferred);
        }
    }
    {
        let refs: Vec<&Node> = nodes.iter().collect();
        until("every group's voters are 1, 3 and 4 on every node", || {
            refs.iter().all(|node| {
                groups()
                    .iter()
                    .all(|(group, _)| node.groups.voters(*group) == vec![1, 3, 4])
            })
        })
        .await;
        until("the groups node 2 led are led by node 4", || {
            leaders_spread(&refs, &placed)
        })
        .await;
    }
    commit_round(&nodes, &mut acked).await;
    // Node 1 dies too: nodes 3 and 4 are a majority of every group, and node 4 holds every
    // acked entry at its index, the ones from before it joined too.
    drop(nodes.remove(0).crash(&net).await);
    commit_round(&nodes, &mut acked).await;
    let four = &nodes[1];
    assert_eq!(four.id, 4);
    until("node 4 applied everything", || {
        acked
            .iter()
            .all(|(group, index, _)| four.groups.applied(*group) >= Some(*index))
    })
    .await;
    for (group, index, text) in &acked {
        let log = four.applied.of(*group);
        let found: Vec<_> = log
            .iter()
            .filter(|(_, records)| records.iter().any(|r| r == text.as_bytes()))
            .collect();
        assert_eq!(found.len(), 1, "{text} applied once on node 4");
        assert_eq!(found[0].0, *index, "{text} at its index on node 4");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_leader_acks_nothing_once_its_island_elected_another() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("dir")).collect();
    let net = Arc::new(Net::default());
    let nodes = three(&net, &dirs).await;
    let refs: Vec<&Node> = nodes.iter().collect();
    until("leaders spread", || leaders_spread(&refs, &groups())).await;
    let group = 0;
    let old = &nodes[0];
    assert_eq!(agreed_leader(&refs, group), Some(1));
    net.isolate(1, &[2, 3]);
    // The cut-off leader keeps taking proposals; none may ever be acked.
    let cut_off = old.groups.clone();
    let attempts = tokio::spawn(async move {
        let mut acked = Vec::new();
        for i in 0..40 {
            let proposal = cut_off.propose(group, command(&format!("lost-{i}")));
            if let Ok(Ok(index)) = tokio::time::timeout(Duration::from_millis(100), proposal).await
            {
                acked.push(index);
            }
        }
        acked
    });
    let majority: Vec<&Node> = nodes[1..].iter().collect();
    until("nodes 2 and 3 elect a leader of group 0", || {
        agreed_leader(&majority, group).is_some_and(|leader| leader != 1)
    })
    .await;
    let index = commit(&majority, group, "kept".into()).await;
    assert!(
        attempts.await.expect("joins").is_empty(),
        "a cut-off leader acked"
    );
    net.heal();
    until("node 1 follows and holds the new leader's entry", || {
        old.groups.applied(group) >= Some(index)
    })
    .await;
    let logs: Vec<_> = nodes.iter().map(|node| node.applied.of(group)).collect();
    assert!(logs.iter().all(|log| log == &logs[1]), "the logs diverge");
    assert!(
        logs[0]
            .iter()
            .all(|(_, records)| records.iter().all(|r| !r.starts_with(b"lost"))),
        "an entry of the cut-off leader was applied"
    );
}

/// SplitMix64: the scenario's seeded choices.
struct Draw(u64);

impl Draw {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % below
    }
}

/// Proposes numbered entries to `group` through whichever live node takes them, for as long as
/// `running`; returns what was acked: (index, text).
async fn keep_proposing(
    nodes: Arc<Mutex<Vec<Option<Arc<SlotGroups>>>>>,
    group: u64,
    running: Arc<std::sync::atomic::AtomicBool>,
) -> Vec<(u64, String)> {
    let mut acked = Vec::new();
    let mut n = 0;
    while running.load(std::sync::atomic::Ordering::Relaxed) {
        let live: Vec<Arc<SlotGroups>> = nodes
            .lock()
            .expect("lock")
            .iter()
            .flatten()
            .cloned()
            .collect();
        let mut took = false;
        for node in live {
            n += 1;
            let text = format!("g{group}-{n}");
            let proposal = node.propose(group, command(&text));
            if let Ok(Ok(index)) = tokio::time::timeout(Duration::from_millis(300), proposal).await
            {
                acked.push((index, text));
                took = true;
                break;
            }
        }
        if !took {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    acked
}

/// Random partitions (both ways and one way) and crashes of three nodes under steady
/// proposals, from fixed seeds (`TERN_SLOT_SEEDS=n` runs the first n, default 2): afterwards
/// every acked entry is at its acked index in every node's applied log, and the logs agree. An
/// ack from a leader that was cut off once another was elected would be an entry the final log
/// replaced: the oracle catches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_partitions_one_way_cuts_and_crashes_lose_no_acked_entry() {
    let seeds: u64 = std::env::var("TERN_SLOT_SEEDS")
        .ok()
        .and_then(|seeds| seeds.parse().ok())
        .unwrap_or(2);
    for seed in 0..seeds {
        run_scenario(seed).await;
    }
}

async fn run_scenario(seed: u64) {
    let mut draw = Draw(seed);
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("dir")).collect();
    let net = Arc::new(Net::default());
    let groups: Vec<(u64, u64)> = (0..3)
        .map(|group| (group, MEMBERS[group as usize]))
        .collect();
    let mut nodes: Vec<Option<Node>> = Vec::new();
    for (i, id) in MEMBERS.iter().enumerate() {
        nodes.push(Some(
            start(&net, *id, dirs[i].path(), &MEMBERS, &groups, &MEMBERS).await,
        ));
    }
    {
        let refs: Vec<&Node> = nodes.iter().flatten().collect();
        until("leaders spread", || leaders_spread(&refs, &groups)).await;
    }
    let handles = Arc::new(Mutex::new(
        nodes
            .iter()
            .map(|node| node.as_ref().map(|node| node.groups.clone()))
            .collect::<Vec<_>>(),
    ));
    let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let proposers: Vec<_> = groups
        .iter()
        .map(|(group, _)| tokio::spawn(keep_proposing(handles.clone(), *group, running.clone())))
        .collect();
    for step in 0..10 {
        let (a, b) = (draw.next(3) as usize, draw.next(3) as usize);
        match draw.next(4) {
            0 => net.heal(),
            1 if a != b => net.cut(MEMBERS[a], MEMBERS[b]),
            2 => {
                let others: Vec<u64> = MEMBERS
                    .iter()
                    .copied()
                    .filter(|id| *id != MEMBERS[a])
                    .collect();
                net.isolate(MEMBERS[a], &others);
            }
            _ => {
                // A crash and a restart from its files (at most one node down at a time).
                if let Some(node) = nodes[a].take() {
                    handles.lock().expect("lock")[a] = None;
                    let dir = node.crash(&net).await;
                    tokio::time::sleep(Duration::from_millis(200 + draw.next(600))).await;
                    let back = start(&net, MEMBERS[a], &dir, &MEMBERS, &groups, &MEMBERS).await;
                    handles.lock().expect("lock")[a] = Some(back.groups.clone());
                    nodes[a] = Some(back);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(300 + draw.next(900))).await;
        let _ = step;
    }
    net.heal();
    tokio::time::sleep(Duration::from_millis(500)).await;
    running.store(false, std::sync::atomic::Ordering::Relaxed);
    let mut acked: Vec<(u64, u64, String)> = Vec::new();
    for (proposer, (group, _)) in proposers.into_iter().zip(&groups) {
        for (index, text) in proposer.await.expect("proposer") {
            acked.push((*group, index, text));
        }
    }
    assert!(
        acked.len() > 10,
        "seed {seed}: too few acks: {}",
        acked.len()
    );
    let refs: Vec<&Node> = nodes.iter().flatten().collect();
    until("every node applied every acked entry", || {
        acked.iter().all(|(group, index, _)| {
            refs.iter()
                .all(|node| node.groups.applied(*group) >= Some(*index))
        })
    })
    .await;
    for (group, _) in &groups {
        let logs: Vec<AppliedLog> = refs.iter().map(|node| node.applied.of(*group)).collect();
        let shortest = logs.iter().map(Vec::len).min().unwrap_or(0);
        for log in &logs {
            assert_eq!(
                log[..shortest],
                logs[0][..shortest],
                "seed {seed}: group {group}: the logs diverge"
            );
        }
    }
    for (group, index, text) in &acked {
        for node in &refs {
            let log = node.applied.of(*group);
            let at = log.iter().find(|(applied, _)| applied == index);
            assert!(
                at.is_some_and(|(_, records)| records.iter().any(|r| r == text.as_bytes())),
                "seed {seed}: node {}: acked {text} is not at index {index}",
                node.id
            );
        }
    }
    for node in nodes.into_iter().flatten() {
        node.crash(&net).await;
    }
}
