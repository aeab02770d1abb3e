//! 2,000 concurrent connections (1,000 pairs) exchanging messages: every message acked once and
//! delivered exactly once, in order.

mod common;
use common::*;

use std::collections::HashSet;
use std::sync::Arc;

use tern::client::text_frame;
use tern::proto::v1::server_frame::Frame;
use tokio::sync::{Barrier, Semaphore};
use tokio::task::JoinSet;

const PAIRS: usize = 1_000;
const PER_USER: usize = 5;
/// Logins in flight at once (keeps the listen backlog from overflowing).
const CONCURRENT_LOGINS: usize = 128;

struct Shared {
    server: TestServer,
    logins: Semaphore,
    done: Barrier,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_connections_exchange_messages_without_loss() {
    // Every phone connects from 127.0.0.1, and logs in within seconds: 2,000 phones behind one
    // address are past the shipped per-address limits, which are not what this test is about.
    let server = TestServer::start_with(|c| {
        c.limits.max_connections_per_ip = 0;
        c.limits.logins_per_ip_per_sec = 0;
    })
    .await;
    let shared = Arc::new(Shared {
        server,
        logins: Semaphore::new(CONCURRENT_LOGINS),
        done: Barrier::new(2 * PAIRS),
    });
    let mut tasks = JoinSet::new();
    for i in 0..PAIRS {
        let (u, p) = (format!("u{i}"), format!("p{i}"));
        tasks.spawn(user(shared.clone(), u.clone(), p.clone()));
        tasks.spawn(user(shared.clone(), p, u));
    }
    let mut finished = 0;
    while let Some(result) = tasks.join_next().await {
        result.expect("a user task failed");
        finished += 1;
    }
    assert_eq!(finished, 2 * PAIRS);
    let messages = shared
        .server
        .metric("tern_messages_in_total")
        .await
        .unwrap_or(0.0);
    assert!(messages >= (2 * PAIRS * PER_USER) as f64);
}

/// One phone: logs in, sends PER_USER messages to `peer`, and receives PER_USER from it.
async fn user(shared: Arc<Shared>, me: String, peer: String) {
    let permit = shared.logins.acquire().await.unwrap();
    let mut phone = shared.server.phone(&me, "phone").await;
    drop(permit);

    for k in 0..PER_USER {
        let id = format!("{me}-{k}");
        phone.writer.queue(text_frame(&id, &peer, id.as_bytes()));
    }
    phone.writer.flush().await.unwrap();

    let mut acked = HashSet::new();
    let mut received = Vec::new();
    let mut drained = false;
    while acked.len() < PER_USER || received.len() < PER_USER || !drained {
        match next(&mut phone.reader).await {
            Frame::ServerAck(ack) => {
                assert!(!ack.duplicate, "{me}: {ack:?}");
                assert!(ack.client_msg_id.starts_with(&format!("{me}-")));
                assert!((1..=PER_USER as u64).contains(&ack.seq), "{me}: {ack:?}");
                assert!(acked.insert(ack.client_msg_id), "{me}: acked twice");
            }
            Frame::Deliver(d) => {
                let m = chat(&d);
                assert_eq!(m.from_user, peer);
                assert_eq!(&m.body[..], m.client_msg_id.as_bytes());
                received.push((d.seq, m.client_msg_id.clone()));
                phone.writer.ack(d.seq).await.unwrap();
            }
            Frame::QueueDrained(_) => drained = true,
            other => panic!("{me}: unexpected frame {other:?}"),
        }
    }
    let expected: Vec<(u64, String)> = (0..PER_USER)
        .map(|k| (k as u64 + 1, format!("{peer}-{k}")))
        .collect();
    assert_eq!(received, expected, "{me}: each message once, in order");

    // When every phone is done, nothing more arrives (no duplicate delivery).
    tokio::time::timeout(WAIT * 6, shared.done.wait())
        .await
        .expect("other phones never finished");
    let rest = sync(&mut phone.reader, &mut phone.writer).await;
    assert!(rest.is_empty(), "{me}: extra frames {rest:?}");
}
