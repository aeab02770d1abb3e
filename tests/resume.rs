//! Resume cursors and device acks: no entry is lost, none is redelivered past the cursor.

mod common;
use common::*;

/// alice (online) sends `n` messages to bob and collects the acks; returns their seqs in order.
async fn send_n(alice: &mut Phone, to: &str, n: u64) -> Vec<u64> {
    let mut seqs = Vec::new();
    for i in 1..=n {
        alice
            .writer
            .send_text(&format!("m{i}"), to, &format!("body {i}"))
            .await
            .unwrap();
        let ack = next_ack(&mut alice.reader).await;
        assert_eq!(ack.client_msg_id, format!("m{i}"));
        seqs.push(ack.seq);
    }
    seqs
}

/// bob logs in, receives 1..=10 and acks only up to 3, then disconnects.
async fn receive_ten_ack_three(server: &TestServer) {
    let mut alice = server.ready("alice", "phone").await;
    assert_eq!(
        send_n(&mut alice, "bob", 10).await,
        (1..=10).collect::<Vec<_>>()
    );
    let mut bob = server.phone("bob", "phone").await;
    let (delivered, last_seq) = drain(&mut bob.reader).await;
    assert_eq!(last_seq, 10);
    assert_eq!(
        delivered.iter().map(|d| d.seq).collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>()
    );
    bob.writer.ack(3).await.unwrap();
    // The Pong comes after the ack was handled.
    let rest = sync(&mut bob.reader, &mut bob.writer).await;
    assert!(rest.is_empty(), "{rest:?}");
    drop(bob);
}

fn seqs(delivered: &[tern::proto::v1::Deliver]) -> Vec<u64> {
    delivered.iter().map(|d| d.seq).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_a_cursor_delivers_only_later_entries() {
    let server = TestServer::start().await;
    receive_ten_ack_three(&server).await;

    let mut bob = server.phone_at("bob", "phone", 7).await;
    assert_eq!(
        bob.welcome.cursor, 7,
        "max(stored cursor 3, resume_after 7)"
    );
    assert_eq!(bob.welcome.last_seq, 10);
    let (delivered, last_seq) = drain(&mut bob.reader).await;
    assert_eq!(seqs(&delivered), [8, 9, 10], "4..7 must not come back");
    assert_eq!(last_seq, 10);
    for d in &delivered {
        assert_eq!(body(d), format!("body {}", d.seq));
    }
    let rest = sync(&mut bob.reader, &mut bob.writer).await;
    assert!(rest.is_empty(), "bob got extra frames: {rest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_from_zero_redelivers_everything_after_the_last_ack() {
    let server = TestServer::start().await;
    receive_ten_ack_three(&server).await;

    let mut bob = server.phone_at("bob", "phone", 0).await;
    assert_eq!(bob.welcome.cursor, 3);
    let (delivered, last_seq) = drain(&mut bob.reader).await;
    assert_eq!(seqs(&delivered), (4..=10).collect::<Vec<_>>());
    assert_eq!(last_seq, 10);
    for d in &delivered {
        assert_eq!(body(d), format!("body {}", d.seq));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_cursor_never_moves_backwards() {
    let server = TestServer::start().await;
    receive_ten_ack_three(&server).await;
    // resume_after below the stored cursor: the stored cursor wins.
    let mut bob = server.phone_at("bob", "phone", 1).await;
    assert_eq!(bob.welcome.cursor, 3);
    let (delivered, _) = drain(&mut bob.reader).await;
    assert_eq!(seqs(&delivered), (4..=10).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_beyond_the_mailbox_is_clamped_and_live_delivery_continues() {
    let server = TestServer::start().await;
    let mut alice = server.ready("alice", "phone").await;
    send_n(&mut alice, "bob", 5).await;
    let mut bob = server.phone_at("bob", "phone", 99).await;
    assert_eq!(bob.welcome.cursor, 5);
    assert_eq!(bob.welcome.last_seq, 5);
    let (delivered, last_seq) = drain(&mut bob.reader).await;
    assert!(delivered.is_empty(), "{delivered:?}");
    assert_eq!(last_seq, 5);
    alice.writer.send_text("late", "bob", "late").await.unwrap();
    let ack = next_ack(&mut alice.reader).await;
    assert_eq!(ack.seq, 6);
    let d = next_deliver(&mut bob.reader).await;
    assert_eq!(d.seq, 6);
    assert_eq!(body(&d), "late");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_entries_are_not_redelivered_and_unacked_live_ones_are() {
    let server = TestServer::start().await;
    let mut alice = server.ready("alice", "phone").await;
    let mut bob = server.ready("bob", "phone").await;
    send_n(&mut alice, "bob", 6).await;
    for seq in 1..=6 {
        let d = next_deliver(&mut bob.reader).await;
        assert_eq!(d.seq, seq);
        if seq == 4 {
            bob.writer.ack(4).await.unwrap();
        }
    }
    let rest = sync(&mut bob.reader, &mut bob.writer).await;
    assert!(rest.is_empty(), "{rest:?}");
    drop(bob);
    let mut bob = server.phone("bob", "phone").await;
    assert_eq!(bob.welcome.cursor, 4);
    let (delivered, last_seq) = drain(&mut bob.reader).await;
    assert_eq!(seqs(&delivered), [5, 6]);
    assert_eq!(last_seq, 6);
    bob.writer.ack(6).await.unwrap();
    sync(&mut bob.reader, &mut bob.writer).await;
    drop(bob);
    let mut bob = server.phone("bob", "phone").await;
    assert_eq!(bob.welcome.cursor, 6);
    let (delivered, last_seq) = drain(&mut bob.reader).await;
    assert!(delivered.is_empty(), "{delivered:?}");
    assert_eq!(last_seq, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_pauses_at_the_window_until_the_device_acks() {
    let server = TestServer::start_with(|c| c.limits.delivery_window = 4).await;
    let mut alice = server.ready("alice", "phone").await;
    send_n(&mut alice, "bob", 10).await;
    let mut bob = server.phone("bob", "phone").await;
    assert_eq!(bob.welcome.delivery_window, 4);
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(next_deliver(&mut bob.reader).await.seq);
    }
    assert_eq!(got, [1, 2, 3, 4]);
    // The window is full: nothing more (and no QueueDrained) until an ack.
    let rest = sync(&mut bob.reader, &mut bob.writer).await;
    assert!(rest.is_empty(), "sent beyond the window: {rest:?}");
    bob.writer.ack(2).await.unwrap();
    assert_eq!(next_deliver(&mut bob.reader).await.seq, 5);
    assert_eq!(next_deliver(&mut bob.reader).await.seq, 6);
    let rest = sync(&mut bob.reader, &mut bob.writer).await;
    assert!(rest.is_empty(), "sent beyond the window: {rest:?}");
    bob.writer.ack(6).await.unwrap();
    let (delivered, last_seq) = drain(&mut bob.reader).await;
    assert_eq!(seqs(&delivered), [7, 8, 9, 10]);
    assert_eq!(last_seq, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_beyond_what_was_sent_only_covers_what_was_sent() {
    let server = TestServer::start().await;
    let mut alice = server.ready("alice", "phone").await;
    send_n(&mut alice, "bob", 3).await;
    let mut bob = server.phone("bob", "phone").await;
    let (delivered, _) = drain(&mut bob.reader).await;
    assert_eq!(seqs(&delivered), [1, 2, 3]);
    bob.writer.ack(1_000).await.unwrap();
    sync(&mut bob.reader, &mut bob.writer).await;
    // A later entry is not covered by the earlier, too-high ack.
    alice.writer.send_text("m4", "bob", "body 4").await.unwrap();
    assert_eq!(next_ack(&mut alice.reader).await.seq, 4);
    assert_eq!(next_deliver(&mut bob.reader).await.seq, 4);
    drop(bob);
    let mut bob = server.phone("bob", "phone").await;
    assert_eq!(bob.welcome.cursor, 3);
    let (delivered, _) = drain(&mut bob.reader).await;
    assert_eq!(seqs(&delivered), [4], "unacked seq 4 is sent again");
}
