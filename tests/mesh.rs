//! The mesh between nodes over real TCP on 127.0.0.1: links between three nodes, a peer that
//! stops reading, refused handshakes, a restarted node, and simultaneous connects.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tern::mesh::handshake::{self, Identity, Role};
use tern::mesh::{
    BoxFuture, CallError, CastError, Handler, Handlers, HandshakeError, Lane, Mesh, MeshConfig,
    NodeId, TcpTransport,
};

const CLUSTER: &str = "test-cluster";
const SECRET: &[u8] = b"a cluster secret of enough bytes";
const ECHO: u32 = 1;
const SILENT: u32 = 2;
const PANICS: u32 = 3;
const CALL_DEADLINE: Duration = Duration::from_secs(5);
const PATIENCE: Duration = Duration::from_secs(20);

/// Answers a call with "<node>:<payload>" and records casts.
struct Echo {
    node: NodeId,
    casts: Mutex<Vec<(NodeId, Bytes)>>,
}

impl Handler for Echo {
    fn call(&self, _from: NodeId, payload: Bytes) -> BoxFuture<'static, Result<Bytes, String>> {
        let mut answer = format!("{}:", self.node).into_bytes();
        answer.extend_from_slice(&payload);
        Box::pin(async move { Ok(Bytes::from(answer)) })
    }

    fn cast(&self, from: NodeId, payload: Bytes) {
        self.casts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((from, payload));
    }
}

/// Never answers.
struct Silent;

impl Handler for Silent {
    fn call(&self, _from: NodeId, _payload: Bytes) -> BoxFuture<'static, Result<Bytes, String>> {
        Box::pin(std::future::pending())
    }

    fn cast(&self, _from: NodeId, _payload: Bytes) {}
}

/// Panics on everything.
struct Panics;

impl Handler for Panics {
    fn call(&self, _from: NodeId, _payload: Bytes) -> BoxFuture<'static, Result<Bytes, String>> {
        panic!("a handler bug")
    }

    fn cast(&self, _from: NodeId, _payload: Bytes) {
        panic!("a handler bug")
    }
}

struct Node {
    mesh: Mesh,
    echo: Arc<Echo>,
}

impl Node {
    fn casts_from(&self, from: NodeId) -> Vec<Bytes> {
        self.echo
            .casts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(f, _)| *f == from)
            .map(|(_, p)| p.clone())
            .collect()
    }

    fn link_up(&self, peer: NodeId) -> bool {
        self.mesh.links().iter().any(|l| l.peer == peer && l.up)
    }
}

fn config(node: NodeId, listen: &str, peers: &[(NodeId, String)]) -> MeshConfig {
    let mut config = MeshConfig::new(CLUSTER, node, listen, SECRET);
    config.peers = peers.to_vec();
    config.heartbeat = Duration::from_millis(50);
    config.dead_after = Duration::from_secs(5);
    config.backoff_min = Duration::from_millis(20);
    config.backoff_max = Duration::from_millis(300);
    config
}

async fn start(config: MeshConfig) -> Node {
    let echo = Arc::new(Echo {
        node: config.node,
        casts: Mutex::new(Vec::new()),
    });
    let handlers = Handlers::default()
        .with(ECHO, echo.clone())
        .with(SILENT, Arc::new(Silent))
        .with(PANICS, Arc::new(Panics));
    let mesh = Mesh::start(config, TcpTransport::plain(), handlers)
        .await
        .expect("mesh starts");
    Node { mesh, echo }
}

/// Polls `condition` until it holds, failing the test after `PATIENCE`.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < PATIENCE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn echo(from: &Node, to: NodeId, text: &str) -> Result<Bytes, CallError> {
    from.mesh
        .call(
            to,
            Lane::Call,
            ECHO,
            Bytes::from(text.to_owned()),
            CALL_DEADLINE,
        )
        .await
}

#[tokio::test]
async fn three_nodes_link_every_pair_and_exchange_calls_and_casts() {
    let n3 = start(config(3, "127.0.0.1:0", &[])).await;
    let n2 = start(config(2, "127.0.0.1:0", &[(3, n3.mesh.local_addr())])).await;
    let n1 = start(config(
        1,
        "127.0.0.1:0",
        &[(2, n2.mesh.local_addr()), (3, n3.mesh.local_addr())],
    ))
    .await;
    let nodes = [&n1, &n2, &n3];
    eventually("every pair linked", || {
        nodes.iter().all(|n| {
            let links = n.mesh.links();
            links.len() == 2 && links.iter().all(|l| l.up)
        })
    })
    .await;
    for from in nodes {
        for to in nodes {
            let (a, b) = (from.mesh.node(), to.mesh.node());
            if a == b {
                continue;
            }
            let reply = echo(from, b, &format!("hi from {a}")).await;
            assert_eq!(reply, Ok(Bytes::from(format!("{b}:hi from {a}"))));
            let consensus = from
                .mesh
                .call(
                    b,
                    Lane::Consensus,
                    ECHO,
                    Bytes::from_static(b"v"),
                    CALL_DEADLINE,
                )
                .await;
            assert_eq!(consensus, Ok(Bytes::from(format!("{b}:v"))));
            from.mesh
                .cast(b, ECHO, Bytes::from(format!("cast {a}->{b}")))
                .expect("cast queued");
        }
    }
    for to in nodes {
        for from in nodes {
            let (a, b) = (from.mesh.node(), to.mesh.node());
            if a != b {
                eventually("cast delivered", || {
                    to.casts_from(a) == vec![Bytes::from(format!("cast {a}->{b}"))]
                })
                .await;
            }
        }
    }
    // A service nobody serves, and a peer nobody knows.
    assert_eq!(
        n1.mesh
            .call(2, Lane::Call, 99, Bytes::new(), CALL_DEADLINE)
            .await,
        Err(CallError::NoHandler)
    );
    assert_eq!(echo(&n1, 7, "x").await, Err(CallError::UnknownPeer(7)));
    // A handler that panics fails its own call only (answered at once): the link and its
    // other services go on.
    let since = n1.mesh.links()[0].since.expect("up");
    n1.mesh.cast(2, PANICS, Bytes::new()).expect("cast queued");
    assert_eq!(
        n1.mesh
            .call(
                2,
                Lane::Call,
                PANICS,
                Bytes::new(),
                // The answer comes as soon as the panic is caught; the panic's backtrace is
                // printed first, which takes a while on a loaded machine.
                CALL_DEADLINE
            )
            .await,
        Err(CallError::Remote("handler panicked".to_owned()))
    );
    assert_eq!(
        echo(&n1, 2, "after").await,
        Ok(Bytes::from_static(b"2:after"))
    );
    let link = &n1.mesh.links()[0];
    assert!(link.up && link.since.expect("up") > since && link.counters.call_timeouts == 0);
    assert_eq!(
        n1.mesh.cast(7, ECHO, Bytes::new()),
        Err(CastError::UnknownPeer(7))
    );
    eventually("an RTT on every link", || {
        nodes
            .iter()
            .all(|n| n.mesh.links().iter().all(|l| l.rtt.is_some()))
    })
    .await;
    for node in nodes {
        for link in node.mesh.links() {
            assert!(link.up && link.since.is_some() && link.counters.frames_out > 0);
            // The lower id dialed every link.
            assert_eq!(link.outbound, node.mesh.node() < link.peer, "{link:?}");
        }
    }
    for node in nodes {
        node.mesh.shutdown().await;
    }
    assert_eq!(echo(&n1, 2, "late").await, Err(CallError::ShuttingDown));
}

/// A raw socket that completes the handshake as `node`, then is held and never read.
async fn stalled_peer(node: NodeId) -> (String, tokio::task::JoinHandle<tokio::net::TcpStream>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let identity = Identity {
        cluster: CLUSTER.to_owned(),
        node,
        secret: SECRET.to_vec(),
        listen: addr.clone(),
        incarnation: 1,
    };
    let task = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        handshake::handshake(&mut stream, Role::Acceptor, &identity, None)
            .await
            .expect("handshake with the right secret");
        stream
    });
    (addr, task)
}

#[tokio::test]
async fn a_peer_that_stops_reading_fills_only_its_own_lanes() {
    let (stalled_addr, stalled) = stalled_peer(3).await;
    let healthy = start(config(2, "127.0.0.1:0", &[])).await;
    let mut cfg = config(
        1,
        "127.0.0.1:0",
        &[(2, healthy.mesh.local_addr()), (3, stalled_addr)],
    );
    cfg.lane_capacity = [64, 64, 64];
    // The stalled peer sends nothing: keep its link up for the whole test.
    cfg.dead_after = Duration::from_secs(120);
    let node = start(cfg).await;
    eventually("both links up", || node.link_up(2) && node.link_up(3)).await;
    let _held = stalled.await.expect("stalled peer");

    // Flood the stalled peer with casts until its lane overflows.
    let chunk = Bytes::from(vec![7u8; 64 * 1024]);
    let mut refused = 0u32;
    let mut healthy_latencies = Vec::new();
    for round in 0..2000 {
        match node.mesh.cast(3, ECHO, chunk.clone()) {
            Ok(()) => {}
            Err(CastError::LaneFull) => refused += 1,
            Err(other) => panic!("unexpected cast error {other:?}"),
        }
        if round % 50 == 0 {
            tokio::task::yield_now().await;
            let started = Instant::now();
            let reply = echo(&node, 2, "still there").await;
            healthy_latencies.push(started.elapsed());
            assert_eq!(reply, Ok(Bytes::from_static(b"2:still there")));
            node.mesh
                .cast(2, ECHO, Bytes::from(format!("{round}")))
                .expect("the healthy peer's lane has room");
        }
        if refused > 100 {
            break;
        }
    }
    assert!(refused > 0, "the stalled peer's cast lane never filled");
    let stalled_link = node
        .mesh
        .links()
        .into_iter()
        .find(|l| l.peer == 3)
        .expect("link to 3");
    assert!(stalled_link.counters.dropped >= u64::from(refused));
    assert!(stalled_link.lane_depths[2] > 0, "{stalled_link:?}");

    // Calls to the stalled peer fail at once or at their deadline, never hang.
    for lane in [Lane::Call, Lane::Consensus] {
        let outcome = tokio::time::timeout(
            Duration::from_secs(30),
            node.mesh
                .call(3, lane, ECHO, Bytes::new(), Duration::from_millis(200)),
        )
        .await
        .expect("a call to a stalled peer ends by its deadline");
        assert!(
            matches!(
                outcome,
                Err(CallError::DeadlineExceeded | CallError::LaneFull)
            ),
            "{outcome:?}"
        );
    }
    // The healthy peer is unaffected.
    let started = Instant::now();
    assert_eq!(
        echo(&node, 2, "after").await,
        Ok(Bytes::from_static(b"2:after"))
    );
    healthy_latencies.push(started.elapsed());
    healthy_latencies.sort();
    println!(
        "calls to the healthy peer during the stall: {} calls, median {:?}, max {:?}",
        healthy_latencies.len(),
        healthy_latencies[healthy_latencies.len() / 2],
        healthy_latencies.last().copied().unwrap_or_default()
    );
    eventually("casts to the healthy peer arrive", || {
        !healthy.casts_from(1).is_empty()
    })
    .await;
    let healthy_link = node
        .mesh
        .links()
        .into_iter()
        .find(|l| l.peer == 2)
        .expect("link to 2");
    assert_eq!(healthy_link.counters.dropped, 0);
    node.mesh.shutdown().await;
    healthy.mesh.shutdown().await;
}

fn refusals(text: &str, reason: &str) -> u64 {
    let needle = format!("reason=\"{reason}\"");
    text.lines()
        .filter(|l| l.starts_with("tern_mesh_handshake_refused_total") && l.contains(&needle))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

#[tokio::test]
async fn handshakes_with_a_wrong_secret_cluster_or_id_are_refused() {
    let metrics = tern::metrics::install();
    let good = start(config(2, "127.0.0.1:0", &[])).await;
    let target = vec![(2, good.mesh.local_addr())];

    let mut wrong_secret = config(1, "127.0.0.1:0", &target);
    wrong_secret.secret = b"not the cluster secret at all!!".to_vec();
    let wrong_secret = start(wrong_secret).await;
    let mut wrong_cluster = config(1, "127.0.0.1:0", &target);
    wrong_cluster.cluster = "another-cluster".to_owned();
    let wrong_cluster = start(wrong_cluster).await;

    // A node claiming the acceptor's own id.
    let mut stream = tokio::net::TcpStream::connect(good.mesh.local_addr())
        .await
        .expect("connect");
    let impostor = Identity {
        cluster: CLUSTER.to_owned(),
        node: 2,
        secret: SECRET.to_vec(),
        listen: String::new(),
        incarnation: 1,
    };
    let same_id = handshake::handshake(&mut stream, Role::Dialer, &impostor, Some(2)).await;
    assert!(
        matches!(same_id, Err(HandshakeError::SameId)),
        "{same_id:?}"
    );

    eventually("every refusal counted", || {
        let text = metrics.render();
        ["secret", "cluster", "same_id"]
            .iter()
            .all(|reason| refusals(&text, reason) > 0)
    })
    .await;
    assert!(!good.link_up(1), "no link to a refused node");
    assert!(!wrong_secret.link_up(2));
    assert!(!wrong_cluster.link_up(2));
    for node in [&good, &wrong_secret, &wrong_cluster] {
        node.mesh.shutdown().await;
    }
}

#[tokio::test]
async fn a_restarted_node_is_redialed_on_its_port() {
    let n2 = start(config(2, "127.0.0.1:0", &[])).await;
    let addr2 = n2.mesh.local_addr();
    let n1 = start(config(1, "127.0.0.1:0", &[(2, addr2.clone())])).await;
    eventually("linked", || n1.link_up(2)).await;
    assert_eq!(echo(&n1, 2, "a").await, Ok(Bytes::from_static(b"2:a")));
    // A call pending when the link goes down fails then, long before its deadline.
    let pending = n1.mesh.call(
        2,
        Lane::Call,
        SILENT,
        Bytes::new(),
        Duration::from_secs(3600),
    );
    n2.mesh.shutdown().await;
    let failed = tokio::time::timeout(PATIENCE, pending)
        .await
        .expect("a pending call fails when its link goes down");
    assert_eq!(failed, Err(CallError::LinkDown));
    eventually("link seen down", || !n1.link_up(2)).await;
    assert_eq!(echo(&n1, 2, "b").await, Err(CallError::LinkDown));

    let n2 = start(config(2, &addr2, &[])).await;
    eventually("relinked", || n1.link_up(2) && n2.link_up(1)).await;
    assert_eq!(echo(&n1, 2, "c").await, Ok(Bytes::from_static(b"2:c")));
    // The restarted node learned its peer from the inbound link and can call it.
    assert_eq!(echo(&n2, 1, "d").await, Ok(Bytes::from_static(b"1:d")));
    n1.mesh.shutdown().await;
    n2.mesh.shutdown().await;
}

/// Established TCP connections with a local port among `ports` (each connection between two
/// local sockets is listed once per end, so this counts the accepted ends).
#[cfg(target_os = "linux")]
fn established_on(ports: &[u16]) -> usize {
    let mut count = 0;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state)) = (fields.get(1), fields.get(3)) else {
                continue;
            };
            let port = local
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if *state == "01" && port.is_some_and(|p| ports.contains(&p)) {
                count += 1;
            }
        }
    }
    count
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn simultaneous_connects_settle_on_one_link_per_pair() {
    let n2 = start(config(2, "127.0.0.1:0", &[])).await;
    let n1 = start(config(1, "127.0.0.1:0", &[])).await;
    // Both learn each other at once; 2 also dials 1 (as a node announcing itself does), several
    // times, racing 1's own dialer.
    n2.mesh.set_peer(1, n1.mesh.local_addr());
    n1.mesh.set_peer(2, n2.mesh.local_addr());
    for _ in 0..4 {
        n2.mesh.connect(1).expect("known peer");
    }
    let port = |addr: String| {
        addr.rsplit(':')
            .next()
            .and_then(|p| p.parse::<u16>().ok())
            .expect("port")
    };
    let ports = [port(n1.mesh.local_addr()), port(n2.mesh.local_addr())];
    eventually("one link per pair, dialed by the lower id", || {
        let (a, b) = (n1.mesh.links(), n2.mesh.links());
        a.len() == 1
            && b.len() == 1
            && a[0].up
            && b[0].up
            && a[0].outbound
            && !b[0].outbound
            && established_on(&ports) == 1
    })
    .await;
    assert_eq!(echo(&n1, 2, "x").await, Ok(Bytes::from_static(b"2:x")));
    assert_eq!(echo(&n2, 1, "y").await, Ok(Bytes::from_static(b"1:y")));
    n1.mesh.shutdown().await;
    n2.mesh.shutdown().await;
}
