//! Floods and trickles from one connection: every frame kind is bounded in rate or in memory, and
//! a frame that never completes is cut; no answer the server sends outgrows the frame limit.

mod common;
use common::*;

use prost::Message;
use tern::proto::v1::client_frame::Frame as In;
use tern::proto::v1::group_request::Op;
use tern::proto::v1::server_frame::Frame;
use tern::proto::v1::{
    CreateGroup, DeviceAck, ErrorCode, GoAwayReason, GroupMembers, GroupRef, GroupResponse,
    ListGroups, ReadBy, ServerFrame, group_response,
};

/// Waits for the close and checks that the last frame before it was `GoAway{FLOOD}`.
async fn closed_with_flood(reader: &mut tern::client::ClientReader) -> Vec<Frame> {
    let frames = until_closed(reader).await;
    match frames.last() {
        Some(Frame::GoAway(go_away)) => assert_eq!(go_away.reason(), GoAwayReason::Flood),
        _ => panic!(
            "expected GoAway FLOOD before the close, got {} frames ending {:?}",
            frames.len(),
            frames.last()
        ),
    }
    frames
}

/// A server that allows 10 frames a second, in bursts of 20.
async fn rate_limited_server() -> TestServer {
    TestServer::start_with(|c| {
        c.limits.frames_per_sec = 10;
        c.limits.frame_burst = 20;
    })
    .await
}

/// Checks that a flood was counted (metrics are per process; tests of this file run side by
/// side, so at least one).
async fn assert_flood_counted(server: &TestServer) {
    let floods = server.metric("tern_errors_total{kind=\"flood\"}").await;
    assert!(floods >= Some(1.0), "the flood is counted: {floods:?}");
}

/// The cursor of the next page: after the last entry of this one while there is more.
fn next_cursor(more: bool, last: Option<&String>) -> Option<String> {
    match (more, last) {
        (true, Some(last)) => Some(last.clone()),
        (false, _) => None,
        (true, None) => panic!("an empty page with more to come"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_ack_flood_is_cut_with_go_away_flood() {
    let server = rate_limited_server().await;
    let mut alice = server.ready("alice", "phone").await;
    // Acks that acknowledge nothing new (nothing was delivered), as fast as one write allows.
    for round in 0..20 {
        for _ in 0..1_000 {
            alice.writer.queue(In::Ack(DeviceAck { up_to_seq: round }));
        }
        if alice.writer.flush().await.is_err() {
            break;
        }
    }
    closed_with_flood(&mut alice.reader).await;
    assert_flood_counted(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_cut_for_flooding_is_refused_until_the_go_away_delay_passed() {
    let server = rate_limited_server().await;
    let mut alice = server.ready("alice", "phone").await;
    let mut raw = Vec::new();
    for _ in 0..200 {
        raw.extend_from_slice(&[0, 0, 0, 0]);
    }
    let _ = alice.writer.send_raw(&raw).await;
    let frames = closed_with_flood(&mut alice.reader).await;
    let Some(Frame::GoAway(go_away)) = frames.last() else {
        unreachable!("checked above");
    };
    let delay = std::time::Duration::from_millis(go_away.reconnect_after_ms.into());
    let cut_at = tokio::time::Instant::now();

    // Reconnecting at once does not buy a fresh burst: the login is refused.
    let mut again = server.connect().await;
    again
        .send(login_frame(1, &server.token("alice", "phone"), 0))
        .await
        .unwrap();
    let (mut reader, _writer) = again.split();
    closed_with_error(&mut reader, ErrorCode::RateLimited).await;
    // The user's other devices are not affected.
    server.ready("alice", "tablet").await;
    // Once the delay has passed, the device logs in again.
    tokio::time::sleep_until(cut_at + delay).await;
    server.ready("alice", "phone").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_reader_acking_every_delivery_is_not_limited() {
    let server = rate_limited_server().await;
    let mut bob = server.ready("bob", "phone").await;
    // 60 messages at 10 frames/s would take long from one phone: four senders share them.
    const N: u64 = 60;
    for sender in 0..4 {
        let mut alice = server.ready(&format!("alice{sender}"), "phone").await;
        for i in 0..N / 4 {
            alice
                .writer
                .send_text(&format!("m{i}"), "bob", "hi")
                .await
                .unwrap();
            next_ack(&mut alice.reader).await;
        }
    }
    // Bob acks every entry on its own, far above 10 frames a second: none is refused.
    let mut acked = 0;
    while acked < N {
        let deliver = next_deliver(&mut bob.reader).await;
        bob.writer.ack(deliver.seq).await.unwrap();
        acked = deliver.seq;
    }
    let rest = sync(&mut bob.reader, &mut bob.writer).await;
    assert!(
        rest.is_empty(),
        "acks of new deliveries were refused: {rest:?}"
    );
    drop(bob);
    let bob = server.phone("bob", "phone").await;
    assert_eq!(bob.welcome.cursor, N, "every ack moved the cursor");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_and_unknown_frames_are_rate_limited_then_cut() {
    let server = rate_limited_server().await;
    let mut alice = server.ready("alice", "phone").await;
    // Alternately a zero-length frame and a ClientFrame whose only field (case 15) this server
    // does not know.
    let mut raw = Vec::new();
    for i in 0..2_000 {
        if i % 2 == 0 {
            raw.extend_from_slice(&[0, 0, 0, 0]);
        } else {
            raw.extend_from_slice(&[0, 0, 0, 2, 0x7a, 0x00]);
        }
    }
    let _ = alice.writer.send_raw(&raw).await;
    let frames = closed_with_flood(&mut alice.reader).await;
    let code = |frame: &Frame| match frame {
        Frame::Error(error) => Some(error.code()),
        _ => None,
    };
    let violations = frames
        .iter()
        .filter(|f| code(f) == Some(ErrorCode::ProtocolViolation))
        .count();
    let limited = frames
        .iter()
        .filter(|f| code(f) == Some(ErrorCode::RateLimited))
        .count();
    assert!(violations > 0 && violations <= 40, "{violations} answered");
    assert!(limited > 0, "no RATE_LIMITED before the cut");
    assert_flood_counted(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_that_trickles_in_is_cut_after_the_frame_timeout() {
    let server = TestServer::start_with(|c| {
        c.limits.frame_timeout_secs = 2;
        c.limits.idle_timeout_secs = 300;
        c.limits.sweep_interval_ms = 100;
    })
    .await;
    let mut alice = server.ready("alice", "phone").await;
    // A length prefix near the limit and a few bytes; then one byte every 200 ms, which keeps
    // the connection active but never completes the frame.
    alice
        .writer
        .send_raw(&[0, 0, 0xff, 0x00, 0x3a, 0x02, 0x08])
        .await
        .unwrap();
    let trickle = async {
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            if alice.writer.send_raw(&[0]).await.is_err() {
                return;
            }
        }
    };
    let closed = closed_with_error(&mut alice.reader, ErrorCode::Timeout);
    tokio::select! {
        () = trickle => panic!("writes failed before the server answered"),
        _ = closed => {}
    }
    let timeouts = server
        .metric("tern_errors_total{kind=\"frame_timeout\"}")
        .await;
    assert!(
        timeouts >= Some(1.0),
        "the timeout is counted: {timeouts:?}"
    );
    // Frames that complete are not affected: a phone that pings stays.
    let mut bob = server.ready("bob", "phone").await;
    let rest = sync(&mut bob.reader, &mut bob.writer).await;
    assert!(rest.is_empty(), "{rest:?}");
}

/// A 64-byte user id, distinct per `i`.
fn long_id(i: usize) -> String {
    format!("{i:04}{}", "u".repeat(60))
}

/// Sends a group request and waits for its answer, checking the frame it came in.
async fn request(phone: &mut Phone, id: u64, op: Op, max_frame: usize) -> GroupResponse {
    phone.writer.group_request(id, op).await.unwrap();
    loop {
        let frame = next(&mut phone.reader).await;
        let len = ServerFrame {
            frame: Some(frame.clone()),
        }
        .encoded_len();
        match frame {
            Frame::GroupResponse(response) if response.request_id == id => {
                assert!(
                    len <= max_frame,
                    "a GroupResponse of {len} bytes exceeds max_frame_bytes {max_frame}"
                );
                return response;
            }
            Frame::Deliver(deliver) => phone.writer.ack(deliver.seq).await.unwrap(),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_info_and_read_by_of_1024_long_ids_page_within_the_frame_limit() {
    let server = TestServer::start_with(|c| {
        c.limits.frames_per_sec = 10_000;
        c.limits.frame_burst = 10_000;
    })
    .await;
    let max_frame = server.config.limits.max_frame_bytes as usize;
    let creator = long_id(0);
    let mut admin = server.ready(&creator, "phone").await;
    // 1,023 members besides the creator, in requests that each fit one frame.
    let others: Vec<String> = (1..1024).map(long_id).collect();
    let created = request(
        &mut admin,
        1,
        Op::Create(CreateGroup {
            subject: "big".into(),
            members: others[..500].to_vec(),
        }),
        max_frame,
    )
    .await;
    let group_id = match created.result {
        Some(group_response::Result::Info(info)) => info.group_id,
        other => panic!("create failed: {} {other:?}", created.message),
    };
    let added = request(
        &mut admin,
        2,
        Op::Add(GroupMembers {
            group_id: group_id.clone(),
            users: others[500..].to_vec(),
        }),
        max_frame,
    )
    .await;
    assert_eq!(added.error(), ErrorCode::Unspecified, "{added:?}");

    // Info, page by page, holds every member once, in order.
    let mut members = Vec::new();
    let mut pages = 0;
    let mut after = String::new();
    loop {
        let response = request(
            &mut admin,
            10 + pages,
            Op::Info(GroupRef {
                group_id: group_id.clone(),
                after: after.clone(),
            }),
            max_frame,
        )
        .await;
        let Some(group_response::Result::Info(info)) = response.result else {
            panic!("info failed: {response:?}");
        };
        pages += 1;
        members.extend(info.members.iter().map(|m| m.user.clone()));
        match next_cursor(info.more, info.members.last().map(|m| &m.user)) {
            Some(next) => after = next,
            None => break,
        }
    }
    let mut expected: Vec<String> = (0..1024).map(long_id).collect();
    expected.sort();
    assert_eq!(members, expected);
    assert!(
        pages >= 2,
        "1,024 members of 64-byte ids fit no single frame"
    );

    // Read-by of the first entry: every member's read position covers it.
    let mut readers = Vec::new();
    let mut after = String::new();
    for page in 0.. {
        let response = request(
            &mut admin,
            100 + page,
            Op::ReadBy(ReadBy {
                group_id: group_id.clone(),
                group_seq: 1,
                after: after.clone(),
            }),
            max_frame,
        )
        .await;
        let Some(group_response::Result::ReadBy(list)) = response.result else {
            panic!("read_by failed: {response:?}");
        };
        let page_users: Vec<String> = list.read.iter().chain(&list.delivered).cloned().collect();
        readers.extend(page_users.iter().cloned());
        if !list.more {
            break;
        }
        after = page_users.iter().max().cloned().expect("a non-empty page");
    }
    readers.sort();
    assert_eq!(readers, expected);
    assert_eq!(
        server.metric("tern_frames_oversized_total").await,
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_group_list_of_a_user_in_many_groups_pages_within_the_frame_limit() {
    let server = TestServer::start_with(|c| {
        c.limits.frames_per_sec = 10_000;
        c.limits.frame_burst = 10_000;
        c.limits.max_frame_bytes = 4096;
        c.limits.max_body_bytes = 2048;
        // 400 creations at once, far past the per-user limit (tests/abuse_limits.rs).
        c.limits.group_creates_per_min = 0;
    })
    .await;
    let max_frame = server.config.limits.max_frame_bytes as usize;
    let mut alice = server.ready("alice", "phone").await;
    // 400 groups of ~17-byte ids: about 7.6 KB of ids, two frames' worth.
    const GROUPS: u64 = 400;
    for id in 1..=GROUPS {
        alice
            .writer
            .group_request(
                id,
                Op::Create(CreateGroup {
                    subject: String::new(),
                    members: Vec::new(),
                }),
            )
            .await
            .unwrap();
    }
    let mut created = Vec::new();
    while (created.len() as u64) < GROUPS {
        match next(&mut alice.reader).await {
            Frame::GroupResponse(response) => match response.result {
                Some(group_response::Result::Info(info)) => created.push(info.group_id),
                other => panic!("create failed: {} {other:?}", response.message),
            },
            Frame::Deliver(deliver) => alice.writer.ack(deliver.seq).await.unwrap(),
            _ => {}
        }
    }
    created.sort();

    let mut request_id = 1_000;
    let mut listed = Vec::new();
    let mut pages = 0;
    eventually("every group is listed", async || {
        listed.clear();
        pages = 0;
        let mut after = String::new();
        loop {
            request_id += 1;
            let response = request(
                &mut alice,
                request_id,
                Op::List(ListGroups {
                    after: after.clone(),
                }),
                max_frame,
            )
            .await;
            let Some(group_response::Result::List(list)) = response.result else {
                panic!("list failed: {response:?}");
            };
            pages += 1;
            listed.extend(list.group_ids.iter().cloned());
            match next_cursor(list.more, list.group_ids.last()) {
                Some(next) => after = next,
                None => break,
            }
        }
        listed.len() == created.len()
    })
    .await;
    assert_eq!(listed, created);
    assert!(pages >= 2, "400 group ids fit no single 4 KiB frame");
    assert_eq!(
        server.metric("tern_frames_oversized_total").await,
        Some(0.0)
    );
}
