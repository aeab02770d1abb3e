//! Group chats over TCP: creation and membership rules (with their refusals), ordering for
//! concurrent senders, what removed and new members see, offline members, receipts per member,
//! typing, and survival of a SIGKILL.

mod common;

use common::groups::*;
use common::*;
use tern::proto::v1::{
    ErrorCode, GroupMembers, GroupRef, ListGroups, ReadBy, ReceiptKind, deliver, group_request::Op,
    group_response, server_frame::Frame,
};

/// `user`'s phone logged in to a child node started from `files`.
async fn child_member(files: &ChildFiles, node: &ChildNode, user: &str) -> GroupPhone {
    GroupPhone::new(child_login(node.client, &files.key, user, "phone").await).await
}

async fn member(server: &TestServer, user: &str) -> GroupPhone {
    let (client, _) = server.login(user, "phone").await;
    GroupPhone::new(client).await
}

fn members(group: &str, users: &[&str]) -> GroupMembers {
    GroupMembers {
        group_id: group.to_owned(),
        users: users.iter().map(|u| u.to_string()).collect(),
    }
}

/// The groups `member` lists, asked until it lists `expected` of them (or a few seconds pass).
async fn groups_of(member: &mut GroupPhone, expected: usize) -> Vec<String> {
    let mut groups = Vec::new();
    for _ in 0..100 {
        let list = member.request(Op::List(ListGroups::default())).await;
        let Some(group_response::Result::List(list)) = list.result else {
            panic!("no group list: {list:?}");
        };
        groups = list.group_ids;
        if groups.len() == expected {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    groups
}

/// Waits for posts `m0`, `m1`... acked at `acked` group seqs and checks they all arrived, once,
/// in order.
async fn expect_posts(member: &mut GroupPhone, acked: &[u64], what: &str) {
    let got = received_upto(member, *acked.last().unwrap()).await;
    let messages: Vec<(u64, String)> = got
        .into_iter()
        .filter(|(_, id)| id.starts_with('m'))
        .collect();
    let expected: Vec<(u64, String)> = acked
        .iter()
        .enumerate()
        .map(|(n, seq)| (*seq, format!("m{n}")))
        .collect();
    assert_eq!(messages, expected, "{what}");
}

/// Waits until `member` has received the entry posted as `client_msg_id`; returns every entry
/// received meanwhile, that one included.
async fn received_until(member: &mut GroupPhone, client_msg_id: &str) -> Vec<(u64, String)> {
    let mut all = Vec::new();
    for _ in 0..200 {
        all.extend(member.received().await);
        if all.iter().any(|(_, id)| id == client_msg_id) {
            return all;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("{client_msg_id} never arrived; got {all:?}");
}

/// Waits until `member` has received the group entries up to `group_seq`.
async fn received_upto(member: &mut GroupPhone, group_seq: u64) -> Vec<(u64, String)> {
    let mut all = Vec::new();
    for _ in 0..200 {
        all.extend(member.received().await);
        if all.last().is_some_and(|(seq, _)| *seq >= group_seq) {
            return all;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("entries up to {group_seq} never arrived; got {all:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_rules_and_their_refusals() {
    let server = TestServer::start_with(|c| c.groups.max_members = 4).await;
    let mut ann = member(&server, "ann").await;
    let mut bob = member(&server, "bob").await;
    let group = ann.create(&["bob"]).await;

    let not_admin = ErrorCode::NotAdmin as i32;
    assert_eq!(
        bob.change(Op::Add(members(&group, &["cat"]))).await,
        not_admin
    );
    assert_eq!(
        bob.change(Op::Remove(members(&group, &["ann"]))).await,
        not_admin
    );
    assert_eq!(
        bob.change(Op::Promote(members(&group, &["bob"]))).await,
        not_admin
    );
    assert_eq!(
        ann.change(Op::Add(members(&group, &["cat", "dan"]))).await,
        0
    );
    assert_eq!(
        ann.change(Op::Add(members(&group, &["eve"]))).await,
        ErrorCode::GroupFull as i32
    );
    let mut eve = member(&server, "eve").await;
    assert_eq!(
        eve.change(Op::Info(GroupRef {
            group_id: group.clone(),
            ..Default::default()
        }))
        .await,
        ErrorCode::NotAMember as i32
    );
    assert_eq!(
        eve.post(&group, "x").await,
        Err(ErrorCode::NotAMember as i32)
    );

    // Promote, then the last original admin leaves: bob (an admin now) stays in charge; when
    // bob leaves too, the longest-standing member (cat) is promoted.
    assert_eq!(ann.change(Op::Promote(members(&group, &["bob"]))).await, 0);
    assert_eq!(
        ann.change(Op::Leave(GroupRef {
            group_id: group.clone(),
            ..Default::default()
        }))
        .await,
        0
    );
    assert_eq!(
        bob.change(Op::Leave(GroupRef {
            group_id: group.clone(),
            ..Default::default()
        }))
        .await,
        0
    );
    let mut cat = member(&server, "cat").await;
    let info = cat
        .request(Op::Info(GroupRef {
            group_id: group.clone(),
            ..Default::default()
        }))
        .await;
    let Some(group_response::Result::Info(info)) = info.result else {
        panic!("no info: {info:?}");
    };
    let roles: Vec<(String, i32)> = info
        .members
        .iter()
        .map(|m| (m.user.clone(), m.role))
        .collect();
    assert_eq!(roles, vec![("cat".into(), 2), ("dan".into(), 1)]);

    // cat's groups list names the group; ann's no longer does (once the events reached their
    // mailboxes: the fan-out runs after the answers).
    assert_eq!(groups_of(&mut cat, 1).await, vec![group.clone()]);
    assert!(groups_of(&mut ann, 0).await.is_empty());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_members_get_nothing_new_and_new_members_nothing_old() {
    let server = TestServer::start().await;
    let mut ann = member(&server, "ann").await;
    let mut bob = member(&server, "bob").await;
    // A second group of ann and bob's, for the barrier below; bob has its creation first.
    let pair = ann.create(&["bob"]).await;
    received_upto(&mut bob, 1).await;
    let group = ann.create(&["bob"]).await;
    let before = ann.post(&group, "before-cat").await.unwrap();
    assert_eq!(ann.change(Op::Add(members(&group, &["cat"]))).await, 0);
    let with_cat = ann.post(&group, "with-cat").await.unwrap();
    assert_eq!(ann.change(Op::Remove(members(&group, &["bob"]))).await, 0);
    let after = ann.post(&group, "after-bob").await.unwrap();

    let got = received_upto(&mut bob, after - 1).await;
    let ids: Vec<&str> = got.iter().map(|(_, id)| id.as_str()).collect();
    assert!(
        ids.contains(&"before-cat") && ids.contains(&"with-cat"),
        "{ids:?}"
    );
    assert!(
        ids.contains(&"event:3"),
        "bob hears of his removal: {ids:?}"
    );
    assert!(
        !ids.contains(&"after-bob"),
        "bob got a post from after his removal: {ids:?}"
    );

    // cat, added before "with-cat", logs in only now: its catch-up starts at its joining.
    let barrier = ann.post(&group, "barrier").await.unwrap();
    let mut cat = member(&server, "cat").await;
    let got = received_upto(&mut cat, barrier).await;
    let seqs: Vec<u64> = got.iter().map(|(seq, _)| *seq).collect();
    assert!(
        seqs.iter().all(|seq| *seq > before),
        "cat got entries before joining: {got:?}"
    );
    assert!(seqs.contains(&with_cat) && seqs.contains(&after));

    // Nothing more for bob, proven by a barrier rather than a pause. A group's entries go
    // through one fan-out lane, which queues an entry's copies on every recipient's mailbox
    // worker before it takes the next entry: cat having "barrier" means whatever the lane would
    // have queued for bob from the removal on is in bob's worker's fan-out queue. A post in the
    // pair group, sent after that, is queued behind it in that same queue (first in, first
    // out), and bob's mailbox delivers in the order its worker appends. So when bob has the
    // pair's post, anything of the group's for him would have come before it.
    let for_bob = ann.post(&pair, "for-bob").await.unwrap();
    assert_eq!(
        received_until(&mut bob, "for-bob").await,
        vec![(for_bob, "for-bob".to_owned())],
        "bob got something after his removal"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_senders_are_delivered_in_one_group_order_also_offline() {
    let server = TestServer::start().await;
    let mut ann = member(&server, "ann").await;
    let group = ann.create(&["bob", "cat", "dan"]).await;
    let mut bob = member(&server, "bob").await;
    // dan stays offline until the end.
    let per_sender = 50;
    let (ann_sent, bob_sent) = tokio::join!(
        async {
            let mut seqs = Vec::new();
            for n in 0..per_sender {
                seqs.push(ann.post(&group, &format!("ann-{n}")).await.unwrap());
            }
            seqs
        },
        async {
            let mut seqs = Vec::new();
            for n in 0..per_sender {
                seqs.push(bob.post(&group, &format!("bob-{n}")).await.unwrap());
            }
            seqs
        }
    );
    let last = *ann_sent.iter().chain(&bob_sent).max().unwrap();
    let mut cat = member(&server, "cat").await;
    let cat_got = received_upto(&mut cat, last).await;
    let mut dan = member(&server, "dan").await;
    let dan_got = received_upto(&mut dan, last).await;
    let seqs: Vec<u64> = cat_got.iter().map(|(seq, _)| *seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "cat: out of group order"
    );
    assert_eq!(
        cat_got.len(),
        2 * per_sender + 1,
        "the creation event and every message"
    );
    assert_eq!(cat_got, dan_got, "online and offline members see one order");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_per_member_reach_the_author_and_read_by_lists_them() {
    let server = TestServer::start().await;
    let mut ann = member(&server, "ann").await;
    let group = ann.create(&["bob", "cat"]).await;
    let seq = ann.post(&group, "m1").await.unwrap();
    let mut bob = member(&server, "bob").await;
    received_upto(&mut bob, seq).await;
    bob.writer
        .group_receipt(&group, ReceiptKind::Read, seq)
        .await
        .unwrap();
    let notice = next_matching(&mut ann.reader, |f| match f {
        Frame::Deliver(d) => match &d.payload {
            Some(deliver::Payload::GroupReceipt(r)) => Some(r.clone()),
            _ => None,
        },
        _ => None,
    })
    .await;
    assert_eq!(
        (notice.from_user.as_str(), notice.up_to_group_seq),
        ("bob", seq)
    );
    let answer = ann
        .request(Op::ReadBy(ReadBy {
            group_id: group.clone(),
            group_seq: seq,
            ..Default::default()
        }))
        .await;
    let Some(group_response::Result::ReadBy(list)) = answer.result else {
        panic!("no read-by list: {answer:?}");
    };
    assert_eq!(list.read, vec!["bob".to_owned()]);
    assert!(list.delivered.is_empty(), "cat has not said anything");

    // Typing reaches the other online members only.
    bob.writer.group_typing(&group, true).await.unwrap();
    let typing = next_matching(&mut ann.reader, |f| match f {
        Frame::Typing(t) => Some(t.clone()),
        _ => None,
    })
    .await;
    assert_eq!(
        (typing.from_user.as_str(), typing.group_id.as_str()),
        ("bob", group.as_str())
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_messages_and_membership_survive_a_sigkill() {
    let files = ChildFiles::new(&[]);
    let node = files.start();
    let mut ann = child_member(&files, &node, "ann").await;
    let group = ann.create(&["bob", "cat"]).await;
    let mut acked = Vec::new();
    for n in 0..20 {
        acked.push(ann.post(&group, &format!("m{n}")).await.unwrap());
    }
    node.kill();

    let node = files.start();
    let mut bob = child_member(&files, &node, "bob").await;
    expect_posts(
        &mut bob,
        &acked,
        "every acked group message, once, in order",
    )
    .await;
    // Membership survived too: cat may post, a stranger may not.
    let mut cat = child_member(&files, &node, "cat").await;
    assert!(cat.post(&group, "after-restart").await.is_ok());
    let mut eve = child_member(&files, &node, "eve").await;
    assert_eq!(
        eve.post(&group, "x").await,
        Err(ErrorCode::NotAMember as i32)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_group_copies_are_references_resolved_after_a_restart_and_on_page_in() {
    // Groups of more than 2 members are logged; write-back every second; a cache so small that
    // bob's mailbox stays in the store after the restart and is paged in.
    let edits = [
        FAST_WRITEBACK[0],
        FAST_WRITEBACK[1],
        ("reference_threshold = 64", "reference_threshold = 2"),
        ("cache_bytes = 1073741824", "cache_bytes = 65536"),
        ("huge_mailbox_entries = 1000", "huge_mailbox_entries = 5"),
        ("workers_per_shard = 2", "workers_per_shard = 1"),
    ];
    let files = ChildFiles::new(&edits);
    let node = files.start();
    let mut ann = child_member(&files, &node, "ann").await;
    let group = ann.create(&["bob", "cat"]).await;
    let mut acked = Vec::new();
    for n in 0..30 {
        acked.push(ann.post(&group, &format!("m{n}")).await.unwrap());
    }
    // Write-back passes put bob's unread copies (references) and the group's log in the
    // stores, and checkpoints release the journal.
    let admin = node.admin;
    eventually("checkpoints after the posts", async || {
        let metrics = http_get(admin, "/metrics").await;
        metric_value(&metrics, "tern_checkpoints_total").unwrap_or(0.0) >= 4.0
            && metric_value(&metrics, "tern_mailbox_written_back_total").unwrap_or(0.0) >= 30.0
    })
    .await;
    node.kill();

    let node = files.start();
    let mut bob = child_member(&files, &node, "bob").await;
    expect_posts(
        &mut bob,
        &acked,
        "every copy resolved from the group's log, in order",
    )
    .await;
    let metrics = http_get(node.admin, "/metrics").await;
    assert!(
        metric_value(
            &metrics,
            "tern_mailbox_read_entries_total{source=\"store\"}"
        )
        .unwrap_or(0.0)
            > 0.0,
        "bob's copies were paged in"
    );
    assert_eq!(
        metric_value(&metrics, "tern_mailbox_page_in_failures_total").unwrap_or(0.0),
        0.0
    );
}
