//! kill -9 under load: every acked message survives, in order, without duplicates.
//!
//! Each round starts `tern serve` as a child process on the same data directory, has senders
//! send to recipients that are offline, records every ServerAck, and kills the child with
//! SIGKILL at a pseudo-random moment while sends are in flight. At the end a last node is
//! started and every recipient drains its mailbox: each acked message must be there once, at
//! the seq its ack named, in seq order. Write-back and checkpoints run every second, so the
//! survivors come from both the stores and the journals.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use tern::client::{Client, text_frame};
use tern::clock::now_secs;
use tern::token::TokenKey;

const SENDERS: usize = 8;
const RECIPIENTS: usize = 5;
const ROUNDS: u64 = 4;

/// (recipient, client_msg_id) → seq named by the ack.
async fn send_until_killed(
    addr: std::net::SocketAddr,
    key: TokenKey,
    sender: usize,
    round: u64,
) -> Acked {
    let token = key
        .sign(&format!("s{sender}"), "d", now_secs() + 600)
        .unwrap();
    let Ok((client, _)) = Client::login(addr, &token, 0).await else {
        return Acked::new();
    };
    let (mut reader, mut writer) = client.split();
    let mut in_flight: HashMap<String, String> = HashMap::new();
    let mut acked = Acked::new();
    let mut n = 0u64;
    loop {
        // Keep up to 16 sends in flight.
        while in_flight.len() < 16 {
            n += 1;
            let recipient = format!("r{}", (sender as u64 + n) % RECIPIENTS as u64);
            let id = format!("s{sender}-r{round}-{n}");
            writer.queue(text_frame(&id, &recipient, id.as_bytes()));
            in_flight.insert(id, recipient);
        }
        if writer.flush().await.is_err() {
            return acked;
        }
        match reader.recv().await {
            Ok(Some(frame)) => book(frame.frame, &mut in_flight, &mut acked),
            _ => return acked,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_messages_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    // Write-back and checkpoints every second, so kills also land around checkpoints and
    // journal releases, and recovery mixes store and journal.
    let (config_path, config) = child_config(
        dir.path(),
        &[
            FAST_WRITEBACK[0],
            FAST_WRITEBACK[1],
            ("segment_bytes = 67108864", "segment_bytes = 65536"),
        ],
    );
    let key = TokenKey::new(config.auth.token_key.as_bytes());
    let data = dir.path().join("data");

    let mut acked = Acked::new();
    for round in 0..ROUNDS {
        let node = ChildNode::start(&config_path, &data);
        let senders: Vec<_> = (0..SENDERS)
            .map(|sender| tokio::spawn(send_until_killed(node.client, key.clone(), sender, round)))
            .collect();
        // A different moment in every round (no timing is asserted).
        tokio::time::sleep(Duration::from_millis(2_600 + 450 * round)).await;
        node.kill();
        for sender in senders {
            acked.extend(sender.await.unwrap());
        }
    }
    assert!(
        acked.len() > 100,
        "too few acks to prove anything: {}",
        acked.len()
    );

    // Restart and drain every recipient.
    let node = ChildNode::start(&config_path, &data);
    for (recipient, by_seq) in &by_recipient(&acked) {
        let token = key.sign(recipient, "d", now_secs() + 600).unwrap();
        let (client, _) = Client::login(node.client, &token, 0).await.unwrap();
        let (mut reader, mut writer) = client.split();
        let delivered = drain_acking(&mut reader, &mut writer).await;
        check_drained(recipient, delivered, by_seq);
    }
}
