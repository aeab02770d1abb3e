//! 1:1 chat across the nodes of a cluster (three child processes, replication 1, so each node
//! owns a third of the slots): a phone on any node reaches a user owned by any other node, with
//! the guarantees of one node (acked means stored by the owner, a retry gets the original ack,
//! receipts come back, a device logging in elsewhere replaces the first), and a user whose owner
//! is down is refused, never acked.

mod common;

use std::time::Duration;

use common::cluster::*;
use common::*;
use tern::client::ClientReader;
use tern::proto::v1::{ErrorCode, GoAwayReason, ReceiptKind, server_frame::Frame};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phones_on_different_nodes_chat_through_the_owner_of_each_mailbox() {
    let (_dir, members, map) = three_islands().await;
    // alice's mailbox on node 3, bob's on node 2; alice's phone on node 1, bob's on node 3.
    let alice = user_owned_by(&map, 3, "alice");
    let bob = user_owned_by(&map, 2, "bob");

    // alice's tablet on node 2 first, so her phone knows at login that she has two devices.
    let (mut tablet_in, _tablet_out, _) = phone(&members[1], &alice, "tablet").await;
    let (mut alice_in, mut alice_out, _) = phone(&members[0], &alice, "phone").await;
    let (mut bob_in, mut bob_out, _) = phone(&members[2], &bob, "phone").await;

    alice_out
        .send_text("m-1", &bob, "hello across")
        .await
        .unwrap();
    let ack = next_ack(&mut alice_in).await;
    assert_eq!(ack.client_msg_id, "m-1");
    assert!(!ack.duplicate);
    let delivered = next_deliver(&mut bob_in).await;
    assert_eq!(delivered.seq, ack.seq);
    assert_eq!(body(&delivered), "hello across");
    assert_eq!(chat(&delivered).from_user, alice);
    assert_eq!(chat(&delivered).server_id, ack.server_id);
    // alice's own copy reaches her tablet on node 2, from her mailbox on node 3.
    let copy = next_deliver(&mut tablet_in).await;
    assert_eq!(body(&copy), "hello across");
    assert_eq!(chat(&copy).to_user, bob);
    assert_eq!(chat(&copy).server_id, ack.server_id);

    // The retry of the same id gets the original ack, and bob nothing new.
    alice_out
        .send_text("m-1", &bob, "hello across")
        .await
        .unwrap();
    let retry = next_ack(&mut alice_in).await;
    assert!(retry.duplicate);
    assert_eq!((retry.seq, retry.server_id), (ack.seq, ack.server_id));

    // A read receipt travels back from bob's node to alice's mailbox on node 3, to node 1.
    bob_out
        .receipt("r-1", &alice, ReceiptKind::Read, delivered.seq)
        .await
        .unwrap();
    let receipt_ack = next_ack(&mut bob_in).await;
    assert_eq!(receipt_ack.client_msg_id, "r-1");
    let notice = next_deliver(&mut alice_in).await;
    let r = receipt_notice(&notice);
    assert_eq!(r.from_user, bob);
    assert_eq!(r.up_to_seq, delivered.seq);

    // bob's second device on node 1 reads his mailbox from node 2 at login: the message, once.
    let (_bob_tablet_in, _bob_tablet_out, caught_up) = phone(&members[0], &bob, "tablet").await;
    let bodies: Vec<String> = caught_up.iter().map(body).collect();
    assert_eq!(bodies, ["hello across"]);

    // bob's phone logging in again on node 2 replaces the session on node 3.
    let (_again_in, _again_out, _) = phone(&members[1], &bob, "phone").await;
    let goaway = next_matching(&mut bob_in, |frame| match frame {
        Frame::GoAway(goaway) => Some(goaway),
        _ => None,
    })
    .await;
    assert_eq!(goaway.reason(), GoAwayReason::Replaced);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_to_a_user_whose_owner_is_down_are_refused_not_acked() {
    let (_dir, mut members, map) = three_islands().await;
    let alice = user_owned_by(&map, 1, "alice");
    let carol = user_owned_by(&map, 3, "carol");
    let (mut alice_in, mut alice_out, _) = phone(&members[0], &alice, "phone").await;

    members[2].node.take().expect("running").kill();
    alice_out
        .send_text("m-1", &carol, "are you there")
        .await
        .unwrap();
    let error = next_error(&mut alice_in, ErrorCode::Overloaded).await;
    assert_eq!(error.client_msg_id, "m-1");
    let failures = http_get(members[0].admin(), "/metrics").await;
    let refused: f64 = ["unavailable", "call", "deadline"]
        .iter()
        .filter_map(|kind| {
            metric_value(
                &failures,
                &format!("tern_remote_failures_total{{cause=\"{kind}\"}}"),
            )
        })
        .sum();
    assert!(refused >= 1.0, "a refused remote operation is counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_owner_gets_its_remote_sessions_back_and_pushes_reach_them() {
    let (_dir, mut members, map) = three_islands().await;
    let alice = user_owned_by(&map, 1, "alice");
    let bob = user_owned_by(&map, 2, "bob");
    let (mut alice_in, mut alice_out, _) = phone(&members[0], &alice, "phone").await;
    let (mut bob_in, _bob_out, _) = phone(&members[2], &bob, "phone").await;

    // bob's owner restarts from its files and forgets who was online.
    members[1].node.take().expect("running").kill();
    members[1].node = Some(ChildNode::start(&members[1].config, &members[1].data));

    // Refused while the owner is away, then acked once it is back.
    let mut attempt = 0;
    let ack = loop {
        attempt += 1;
        assert!(attempt < 300, "no ack after the owner's restart");
        alice_out
            .send_text("m-after", &bob, "still there?")
            .await
            .unwrap();
        match next(&mut alice_in).await {
            Frame::ServerAck(ack) => break ack,
            Frame::Error(error) if error.code() == ErrorCode::Overloaded => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("unexpected frame {other:?}"),
        }
    };
    // bob's session on node 3 registered with the restarted owner again and gets the message.
    let delivered = next_deliver(&mut bob_in).await;
    assert_eq!(delivered.seq, ack.seq);
    assert_eq!(body(&delivered), "still there?");
    // Well after the cluster settled again, a live push (no read is pending any more).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    alice_out
        .send_text("m-later", &bob, "pushed")
        .await
        .unwrap();
    let later = next_ack(&mut alice_in).await;
    let pushed = next_deliver(&mut bob_in).await;
    assert_eq!(
        (pushed.seq, body(&pushed)),
        (later.seq, "pushed".to_owned())
    );
}

/// The next presence update about `user`.
async fn presence_of(reader: &mut ClientReader, user: &str) -> tern::proto::v1::PresenceUpdate {
    next_matching(reader, |frame| match frame {
        Frame::Presence(update) if update.user == user => Some(update),
        _ => None,
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_and_presence_cross_nodes_through_the_owner() {
    let (_dir, members, map) = three_islands().await;
    let alice = user_owned_by(&map, 1, "alice");
    let bob = user_owned_by(&map, 2, "bob");
    let carol = user_owned_by(&map, 3, "carol");

    // carol, on node 1, watches bob, whose owner is node 2.
    let (mut carol_in, mut carol_out, _) = phone(&members[0], &carol, "phone").await;
    carol_out.subscribe_presence(&[&bob]).await.unwrap();
    assert!(!presence_of(&mut carol_in, &bob).await.online);

    // bob comes online on node 3: carol hears it from bob's owner.
    let (mut bob_in, bob_out, _) = phone(&members[2], &bob, "phone").await;
    assert!(presence_of(&mut carol_in, &bob).await.online);

    // alice, on node 1, types to bob on node 3.
    let (_alice_in, mut alice_out, _) = phone(&members[0], &alice, "phone").await;
    alice_out.typing(&bob, true).await.unwrap();
    let notice = next_matching(&mut bob_in, |frame| match frame {
        Frame::Typing(notice) => Some(notice),
        _ => None,
    })
    .await;
    assert_eq!(
        (notice.from_user.as_str(), notice.typing),
        (alice.as_str(), true)
    );

    // bob's only device goes away: offline, with a last-seen time.
    drop((bob_in, bob_out));
    let offline = presence_of(&mut carol_in, &bob).await;
    assert!(!offline.online);
    assert!(offline.last_seen_ms > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_sends_survive_a_killed_owner_and_drain_complete_and_in_order() {
    let (_dir, mut members, map) = three_islands().await;
    let alice = user_owned_by(&map, 1, "alice");
    // Nine offline recipients, three owned by each node.
    let recipients: Vec<String> = (1..=3)
        .flat_map(|owner| (0..3).map(move |i| (owner, format!("r{owner}x{i}"))))
        .map(|(owner, prefix)| user_owned_by(&map, owner, &prefix))
        .collect();
    let (mut alice_in, mut alice_out, _) = phone(&members[0], &alice, "phone").await;

    // Sends one message to each recipient, round after round: what was sent to each, in order,
    // and whether it was acked. A refusal (OVERLOADED) is not a promise that nothing was stored:
    // a call whose link broke after the owner ran it is refused too (a phone would resend it
    // with the same id and get the first seq back), so a refused message may be delivered.
    let mut sent: Vec<Vec<(String, bool)>> = vec![Vec::new(); recipients.len()];
    let mut refused = 0;
    for round in 0..12 {
        if round == 4 {
            // Node 2 dies with acked messages in its journal.
            members[1].node.take().expect("running").kill();
        }
        if round == 8 {
            members[1].node = Some(ChildNode::start(&members[1].config, &members[1].data));
            // Its sessions-to-be read from it once it is back; wait until it serves again.
            eventually_within(SETTLE, "node 2 serving again", async || {
                let id = format!("probe-{round}");
                alice_out
                    .send_text(&id, &recipients[3], "probe")
                    .await
                    .unwrap();
                matches!(next(&mut alice_in).await, Frame::ServerAck(_))
            })
            .await;
        }
        for (index, recipient) in recipients.iter().enumerate() {
            let id = format!("m-{round}-{index}");
            let text = format!("{round}");
            alice_out.send_text(&id, recipient, &text).await.unwrap();
            match next(&mut alice_in).await {
                Frame::ServerAck(ack) => {
                    assert_eq!(ack.client_msg_id, id);
                    sent[index].push((text, true));
                }
                Frame::Error(error) if error.code() == ErrorCode::Overloaded => {
                    refused += 1;
                    sent[index].push((text, false));
                }
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }
    assert!(refused > 0, "sends to the dead owner were refused");

    // Each recipient logs in on a node that does not own it and reads everything it was
    // acked, once, in the order it was sent; nothing it was not sent.
    for (index, recipient) in recipients.iter().enumerate() {
        let node = &members[(index + 1) % 3];
        let (_in, _out, delivered) = phone(node, recipient, "phone").await;
        let got: Vec<String> = delivered
            .iter()
            .map(body)
            .filter(|text| text != "probe")
            .collect();
        assert_eq!(
            in_order_once(&got, &sent[index]),
            Ok(()),
            "{recipient}: got {got:?} of {:?}",
            sent[index]
        );
    }
}

/// Checks that `got` holds every acked message of `sent`, each once, in the order sent, and
/// nothing else than what was sent (refused ones may be there or not): the first problem.
fn in_order_once(got: &[String], sent: &[(String, bool)]) -> Result<(), String> {
    let mut next = 0;
    for text in got {
        let Some(found) = sent[next..].iter().position(|(sent, _)| sent == text) else {
            return Err(format!("{text} doubled, out of order or never sent"));
        };
        if let Some((lost, _)) = sent[next..next + found].iter().find(|(_, acked)| *acked) {
            return Err(format!("acked {lost} lost"));
        }
        next += found + 1;
    }
    match sent[next..].iter().find(|(_, acked)| *acked) {
        Some((lost, _)) => Err(format!("acked {lost} lost")),
        None => Ok(()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_or_dead_node_takes_its_sessions_offline_at_their_owners() {
    let (_dir, mut members, map) = three_islands().await;
    let bob = user_owned_by(&map, 2, "bob");
    let carol = user_owned_by(&map, 1, "carol");
    let (mut carol_in, mut carol_out, _) = phone(&members[0], &carol, "phone").await;
    carol_out.subscribe_presence(&[&bob]).await.unwrap();
    assert!(!presence_of(&mut carol_in, &bob).await.online);

    // bob's phone on node 3; node 3 restarts at once (too soon to be marked down).
    let bob_phone = phone(&members[2], &bob, "phone").await;
    assert!(presence_of(&mut carol_in, &bob).await.online);
    members[2].node.take().expect("running").kill();
    drop(bob_phone);
    members[2].node = Some(ChildNode::start(&members[2].config, &members[2].data));
    // (a watch renewed at a resync answers with the state of the moment first)
    presence_becomes(&mut carol_in, &bob, false).await;

    // Back on node 3, then node 3 dies for good: offline once it is marked down.
    let _bob_again = phone(&members[2], &bob, "phone").await;
    presence_becomes(&mut carol_in, &bob, true).await;
    members[2].node.take().expect("running").kill();
    presence_becomes(&mut carol_in, &bob, false).await;
}

/// Reads presence updates about `user` until one says `online`.
async fn presence_becomes(reader: &mut ClientReader, user: &str, online: bool) {
    while presence_of(reader, user).await.online != online {}
}
