//! Mutual TLS on the mesh: nodes whose certificates come from the cluster's CA link up and
//! carry messages between them; a node with a certificate from another CA, or an expired one,
//! is refused, with the reason in the log and in `tern_tls_failures_total`.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::cluster::{
    Member, SETTLE, agree, login_at, start_cluster_each, state_of, user_owned_by, view, views,
};
use common::{WAIT, eventually_within, http_get, metric_value, next_matching};
use tern::certs::{CertsRequest, make};
use tern::client::text_frame;
use tern::proto::v1::server_frame::Frame;

const DAY: Duration = Duration::from_secs(86_400);

/// Certificates of `nodes` under the CA in `dir` (made on first use), valid from `backdate`
/// ago for `valid_for`.
fn certs(dir: &Path, nodes: &[&str], valid_for: Duration, backdate: Duration) -> Vec<PathBuf> {
    let made = make(&CertsRequest {
        dir: dir.to_owned(),
        nodes: nodes.iter().map(|node| (*node).to_owned()).collect(),
        hosts: Vec::new(),
        valid_for,
        backdate,
    })
    .expect("certificates");
    made.nodes.into_iter().map(|(_, cert, _)| cert).collect()
}

fn log_of(member: &Member) -> String {
    let mut name = member.data.as_os_str().to_owned();
    name.push(".stderr.log");
    std::fs::read_to_string(PathBuf::from(name)).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_link_over_mutual_tls_and_strangers_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cluster_ca = dir.path().join("ca");
    // Three good nodes (a majority of the five seeds founds the cluster).
    let mut cert = certs(
        &cluster_ca,
        &["tern-1", "tern-2", "tern-3"],
        DAY,
        Duration::ZERO,
    );
    // Valid, but from another CA.
    cert.extend(certs(
        &dir.path().join("other"),
        &["tern-4"],
        DAY,
        Duration::ZERO,
    ));
    // Signed by the cluster's CA, but expired yesterday.
    cert.extend(certs(&cluster_ca, &["tern-5"], DAY, 2 * DAY));
    let cert_of = |node: usize| cert[node - 1].clone();
    let ca = cluster_ca.join("ca.crt");
    let members = start_cluster_each(dir.path(), 5, 1, &[], "", |node| {
        let cert = cert_of(node);
        format!(
            "[tls]\nca_file = \"{}\"\nmesh_cert_file = \"{}\"\nmesh_key_file = \"{}\"\n",
            ca.display(),
            cert.display(),
            cert.with_extension("key").display(),
        )
    });
    eventually_within(SETTLE, "nodes 1 to 3 form the cluster", async || {
        agree(
            &views(&members, &[0, 1, 2]).await,
            &[(1, "active"), (2, "active"), (3, "active")],
        )
    })
    .await;

    // A message crosses the mesh: from a phone on node 1 to a user node 2 owns.
    let map = view(members[0].admin()).await;
    let bob = user_owned_by(&map, 2, "bob");
    let mut alice = login_at(&members[0], "alice", "phone").await;
    let mut bobs_phone = login_at(&members[1], &bob, "phone").await;
    alice
        .send(text_frame("over-tls", &bob, b"sealed"))
        .await
        .unwrap();
    let acked = tokio::time::timeout(
        WAIT,
        next_matching(&mut alice.reader, |frame| match frame {
            Frame::ServerAck(ack) => Some(ack.client_msg_id),
            _ => None,
        }),
    )
    .await
    .expect("ack");
    assert_eq!(acked, "over-tls");
    let delivered = next_matching(&mut bobs_phone.reader, |frame| match frame {
        Frame::Deliver(deliver) => Some(deliver.seq),
        _ => None,
    })
    .await;
    assert!(delivered > 0);

    // The strangers never joined, and node 1 says why.
    eventually_within(
        SETTLE,
        "the refusals are logged with their reasons",
        async || {
            let log = log_of(&members[0]);
            // The expired one, and the one whose CA did not sign it.
            log.contains("invalid peer certificate: certificate expired")
                && log.contains("invalid peer certificate: BadSignature")
        },
    )
    .await;
    let metrics = http_get(members[0].admin(), "/metrics").await;
    let refused = metric_value(
        &metrics,
        "tern_tls_failures_total{listener=\"mesh\",failure=\"certificate\"}",
    )
    .unwrap_or(0.0);
    assert!(refused >= 1.0, "certificate refusals counted: {refused}");
    let handshakes =
        metric_value(&metrics, "tern_tls_handshakes_total{listener=\"mesh\"}").unwrap_or(0.0);
    assert!(handshakes >= 1.0);
    let map = view(members[0].admin()).await;
    for stranger in [4, 5] {
        assert_ne!(state_of(&map, stranger), "active", "node {stranger} joined");
    }
}
