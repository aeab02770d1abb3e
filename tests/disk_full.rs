//! A full disk (the journal's quota, `journal.max_disk_bytes`) refuses acks with
//! STORAGE_FAILURE, raises the alarm metric, keeps serving reads, and loses nothing acked before.

mod common;

use common::*;
use tern::proto::v1::{ErrorCode, deliver, server_frame::Frame};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_journal_refuses_acks_and_loses_nothing_acked() {
    let server = TestServer::start_with(|config| {
        config.journal.segment_bytes = 4096;
        config.journal.max_disk_bytes = 8192;
    })
    .await;
    let (alice, _) = server.login("alice", "phone").await;
    let (mut reader, mut writer) = alice.split();
    next_matching(&mut reader, |f| {
        matches!(f, Frame::QueueDrained(_)).then_some(())
    })
    .await;

    // Send until the disk is full; each send waits for its answer.
    let body = "x".repeat(500);
    let mut acked = Vec::new();
    let mut refused = None;
    for n in 0..100 {
        let id = format!("m{n}");
        writer.send_text(&id, "bob", &body).await.unwrap();
        match next(&mut reader).await {
            Frame::ServerAck(ack) => acked.push((ack.seq, id)),
            Frame::Error(error) => {
                assert_eq!(
                    error.code,
                    i32::from(ErrorCode::StorageFailure),
                    "{error:?}"
                );
                assert_eq!(error.client_msg_id, id);
                refused = Some(id);
                break;
            }
            other => panic!("unexpected frame {other:?}"),
        }
    }
    let refused = refused.expect("the quota was never reached");
    assert!(!acked.is_empty(), "nothing fitted before the quota");
    assert!(
        server
            .metric("tern_storage_failures_total")
            .await
            .unwrap_or(0.0)
            >= 1.0
    );

    // A retry of the refused id is refused again, not acked as a duplicate.
    writer.send_text(&refused, "bob", &body).await.unwrap();
    match next(&mut reader).await {
        Frame::Error(error) => assert_eq!(error.code, i32::from(ErrorCode::StorageFailure)),
        other => panic!("a refused message must not be acked on retry: {other:?}"),
    }

    // Reads still work and every acked message is there, in order.
    let (bob, _) = server.login("bob", "phone").await;
    let (mut bob_reader, _bob_writer) = bob.split();
    let mut delivered = Vec::new();
    loop {
        match next(&mut bob_reader).await {
            Frame::Deliver(d) => {
                let Some(deliver::Payload::Message(m)) = d.payload else {
                    panic!("unexpected payload");
                };
                delivered.push((d.seq, m.client_msg_id));
            }
            Frame::QueueDrained(_) => break,
            other => panic!("unexpected frame {other:?}"),
        }
    }
    assert_eq!(delivered, acked);
    server.stop().await;
}
