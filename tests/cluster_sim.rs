//! Deterministic simulations of the cluster: three hosts on turmoil's simulated network, each
//! running a real `ClusterMember` (its mesh over simulated TCP, its member of the metadata group
//! over the mesh, its Raft files in its own directory, so a crashed host restarts from them).
//! Scenarios partition and restart hosts; after every step of simulated time the driver checks
//! the safety invariants (never two leaders in one term, no node's map version going back) and
//! records a trace, so that a run with a seed can be replayed and compared.
//!
//! `TERN_SIM_SEED=x` runs one chosen seed, `TERN_SIM_SEEDS=n` the first `n` seeds (default 3);
//! a failing run names its seed; `TERN_SIM_TRACE=1` prints each passing run's trace.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tern::cluster::config::{ClusterConfig, ElectionTimeout, Seed};
use tern::cluster::map::{ClusterMap, NodeState};
use tern::cluster::member::{BoundAddrs, ClusterMember};
use tern::cluster::raft::{MetaStatus, Role};
use tern::mesh::Transport;

/// The mesh port of every host.
const MESH_PORT: u16 = 7000;
/// Seeds run when no environment variable chooses.
const DEFAULT_SEEDS: u64 = 3;

/// turmoil's TCP as a mesh transport.
#[derive(Clone, Copy, Debug)]
struct SimTransport;

impl Transport for SimTransport {
    type Stream = turmoil::net::TcpStream;
    type Listener = turmoil::net::TcpListener;

    async fn bind(&self, addr: &str) -> io::Result<Self::Listener> {
        turmoil::net::TcpListener::bind(addr.to_owned()).await
    }

    async fn accept(&self, listener: &mut Self::Listener) -> io::Result<(Self::Stream, String)> {
        let (stream, remote) = listener.accept().await?;
        Ok((stream, remote.to_string()))
    }

    async fn connect(&self, addr: &str) -> io::Result<Self::Stream> {
        turmoil::net::TcpStream::connect(addr.to_owned()).await
    }

    fn local_addr(&self, listener: &Self::Listener) -> io::Result<String> {
        listener.local_addr().map(|a| a.to_string())
    }
}

type Member = ClusterMember<SimTransport>;

/// SplitMix64: the driver's own seeded choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let z = self.0;
        let z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        let z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What the driver saw of one node at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    role: Role,
    term: u64,
    leader: Option<u64>,
    version: u64,
}

/// One simulated cluster and its observer.
struct Cluster {
    sim: turmoil::Sim<'static>,
    seed: u64,
    nodes: Vec<u64>,
    /// The running member of each host (dropped with the host's software on a crash).
    members: Arc<Mutex<BTreeMap<u64, Weak<Member>>>>,
    /// Every (term, leader) seen by any node.
    leaders: BTreeMap<u64, u64>,
    /// The highest map version each node has shown.
    versions: BTreeMap<u64, u64>,
    /// The last observation of each node (to record changes only).
    last: BTreeMap<u64, Option<Seen>>,
    /// Every change seen and every fault injected, with its simulated time: the run's trace.
    trace: Vec<String>,
    _dirs: tempfile::TempDir,
}

fn host_name(node: u64) -> String {
    format!("node{node}")
}

fn mesh_addr(ip: IpAddr) -> SocketAddr {
    SocketAddr::new(ip, MESH_PORT)
}

fn cluster_config(node: u64, seeds: &[Seed], advertise: SocketAddr) -> ClusterConfig {
    ClusterConfig {
        name: "sim".to_owned(),
        node,
        listen: SocketAddr::from(([0, 0, 0, 0], MESH_PORT)),
        advertise: Some(advertise),
        seeds: seeds.to_vec(),
        replication_factor: 3,
        slots: 16,
        secret: "a simulated cluster secret of enough bytes".to_owned(),
        heartbeat_ms: 100,
        down_after_ms: 1500,
        election_timeout_ms: ElectionTimeout {
            min: 600,
            max: 1200,
        },
        ..ClusterConfig::default()
    }
}

impl Cluster {
    fn new(seed: u64, count: u64) -> Cluster {
        Cluster::with_far_node(seed, count, None)
    }

    /// A cluster where every link of `far` (if any) takes 150 ms one way: a round trip of
    /// 300 ms, three times the heartbeat interval.
    fn with_far_node(seed: u64, count: u64, far: Option<u64>) -> Cluster {
        let mut sim = turmoil::Builder::new()
            .simulation_duration(Duration::from_secs(3600))
            .rng_seed(seed)
            .build();
        let dirs = tempfile::tempdir().expect("temp dir");
        let nodes: Vec<u64> = (1..=count).collect();
        // turmoil numbers hosts in the order they are added, from 192.168.0.1.
        let ips: BTreeMap<u64, IpAddr> = nodes
            .iter()
            .map(|node| (*node, IpAddr::from([192, 168, 0, *node as u8])))
            .collect();
        let seeds: Vec<Seed> = nodes
            .iter()
            .map(|node| Seed {
                node: *node,
                addr: mesh_addr(ips[node]),
            })
            .collect();
        let members: Arc<Mutex<BTreeMap<u64, Weak<Member>>>> = Arc::default();
        for node in &nodes {
            let node = *node;
            let dir: PathBuf = dirs.path().join(host_name(node));
            let config = cluster_config(node, &seeds, mesh_addr(ips[&node]));
            let members = members.clone();
            let boots = Arc::new(Mutex::new(0u64));
            sim.host(host_name(node), move || {
                let (dir, config, members, boots) =
                    (dir.clone(), config.clone(), members.clone(), boots.clone());
                async move {
                    let boot = {
                        let mut boots = boots.lock().expect("lock");
                        *boots += 1;
                        *boots
                    };
                    let ip = mesh_addr(config.advertise.expect("advertised").ip()).ip();
                    let bound = BoundAddrs {
                        client: SocketAddr::new(ip, 8000),
                        admin: SocketAddr::new(ip, 8001),
                        media: SocketAddr::new(ip, 8002),
                    };
                    // Each node, and each of its boots, draws its own sequence.
                    let mut rng = Rng(seed ^ (node << 32) ^ boot);
                    let member =
                        Member::start_over(&dir, &config, bound, SimTransport, Some(rng.next()))
                            .await?;
                    let member = Arc::new(member);
                    members
                        .lock()
                        .expect("lock")
                        .insert(node, Arc::downgrade(&member));
                    std::future::pending::<()>().await;
                    drop(member);
                    Ok(())
                }
            });
        }
        for node in &nodes {
            assert_eq!(sim.lookup(host_name(*node)), ips[node], "host addresses");
        }
        // A fixed latency per link, drawn from the seed. turmoil would otherwise draw each
        // message's delay as it is sent, and a crash closes the host's sockets in an order
        // tokio does not fix, which would shift every later delay.
        let mut latencies = Rng(seed ^ 0x6c61_7465_6e63_7921);
        for a in &nodes {
            for b in nodes.iter().filter(|b| *b > a) {
                let near = Duration::from_millis(1 + latencies.below(20));
                let latency = if far == Some(*a) || far == Some(*b) {
                    Duration::from_millis(150)
                } else {
                    near
                };
                sim.set_link_latency(host_name(*a), host_name(*b), latency);
            }
        }
        Cluster {
            sim,
            seed,
            nodes,
            members,
            leaders: BTreeMap::new(),
            versions: BTreeMap::new(),
            last: BTreeMap::new(),
            trace: Vec::new(),
            _dirs: dirs,
        }
    }

    fn now_ms(&self) -> u128 {
        self.sim.elapsed().as_millis()
    }

    fn member(&self, node: u64) -> Option<Arc<Member>> {
        self.members
            .lock()
            .expect("lock")
            .get(&node)
            .and_then(Weak::upgrade)
    }

    fn status(&self, node: u64) -> Option<(MetaStatus, Arc<ClusterMap>)> {
        let member = self.member(node)?;
        let status = member.meta().status();
        let map = member.meta().map().borrow().clone();
        Some((status, map))
    }

    /// Samples every node, checks the invariants and records what changed.
    fn observe(&mut self) {
        let now = self.now_ms();
        for node in self.nodes.clone() {
            let seen = self.status(node).map(|(status, map)| Seen {
                role: status.role,
                term: status.term,
                leader: status.leader,
                version: map.version,
            });
            if let Some(seen) = &seen {
                let claimed = match seen.role {
                    Role::Leader => Some(node),
                    _ => seen.leader,
                };
                if let Some(leader) = claimed {
                    let first = *self.leaders.entry(seen.term).or_insert(leader);
                    assert_eq!(
                        first, leader,
                        "seed {}: term {} has two leaders ({first} and {leader}, seen by node {node} at {now} ms)",
                        self.seed, seen.term
                    );
                }
                let highest = self.versions.entry(node).or_insert(seen.version);
                assert!(
                    seen.version >= *highest,
                    "seed {}: node {node}'s map went back from version {} to {} at {now} ms",
                    self.seed,
                    highest,
                    seen.version
                );
                *highest = seen.version;
            }
            if self.last.get(&node) != Some(&seen) {
                self.trace.push(format!("{now} node{node} {seen:?}"));
                self.last.insert(node, seen);
            }
        }
    }

    /// Steps the simulation (observing after every step) for `duration` of simulated time.
    fn run_for(&mut self, duration: Duration) {
        let until = self.sim.elapsed() + duration;
        while self.sim.elapsed() < until {
            self.step();
        }
    }

    fn step(&mut self) {
        if let Err(error) = self.sim.step() {
            panic!("seed {}: simulation failed: {error}", self.seed);
        }
        self.observe();
    }

    /// Steps until `condition` holds of the running nodes, or panics after `patience` of
    /// simulated time.
    fn run_until(&mut self, what: &str, patience: Duration, condition: impl Fn(&Cluster) -> bool) {
        let until = self.sim.elapsed() + patience;
        while !condition(self) {
            if self.sim.elapsed() >= until {
                let states: Vec<_> = self
                    .nodes
                    .iter()
                    .map(|node| {
                        let links = self.member(*node).map(|member| member.mesh().links());
                        (node, self.status(*node).map(|(status, _)| status), links)
                    })
                    .collect();
                panic!(
                    "seed {}: no {what} after {patience:?} of simulated time\n{states:#?}",
                    self.seed
                );
            }
            self.step();
        }
        self.trace
            .push(format!("{} reached: {what}", self.now_ms()));
    }

    fn running(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .copied()
            .filter(|node| self.member(*node).is_some())
            .collect()
    }

    /// The leader every node in `nodes` follows, in one term, if they agree on one.
    fn agreed_leader(&self, nodes: &[u64]) -> Option<u64> {
        let statuses: Vec<MetaStatus> = nodes
            .iter()
            .map(|node| self.status(*node).map(|(status, _)| status))
            .collect::<Option<_>>()?;
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

    /// All nodes run, follow one leader and hold one map that lists them all as active.
    fn all_agree(&self) -> bool {
        if self.agreed_leader(&self.nodes).is_none() {
            return false;
        }
        let maps: Vec<Arc<ClusterMap>> = self
            .nodes
            .iter()
            .filter_map(|node| self.status(*node).map(|(_, map)| map))
            .collect();
        maps.len() == self.nodes.len()
            && maps.iter().all(|map| map == &maps[0])
            && self.nodes.iter().all(|node| {
                maps[0]
                    .nodes
                    .get(node)
                    .is_some_and(|record| record.state == NodeState::Active)
            })
    }

    fn term(&self, node: u64) -> u64 {
        self.status(node).map_or(0, |(status, _)| status.term)
    }

    fn map(&self, node: u64) -> Option<Arc<ClusterMap>> {
        self.status(node).map(|(_, map)| map)
    }

    fn event(&mut self, what: String) {
        let line = format!("{} {what}", self.now_ms());
        self.trace.push(line);
    }

    fn partition(&mut self, a: u64, b: u64) {
        self.sim.partition(host_name(a), host_name(b));
        self.event(format!("partition node{a} node{b}"));
    }

    fn repair(&mut self, a: u64, b: u64) {
        self.sim.repair(host_name(a), host_name(b));
        self.event(format!("repair node{a} node{b}"));
    }

    fn crash(&mut self, node: u64) {
        self.sim.crash(host_name(node));
        self.event(format!("crash node{node}"));
    }

    fn bounce(&mut self, node: u64) {
        self.sim.bounce(host_name(node));
        self.event(format!("bounce node{node}"));
    }

    /// Settles the cluster: a leader, one map, every node active.
    fn settle(&mut self) -> u64 {
        self.run_until("agreement", Duration::from_secs(60), Cluster::all_agree);
        self.agreed_leader(&self.nodes.clone())
            .expect("agreement has a leader")
    }
}

/// The seeds to run: `TERN_SIM_SEED=x` alone, or the first `TERN_SIM_SEEDS=n` (default 3).
fn seeds() -> Vec<u64> {
    if let Some(seed) = std::env::var("TERN_SIM_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
    {
        return vec![seed];
    }
    let count = std::env::var("TERN_SIM_SEEDS")
        .ok()
        .and_then(|count| count.parse().ok())
        .unwrap_or(DEFAULT_SEEDS);
    (1..=count).collect()
}

/// Runs `scenario` for every seed, naming the seed of a failing run.
fn for_each_seed(name: &str, scenario: fn(u64) -> Vec<String>) {
    for seed in seeds() {
        let outcome = std::panic::catch_unwind(|| scenario(seed));
        match outcome {
            Ok(trace) => {
                if std::env::var_os("TERN_SIM_TRACE").is_some() {
                    eprintln!("{}", trace.join("\n"));
                }
                eprintln!("{name}: seed {seed} passed ({} trace lines)", trace.len());
            }
            Err(panic) => {
                eprintln!("{name}: seed {seed} FAILED; rerun it with TERN_SIM_SEED={seed}");
                std::panic::resume_unwind(panic);
            }
        }
    }
}

/// Settles, cuts the leader off from both others, checks that they elect a new leader in a
/// higher term and mark the old one down, then repairs and requires agreement again.
fn partitioned_leader(seed: u64) -> Vec<String> {
    let mut cluster = Cluster::new(seed, 3);
    let old = cluster.settle();
    let old_term = cluster.term(old);
    let others: Vec<u64> = cluster
        .nodes
        .iter()
        .copied()
        .filter(|n| *n != old)
        .collect();
    for other in &others {
        cluster.partition(old, *other);
    }
    cluster.run_until(
        "a new leader of the majority",
        Duration::from_secs(60),
        |cluster| {
            cluster
                .agreed_leader(&others)
                .is_some_and(|leader| leader != old && cluster.term(leader) > old_term)
        },
    );
    cluster.run_until(
        "the old leader marked down",
        Duration::from_secs(60),
        |cluster| {
            others.iter().all(|node| {
                cluster.map(*node).is_some_and(|map| {
                    map.nodes
                        .get(&old)
                        .is_some_and(|record| record.state == NodeState::Down)
                })
            })
        },
    );
    for other in &others {
        cluster.repair(old, *other);
    }
    cluster.settle();
    cluster.trace
}

/// Settles, crashes the leader, checks that the others elect a new one, then restarts the old
/// leader from its files and requires that it rejoins with the same map.
fn restarted_leader(seed: u64) -> Vec<String> {
    let mut cluster = Cluster::new(seed, 3);
    let old = cluster.settle();
    let old_term = cluster.term(old);
    cluster.crash(old);
    let others: Vec<u64> = cluster
        .nodes
        .iter()
        .copied()
        .filter(|n| *n != old)
        .collect();
    cluster.run_until(
        "a new leader after the crash",
        Duration::from_secs(60),
        |cluster| {
            cluster
                .agreed_leader(&others)
                .is_some_and(|leader| cluster.term(leader) > old_term)
        },
    );
    cluster.run_for(Duration::from_secs(2));
    cluster.bounce(old);
    cluster.settle();
    let maps: Vec<Arc<ClusterMap>> = cluster
        .nodes
        .iter()
        .filter_map(|node| cluster.map(*node))
        .collect();
    assert!(
        maps.len() == 3 && maps.iter().all(|map| map == &maps[0]),
        "seed {seed}: the restarted node's map differs"
    );
    cluster.trace
}

/// One node 300 ms away (round trip) from both others, three heartbeats: it must still follow
/// the map (appends get their own deadline, not openraft's three quarters of a heartbeat), and
/// when the leader is cut off, the far node and the other elect a new one.
fn far_follower(seed: u64) -> Vec<String> {
    let mut cluster = Cluster::with_far_node(seed, 3, Some(3));
    let leader = cluster.settle();
    let version = cluster.map(3).map(|map| map.version).unwrap_or_default();
    assert!(version > 0, "seed {seed}: the far node holds the map");
    if leader != 3 {
        let others: Vec<u64> = [1, 2, 3].into_iter().filter(|n| *n != leader).collect();
        for other in &others {
            cluster.partition(leader, *other);
        }
        cluster.run_until(
            "a new leader of the far node and the other",
            Duration::from_secs(60),
            |cluster| cluster.agreed_leader(&others).is_some_and(|l| l != leader),
        );
        for other in &others {
            cluster.repair(leader, *other);
        }
        cluster.settle();
    }
    cluster.trace
}

/// 30 s of simulated time with random partitions, repairs, crashes and restarts (at most one
/// host down at a time), then everything healed and agreement required.
fn random_faults(seed: u64) -> Vec<String> {
    let mut cluster = Cluster::new(seed, 3);
    cluster.settle();
    let mut rng = Rng(seed);
    let nodes = cluster.nodes.clone();
    let mut down: Option<u64> = None;
    let mut cut: Vec<(u64, u64)> = Vec::new();
    let end = cluster.sim.elapsed() + Duration::from_secs(30);
    while cluster.sim.elapsed() < end {
        cluster.run_for(Duration::from_millis(100 + rng.below(1900)));
        match rng.below(4) {
            0 => {
                // Two distinct hosts: a first one, then one of the other two.
                let first = rng.below(3) as usize;
                let second = (first + 1 + rng.below(2) as usize) % 3;
                let (a, b) = (nodes[first], nodes[second]);
                let pair = (a.min(b), a.max(b));
                if !cut.contains(&pair) {
                    cluster.partition(pair.0, pair.1);
                    cut.push(pair);
                }
            }
            1 if !cut.is_empty() => {
                let (a, b) = cut.remove(rng.below(cut.len() as u64) as usize);
                cluster.repair(a, b);
            }
            2 => match down {
                None => {
                    let node = nodes[rng.below(3) as usize];
                    cluster.crash(node);
                    down = Some(node);
                }
                Some(node) => {
                    cluster.bounce(node);
                    down = None;
                }
            },
            _ => {}
        }
    }
    for (a, b) in cut.drain(..) {
        cluster.repair(a, b);
    }
    if let Some(node) = down {
        cluster.bounce(node);
    }
    cluster.settle();
    let running = cluster.running();
    assert_eq!(
        running, nodes,
        "seed {seed}: every host runs after the heal"
    );
    cluster.trace
}

#[test]
fn a_partitioned_leader_is_replaced_and_rejoins() {
    for_each_seed("partitioned leader", partitioned_leader);
}

#[test]
fn a_restarted_leader_rejoins_from_its_files() {
    for_each_seed("restarted leader", restarted_leader);
}

#[test]
fn a_follower_three_heartbeats_away_keeps_up() {
    for_each_seed("far follower", far_follower);
}

#[test]
fn random_partitions_and_restarts_keep_the_invariants() {
    for_each_seed("random faults", random_faults);
}

#[test]
fn a_seed_replays_the_same_run() {
    for seed in seeds() {
        let first = random_faults(seed);
        let second = random_faults(seed);
        if first != second {
            let at = first
                .iter()
                .zip(&second)
                .position(|(a, b)| a != b)
                .unwrap_or(first.len().min(second.len()));
            let from = at.saturating_sub(8);
            panic!(
                "seed {seed}: two runs differ from trace line {at}\nfirst:  {:#?}\nsecond: {:#?}",
                &first[from..(at + 4).min(first.len())],
                &second[from..(at + 4).min(second.len())]
            );
        }
        // The trace holds the run: elections, map versions and the injected faults.
        assert!(
            first.iter().any(|line| line.contains("crash"))
                && first.iter().any(|line| line.contains("Leader")),
            "seed {seed}: the trace records the run: {first:#?}"
        );
        eprintln!(
            "seed {seed} replayed: {} identical trace lines",
            first.len()
        );
    }
}
