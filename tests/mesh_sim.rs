//! The mesh over turmoil's simulated network: the `Transport` seam carries a link between two
//! simulated hosts, and a call crosses it.

use std::io;
use std::time::Duration;

use bytes::Bytes;
use tern::mesh::{BoxFuture, Handler, Handlers, Lane, Mesh, MeshConfig, NodeId, Transport};

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

struct Echo;

impl Handler for Echo {
    fn call(&self, from: NodeId, payload: Bytes) -> BoxFuture<'static, Result<Bytes, String>> {
        let mut answer = format!("from {from}: ").into_bytes();
        answer.extend_from_slice(&payload);
        Box::pin(async move { Ok(Bytes::from(answer)) })
    }

    fn cast(&self, _from: NodeId, _payload: Bytes) {}
}

fn config(node: NodeId, peers: &[(NodeId, &str)]) -> MeshConfig {
    let mut config = MeshConfig::new(
        "sim",
        node,
        "0.0.0.0:7000",
        b"a simulated cluster secret".to_vec(),
    );
    config.peers = peers.iter().map(|(id, a)| (*id, (*a).to_owned())).collect();
    config.backoff_min = Duration::from_millis(20);
    config.backoff_max = Duration::from_millis(500);
    config
}

/// A simulation of `seconds` with host `node2` serving service 1 (echo).
fn with_echo_host(seconds: u64) -> turmoil::Sim<'static> {
    let mut sim = turmoil::Builder::new()
        .simulation_duration(Duration::from_secs(seconds))
        .build();
    sim.host("node2", || async {
        let handlers = Handlers::default().with(1, std::sync::Arc::new(Echo));
        let _mesh = Mesh::start(config(2, &[]), SimTransport, handlers).await?;
        std::future::pending::<()>().await;
        Ok(())
    });
    sim
}

/// Node 1's mesh, with node 2 as its peer.
async fn node1() -> Result<Mesh<SimTransport>, tern::mesh::MeshError> {
    Mesh::start(
        config(1, &[(2, "node2:7000")]),
        SimTransport,
        Handlers::default(),
    )
    .await
}

#[test]
fn two_simulated_hosts_exchange_a_call() -> turmoil::Result {
    let mut sim = with_echo_host(60);
    sim.client("node1", async {
        let mesh = node1().await?;
        // The host may not listen yet: retry until the link is up and the call answered.
        let reply = loop {
            match mesh
                .call(
                    2,
                    Lane::Call,
                    1,
                    Bytes::from_static(b"ping"),
                    Duration::from_secs(1),
                )
                .await
            {
                Ok(reply) => break reply,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        assert_eq!(reply, Bytes::from_static(b"from 1: ping"));
        let links = mesh.links();
        assert!(links.len() == 1 && links[0].up && links[0].outbound);
        mesh.shutdown().await;
        Ok(())
    });
    sim.run()
}

#[test]
fn a_partitioned_link_is_declared_dead_and_redialed_after_the_repair() -> turmoil::Result {
    let mut sim = with_echo_host(120);
    sim.client("node1", async {
        let mesh = node1().await?;
        let ping = || {
            mesh.call(
                2,
                Lane::Call,
                1,
                Bytes::from_static(b"ping"),
                Duration::from_secs(1),
            )
        };
        while ping().await.is_err() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        turmoil::partition("node1", "node2");
        assert!(ping().await.is_err(), "no answer across a partition");
        // Nothing arrives any more: after `dead_after` the link is closed.
        while mesh.links()[0].up {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        turmoil::repair("node1", "node2");
        // The dialer links again and the call goes through.
        let reply = loop {
            match ping().await {
                Ok(reply) => break reply,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        assert_eq!(reply, Bytes::from_static(b"from 1: ping"));
        mesh.shutdown().await;
        Ok(())
    });
    sim.run()
}
