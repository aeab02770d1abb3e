//! The durable mailbox store against an in-memory model, with restarts (SIGKILL or SIGTERM)
//! and write-back passes in between, driven by a seeded pseudo-random sequence of operations.
//!
//! Model: per user, the acked messages (seq → client_msg_id) and the device's acked cursor.
//! Checks at every drain: what arrives is exactly the model's messages above some cursor between
//! the last cursor known durable and the last one acked (cursor moves are journaled without
//! waiting, so a crash may roll an ack back, never forward), in seq order, each once.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use tern::client::Client;
use tern::clock::now_secs;
use tern::proto::v1::{deliver, server_frame::Frame};
use tern::token::TokenKey;

const USERS: u64 = 4;
const STEPS: u64 = 60;

/// xorshift64*: deterministic and dependency-free.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

#[derive(Default)]
struct UserModel {
    messages: BTreeMap<u64, String>,
    /// Highest seq the device acked.
    acked: u64,
    /// Highest ack known to have reached the journal (confirmed by a later drain).
    durable_ack: u64,
}

async fn drain(node: &ChildNode, key: &TokenKey, user: &str, model: &mut UserModel, rng: &mut Rng) {
    let token = key.sign(user, "d", now_secs() + 600).unwrap();
    let (client, _) = Client::login(node.client, &token, 0).await.unwrap();
    let (mut reader, mut writer) = client.split();
    let mut delivered: Vec<(u64, String)> = Vec::new();
    loop {
        match next(&mut reader).await {
            Frame::Deliver(d) => {
                let Some(deliver::Payload::Message(m)) = d.payload else {
                    panic!("{user}: unexpected payload");
                };
                delivered.push((d.seq, m.client_msg_id));
            }
            Frame::QueueDrained(_) => break,
            other => panic!("{user}: unexpected frame {other:?}"),
        }
    }
    let from = delivered.first().map_or(u64::MAX, |(seq, _)| *seq);
    let expected_full: Vec<(u64, String)> = model
        .messages
        .range(model.durable_ack + 1..)
        .map(|(seq, id)| (*seq, id.clone()))
        .collect();
    // What arrived must be a suffix of what is owed since the last durable ack, and must
    // include everything after the last ack.
    let suffix_start = expected_full
        .iter()
        .position(|(seq, _)| *seq >= from)
        .unwrap_or(expected_full.len());
    assert_eq!(
        delivered,
        expected_full[suffix_start..],
        "{user}: delivered the wrong entries"
    );
    let owed_after_ack = model.messages.range(model.acked + 1..).count();
    assert!(
        delivered.len() >= owed_after_ack,
        "{user}: messages after the last ack are missing: delivered {delivered:?}, model {:?}, \
         acked {}, durable ack {}",
        model.messages,
        model.acked,
        model.durable_ack
    );
    // Everything delivered now confirms the earlier acks reached the journal.
    model.durable_ack = model
        .durable_ack
        .max(from.saturating_sub(1).min(model.acked));
    if let Some((last, _)) = delivered.last() {
        // Ack a random prefix of what arrived.
        let upto = delivered[rng.below(delivered.len() as u64) as usize]
            .0
            .min(*last);
        writer.ack(upto).await.unwrap();
        model.acked = model.acked.max(upto);
        // A Ping answered proves the ack was handled before we hang up.
        writer.ping(1).await.unwrap();
        next_matching(&mut reader, |f| matches!(f, Frame::Pong(_)).then_some(())).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailboxes_match_a_model_across_restarts() {
    // The last run squeezes the mailbox cache to 2 KiB per worker, so nearly every mailbox is
    // evicted and read back from the store.
    let tiny_cache = [
        FAST_WRITEBACK[0],
        FAST_WRITEBACK[1],
        ("cache_bytes = 1073741824", "cache_bytes = 65536"),
        ("huge_mailbox_entries = 1000", "huge_mailbox_entries = 5"),
        ("workers_per_shard = 2", "workers_per_shard = 1"),
    ];
    let runs: [(u64, &[(&str, &str)]); 3] = [
        (7, &FAST_WRITEBACK),
        (1_234_567, &FAST_WRITEBACK),
        (42, &tiny_cache),
    ];
    for (seed, edits) in runs {
        let dir = tempfile::tempdir().unwrap();
        let (config_path, config) = child_config(dir.path(), edits);
        let key = TokenKey::new(config.auth.token_key.as_bytes());
        let data = dir.path().join("data");
        let mut rng = Rng(seed);
        let mut models: Vec<UserModel> = (0..USERS).map(|_| UserModel::default()).collect();
        let mut node = ChildNode::start(&config_path, &data);
        for step in 0..STEPS {
            match rng.below(10) {
                0..=4 => {
                    // A burst of sends from one user to others, each awaited (acked).
                    let from = rng.below(USERS);
                    // The same single device as drains use: a second device would get copies of
                    // the user's own messages, which the model does not track.
                    let token = key
                        .sign(&format!("u{from}"), "d", now_secs() + 600)
                        .unwrap();
                    let (client, _) = Client::login(node.client, &token, 0).await.unwrap();
                    let (mut reader, mut writer) = client.split();
                    for n in 0..1 + rng.below(20) {
                        let to = (from + 1 + rng.below(USERS - 1)) % USERS;
                        let id = format!("seed{seed}-step{step}-{n}");
                        writer.send_text(&id, &format!("u{to}"), "x").await.unwrap();
                        let seq = next_matching(&mut reader, |f| match f {
                            Frame::ServerAck(ack) => Some(ack.seq),
                            _ => None,
                        })
                        .await;
                        let previous = models[to as usize].messages.insert(seq, id);
                        assert!(previous.is_none(), "seq {seq} of u{to} acked twice");
                    }
                }
                5..=6 => {
                    let user = rng.below(USERS);
                    drain(
                        &node,
                        &key,
                        &format!("u{user}"),
                        &mut models[user as usize],
                        &mut rng,
                    )
                    .await;
                }
                7 => {
                    node.kill();
                    node = ChildNode::start(&config_path, &data);
                }
                8 => {
                    // Graceful restart.
                    let pid = node.child.id().to_string();
                    let status = std::process::Command::new("kill")
                        .args(["-TERM", &pid])
                        .status()
                        .unwrap();
                    assert!(status.success());
                    let exit = node.child.wait().unwrap();
                    assert!(exit.success(), "graceful stop failed: {exit}");
                    node = ChildNode::start(&config_path, &data);
                }
                _ => {
                    // Let write-back and a checkpoint run.
                    tokio::time::sleep(Duration::from_millis(1_300)).await;
                }
            }
        }
        for user in 0..USERS {
            drain(
                &node,
                &key,
                &format!("u{user}"),
                &mut models[user as usize],
                &mut rng,
            )
            .await;
        }
        if seed == 42 {
            let metrics = http_get(node.admin, "/metrics").await;
            let paged_in = metric_value(
                &metrics,
                "tern_mailbox_read_entries_total{source=\"store\"}",
            );
            assert!(
                paged_in.unwrap_or(0.0) > 0.0,
                "the tiny cache never paged in"
            );
        }
    }
}
