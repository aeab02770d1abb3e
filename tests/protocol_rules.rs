//! Rules `docs/protocol.md` states about groups and first frames, each checked over TCP as a
//! client written from that page would meet it: refused group receipts, an unknown case as the
//! first frame, who is sent a group event, where `group_seq` starts, subject length, the
//! announced promotion when the only admin leaves, and who `read_by` lists.

mod common;
use common::*;

use tern::proto::v1::{
    CreateGroup, ErrorCode, GroupEvent, GroupEventKind, GroupRef, GroupResponse, GroupSubject,
    ReadBy, ReadByList, ReceiptKind, deliver, group_request::Op, group_response,
    server_frame::Frame,
};

/// A phone that has read its catch-up (acking it) and is ready for live traffic.
async fn caught_up(server: &TestServer, user: &str, device: &str) -> Phone {
    let mut phone = server.phone(user, device).await;
    loop {
        match next(&mut phone.reader).await {
            Frame::Deliver(d) => phone.writer.ack(d.seq).await.expect("ack"),
            Frame::QueueDrained(_) => return phone,
            _ => {}
        }
    }
}

/// Sends a group request and waits for its answer, skipping (and acking) anything else.
async fn request(phone: &mut Phone, request_id: u64, op: Op) -> GroupResponse {
    phone
        .writer
        .group_request(request_id, op)
        .await
        .expect("group request");
    loop {
        match next(&mut phone.reader).await {
            Frame::GroupResponse(r) if r.request_id == request_id => return r,
            Frame::Deliver(d) => phone.writer.ack(d.seq).await.expect("ack"),
            _ => {}
        }
    }
}

/// Creates a group of `phone`'s user with `members`; returns its id.
async fn create(phone: &mut Phone, members: &[&str]) -> String {
    let response = request(
        phone,
        1,
        Op::Create(CreateGroup {
            subject: "team".into(),
            members: members.iter().map(|m| m.to_string()).collect(),
        }),
    )
    .await;
    match response.result {
        Some(group_response::Result::Info(info)) => info.group_id,
        other => panic!(
            "create refused: error {} {:?}: {other:?}",
            response.error, response.message
        ),
    }
}

/// The next group event delivered to `phone` (acked), skipping everything else.
async fn next_event(phone: &mut Phone) -> GroupEvent {
    loop {
        if let Frame::Deliver(d) = next(&mut phone.reader).await {
            phone.writer.ack(d.seq).await.expect("ack");
            if let Some(deliver::Payload::GroupEvent(event)) = d.payload {
                return event;
            }
        }
    }
}

/// Every frame `phone` was sent up to now (a Ping round trip proves nothing else is on its way
/// from what the server handled before).
async fn sent_so_far(phone: &mut Phone) -> Vec<Frame> {
    sync(&mut phone.reader, &mut phone.writer).await
}

fn group_ref(group: &str) -> GroupRef {
    GroupRef {
        group_id: group.to_owned(),
        ..Default::default()
    }
}

async fn read_by(phone: &mut Phone, request_id: u64, group: &str, group_seq: u64) -> ReadByList {
    let response = request(
        phone,
        request_id,
        Op::ReadBy(ReadBy {
            group_id: group.to_owned(),
            group_seq,
            ..Default::default()
        }),
    )
    .await;
    match response.result {
        Some(group_response::Result::ReadBy(list)) => list,
        other => panic!(
            "read_by refused: error {} {:?}: {other:?}",
            response.error, response.message
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_receipt_for_a_group_that_does_not_exist_is_refused_naming_the_group() {
    let server = TestServer::start().await;
    let mut ann = caught_up(&server, "ann", "phone").await;
    ann.writer
        .group_receipt("g-nowhere", ReceiptKind::Read, 1)
        .await
        .expect("receipt");
    let error = next_error(&mut ann.reader, ErrorCode::NotAMember).await;
    assert!(
        error.message.contains("g-nowhere"),
        "the error names the refused receipt's group: {error:?}"
    );
    assert!(error.client_msg_id.is_empty(), "{error:?}");
    // The connection stays open.
    assert!(sent_so_far(&mut ann).await.is_empty());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_receipt_from_a_user_not_in_the_group_is_refused_and_a_members_is_not() {
    let server = TestServer::start().await;
    let mut ann = caught_up(&server, "ann", "phone").await;
    let group = create(&mut ann, &["bob"]).await;
    let mut eve = caught_up(&server, "eve", "phone").await;
    eve.writer
        .group_receipt(&group, ReceiptKind::Delivered, 1)
        .await
        .expect("receipt");
    let error = next_error(&mut eve.reader, ErrorCode::NotAMember).await;
    assert!(error.message.contains(&group), "{error:?}");
    // A member's receipt has no answer.
    let mut bob = caught_up(&server, "bob", "phone").await;
    bob.writer
        .group_receipt(&group, ReceiptKind::Read, 1)
        .await
        .expect("receipt");
    let frames = sent_so_far(&mut bob).await;
    assert!(
        !frames.iter().any(|f| matches!(f, Frame::Error(_))),
        "{frames:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_frame_with_a_case_the_server_does_not_know_is_a_bad_frame() {
    let server = TestServer::start().await;
    let mut raw = server.connect().await;
    // Field 19, length-delimited, empty: decoders skip it, leaving the oneof empty.
    raw.writer
        .send_raw_frame(&[0x9a, 0x01, 0x00])
        .await
        .expect("write");
    closed_with_error(&mut raw.reader, ErrorCode::BadFrame).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_event_reaches_the_actors_other_devices_but_not_the_acting_device() {
    let server = TestServer::start().await;
    let mut phone = caught_up(&server, "ann", "phone").await;
    let mut laptop = caught_up(&server, "ann", "laptop").await;
    let mut bob = caught_up(&server, "bob", "phone").await;
    let group = create(&mut phone, &["bob"]).await;

    // group_seq starts at 1: the creation is the log's first entry.
    for other in [&mut laptop, &mut bob] {
        let event = next_event(other).await;
        assert_eq!(event.kind(), GroupEventKind::Created);
        assert_eq!(event.group_seq, 1);
        assert_eq!(event.group_id, group);
        assert_eq!(event.actor, "ann");
        assert_eq!(event.users, vec!["ann".to_owned(), "bob".to_owned()]);
    }
    // The laptop has its copy, so the phone's was stored too: it was skipped, not sent.
    let frames = sent_so_far(&mut phone).await;
    assert!(
        !frames.iter().any(|f| matches!(f, Frame::Deliver(_))),
        "the acting device got its own event: {frames:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subject_over_256_bytes_is_invalid() {
    let server = TestServer::start().await;
    let mut ann = caught_up(&server, "ann", "phone").await;
    let too_long = "s".repeat(257);
    let response = request(
        &mut ann,
        1,
        Op::Create(CreateGroup {
            subject: too_long.clone(),
            members: vec!["bob".into()],
        }),
    )
    .await;
    assert_eq!(response.error(), ErrorCode::InvalidArgument, "{response:?}");
    let group = create(&mut ann, &["bob"]).await;
    let set = |subject: &str| {
        Op::SetSubject(GroupSubject {
            group_id: group.clone(),
            subject: subject.to_owned(),
        })
    };
    let response = request(&mut ann, 2, set(&too_long)).await;
    assert_eq!(response.error(), ErrorCode::InvalidArgument, "{response:?}");
    let response = request(&mut ann, 3, set(&"s".repeat(256))).await;
    assert_eq!(response.error(), ErrorCode::Unspecified, "{response:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_only_admin_leaves_the_heir_is_announced_as_promoted() {
    let server = TestServer::start().await;
    let mut ann = caught_up(&server, "ann", "phone").await;
    let group = create(&mut ann, &["bob", "cat"]).await;
    let mut cat = caught_up(&server, "cat", "phone").await;
    let response = request(&mut ann, 2, Op::Leave(group_ref(&group))).await;
    assert_eq!(response.error(), ErrorCode::Unspecified, "{response:?}");

    // bob joined first (creation order): he is promoted, announced before the LEFT.
    // (The CREATED may have come with cat's catch-up, or live.)
    let mut promoted = next_event(&mut cat).await;
    if promoted.kind() == GroupEventKind::Created {
        promoted = next_event(&mut cat).await;
    }
    assert_eq!(promoted.kind(), GroupEventKind::Promoted, "{promoted:?}");
    assert_eq!(promoted.users, vec!["bob".to_owned()]);
    assert_eq!(promoted.actor, "ann");
    let left = next_event(&mut cat).await;
    assert_eq!(left.kind(), GroupEventKind::Left, "{left:?}");
    assert_eq!(left.users, vec!["ann".to_owned()]);
    assert_eq!(left.group_seq, promoted.group_seq + 1);

    // An admin leaving while another admin stays promotes nobody.
    let mut bob = caught_up(&server, "bob", "phone").await;
    let promote = Op::Promote(tern::proto::v1::GroupMembers {
        group_id: group.clone(),
        users: vec!["cat".into()],
    });
    assert_eq!(request(&mut bob, 1, promote).await.error, 0);
    assert_eq!(next_event(&mut cat).await.kind(), GroupEventKind::Promoted);
    assert_eq!(
        request(&mut bob, 2, Op::Leave(group_ref(&group)))
            .await
            .error,
        0
    );
    assert_eq!(next_event(&mut cat).await.kind(), GroupEventKind::Left);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_by_lists_a_member_from_its_joining_event_and_the_author_only_after_its_receipt() {
    let server = TestServer::start().await;
    let mut ann = caught_up(&server, "ann", "phone").await;
    let group = create(&mut ann, &["bob"]).await;
    ann.writer
        .send_group_text("m1", &group, "hello")
        .await
        .expect("post");
    let seq = next_ack(&mut ann.reader).await.seq;
    assert_eq!(seq, 2);

    // Positions start at the event that added the member: everybody has "read" the creation.
    let created = read_by(&mut ann, 2, &group, 1).await;
    assert_eq!(created.read, vec!["ann".to_owned(), "bob".to_owned()]);
    // Nobody, the author included, has read the message yet.
    let message = read_by(&mut ann, 3, &group, seq).await;
    assert!(
        message.read.is_empty() && message.delivered.is_empty(),
        "{message:?}"
    );
    // The author appears once it sends a receipt covering its own message.
    ann.writer
        .group_receipt(&group, ReceiptKind::Read, seq)
        .await
        .expect("receipt");
    eventually("ann's receipt applied", async || {
        read_by(&mut ann, 4, &group, seq).await.read == vec!["ann".to_owned()]
    })
    .await;
    server.stop().await;
}
