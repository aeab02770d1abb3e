//! Delivered/read receipts: acked like messages, delivered to the author as ReceiptNotice,
//! validated against what the device received, and durable while the author is offline.

mod common;
use common::*;

use tern::proto::v1::{ErrorCode, ReceiptKind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_receipt_is_acked_and_reaches_the_author() {
    let server = TestServer::start().await;
    let mut alice = server.ready("alice", "phone").await;
    let mut bob = server.ready("bob", "phone").await;
    alice.writer.send_text("m1", "bob", "hello").await.unwrap();
    let sent = next_ack(&mut alice.reader).await;
    let d = next_deliver(&mut bob.reader).await;
    let s = d.seq;
    assert_eq!(s, sent.seq);

    bob.writer
        .receipt("r1", "alice", ReceiptKind::Read, s)
        .await
        .unwrap();
    let ack = next_ack(&mut bob.reader).await;
    assert_eq!(ack.client_msg_id, "r1");
    assert!(!ack.duplicate);

    let notice = next_deliver(&mut alice.reader).await;
    assert_eq!(notice.seq, ack.seq, "the receipt's seq in alice's mailbox");
    let r = receipt_notice(&notice);
    assert_eq!(r.from_user, "bob");
    assert_eq!(r.from_device, "phone");
    assert_eq!(r.kind(), ReceiptKind::Read);
    assert_eq!(r.up_to_seq, s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_receipt_covers_several_messages() {
    let server = TestServer::start().await;
    let mut alice = server.ready("alice", "phone").await;
    let mut bob = server.ready("bob", "phone").await;
    for i in 1..=3 {
        alice
            .writer
            .send_text(&format!("m{i}"), "bob", "x")
            .await
            .unwrap();
        next_ack(&mut alice.reader).await;
    }
    let mut last = 0;
    for _ in 0..3 {
        last = next_deliver(&mut bob.reader).await.seq;
    }
    bob.writer
        .receipt("r-delivered", "alice", ReceiptKind::Delivered, last)
        .await
        .unwrap();
    next_ack(&mut bob.reader).await;
    let notice = next_deliver(&mut alice.reader).await;
    let r = receipt_notice(&notice);
    assert_eq!(r.kind(), ReceiptKind::Delivered);
    assert_eq!(r.up_to_seq, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipt_beyond_what_was_delivered_is_invalid() {
    let server = TestServer::start().await;
    let mut alice = server.ready("alice", "phone").await;
    let mut bob = server.ready("bob", "phone").await;
    alice.writer.send_text("m1", "bob", "hello").await.unwrap();
    next_ack(&mut alice.reader).await;
    let s = next_deliver(&mut bob.reader).await.seq;

    bob.writer
        .receipt("r-future", "alice", ReceiptKind::Read, s + 1)
        .await
        .unwrap();
    let error = next_error(&mut bob.reader, ErrorCode::InvalidArgument).await;
    assert_eq!(error.client_msg_id, "r-future");

    bob.writer
        .receipt("r-zero", "alice", ReceiptKind::Read, 0)
        .await
        .unwrap();
    let error = next_error(&mut bob.reader, ErrorCode::InvalidArgument).await;
    assert_eq!(error.client_msg_id, "r-zero");

    bob.writer
        .receipt("r-kind", "alice", ReceiptKind::Unspecified, s)
        .await
        .unwrap();
    let error = next_error(&mut bob.reader, ErrorCode::InvalidArgument).await;
    assert_eq!(error.client_msg_id, "r-kind");

    // Nothing was stored for alice, and bob's connection is still usable.
    let rest = sync(&mut alice.reader, &mut alice.writer).await;
    assert!(rest.is_empty(), "alice got frames: {rest:?}");
    bob.writer
        .receipt("r-ok", "alice", ReceiptKind::Read, s)
        .await
        .unwrap();
    assert_eq!(next_ack(&mut bob.reader).await.client_msg_id, "r-ok");
    let notice = next_deliver(&mut alice.reader).await;
    assert_eq!(notice.seq, 1, "the refused receipts took no seq");
    assert_eq!(receipt_notice(&notice).up_to_seq, s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipt_waits_for_an_offline_author() {
    let server = TestServer::start().await;
    let mut alice = server.ready("alice", "phone").await;
    alice.writer.send_text("m1", "bob", "hello").await.unwrap();
    next_ack(&mut alice.reader).await;
    drop(alice);

    let mut bob = server.phone("bob", "phone").await;
    let (delivered, _) = drain(&mut bob.reader).await;
    assert_eq!(delivered.len(), 1);
    let s = delivered[0].seq;
    bob.writer
        .receipt("r1", "alice", ReceiptKind::Read, s)
        .await
        .unwrap();
    let ack = next_ack(&mut bob.reader).await;

    let mut alice = server.phone("alice", "phone").await;
    let (delivered, last_seq) = drain(&mut alice.reader).await;
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    assert_eq!(delivered[0].seq, ack.seq);
    assert_eq!(last_seq, ack.seq);
    let r = receipt_notice(&delivered[0]);
    assert_eq!(r.from_user, "bob");
    assert_eq!(r.kind(), ReceiptKind::Read);
    assert_eq!(r.up_to_seq, s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipt_retry_is_deduplicated() {
    let server = TestServer::start().await;
    let mut alice = server.ready("alice", "phone").await;
    let mut bob = server.ready("bob", "phone").await;
    alice.writer.send_text("m1", "bob", "hello").await.unwrap();
    next_ack(&mut alice.reader).await;
    let s = next_deliver(&mut bob.reader).await.seq;
    bob.writer
        .receipt("r1", "alice", ReceiptKind::Read, s)
        .await
        .unwrap();
    let first = next_ack(&mut bob.reader).await;
    bob.writer
        .receipt("r1", "alice", ReceiptKind::Read, s)
        .await
        .unwrap();
    let second = next_ack(&mut bob.reader).await;
    assert!(second.duplicate);
    assert_eq!(second.seq, first.seq);
    next_deliver(&mut alice.reader).await;
    let rest = sync(&mut alice.reader, &mut alice.writer).await;
    assert!(rest.is_empty(), "receipt delivered twice: {rest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_are_not_copied_to_the_receipt_authors_other_devices() {
    let server = TestServer::start().await;
    let mut alice = server.ready("alice", "phone").await;
    let mut laptop = server.ready("bob", "laptop").await;
    let mut phone = server.ready("bob", "phone").await;
    alice.writer.send_text("m1", "bob", "hello").await.unwrap();
    next_ack(&mut alice.reader).await;
    let s = next_deliver(&mut phone.reader).await.seq;
    assert_eq!(next_deliver(&mut laptop.reader).await.seq, s);
    phone
        .writer
        .receipt("r1", "alice", ReceiptKind::Read, s)
        .await
        .unwrap();
    next_ack(&mut phone.reader).await;
    let notice = next_deliver(&mut alice.reader).await;
    assert_eq!(receipt_notice(&notice).from_device, "phone");
    let rest = sync(&mut laptop.reader, &mut laptop.writer).await;
    assert!(rest.is_empty(), "receipt copied to bob's laptop: {rest:?}");
}
