//! Draining a node (`tern drain`, `POST /drain`, as SIGTERM): its admin actions need the admin
//! token; `/readyz` is 503 while it recovers and once it drains, 200 otherwise; its phones get
//! GoAway with the other nodes' addresses and a reconnect delay within the window; it exits 0.
//! In a cluster the drained node (the metadata leader here) hands every leadership over while
//! senders keep sending, comes back, is ready again and leads its share, and every acked message
//! drains exactly once at its seq.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::cluster::{
    Member, SETTLE, Senders, all_led, check_every_acked, led, login_at, replicated_three, view,
};
use common::*;
use tern::admin::request::request;
use tern::proto::v1::{GoAway, GoAwayReason, server_frame::Frame};

/// `GET /readyz`: the status, or 0 when nothing answers.
async fn readyz(admin: SocketAddr) -> (u16, String) {
    request(admin, "GET", "/readyz", None)
        .await
        .unwrap_or((0, String::new()))
}

/// Runs `tern drain` for the node with `config` at `admin`; its exit code and output.
async fn tern_drain(config: &Path, admin: SocketAddr) -> (Option<i32>, String) {
    let config = config.to_owned();
    tokio::task::spawn_blocking(move || {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_tern"))
            .args(["drain", "--timeout", "60", "--config"])
            .arg(&config)
            .args(["--admin", &admin.to_string()])
            .output()
            .expect("tern drain");
        let text = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        (output.status.code(), text)
    })
    .await
    .expect("drain runner")
}

/// Reads frames until a GoAway (fails the test if the connection ends first).
async fn go_away(reader: &mut tern::client::ClientReader) -> GoAway {
    loop {
        if let Frame::GoAway(go_away) = next(reader).await {
            return go_away;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_recovery_and_drain_and_a_drain_needs_the_admin_token() {
    let files = ChildFiles::new(&[("reconnect_window_ms = 5000", "reconnect_window_ms = 2000")]);
    let admin_port = common::cluster::free_port();
    let admin: SocketAddr = format!("127.0.0.1:{admin_port}").parse().expect("addr");
    let text = std::fs::read_to_string(&files.config_path).expect("config");
    let text = text.replacen(
        "admin_addr = \"127.0.0.1:0\"",
        &format!("admin_addr = \"{admin}\""),
        1,
    );
    std::fs::write(&files.config_path, text).expect("config");

    // Recovery held for 3 s (a debug-build hook): the admin port answers, not ready.
    let delay = std::ffi::OsString::from("3000");
    let starting = {
        let (config, data) = (files.config_path.clone(), files.data.clone());
        std::thread::spawn(move || {
            ChildNode::start_with_env(
                &config,
                &data,
                &[("TERN_DEBUG_RECOVERY_DELAY_MS", delay.as_os_str())],
            )
        })
    };
    let mut first = (0, String::new());
    eventually_within(WAIT, "the admin port answers during recovery", async || {
        first = readyz(admin).await;
        first.0 != 0
    })
    .await;
    assert_eq!(first.0, 503, "during recovery: {first:?}");
    assert!(first.1.contains("recovering"), "{first:?}");
    let node = starting.join().expect("node started");
    assert_eq!(readyz(admin).await, (200, "ready\n".to_owned()));

    // Without the token, or with a wrong one, nothing happens.
    assert_eq!(
        request(admin, "POST", "/drain", None)
            .await
            .expect("answers")
            .0,
        401
    );
    let wrong = request(admin, "POST", "/drain", Some("not-the-token-at-all")).await;
    assert_eq!(wrong.expect("answers").0, 401);
    assert_eq!(readyz(admin).await.0, 200);

    let (mut bob, _bob_out) = child_login(node.client, &files.key, "bob", "phone")
        .await
        .split();
    assert!(matches!(next(&mut bob).await, Frame::QueueDrained(_)));
    assert_eq!(admin_post(admin, "/drain").await.0, 202);
    // From the drain on, never ready again (until the port closes with the process).
    let after = readyz(admin).await;
    assert!(after.0 == 503 || after.0 == 0, "{after:?}");
    let told = go_away(&mut bob).await;
    assert_eq!(told.reason(), GoAwayReason::Shutdown);
    assert!(told.reconnect_after_ms < 2000, "{told:?}");
    assert!(
        told.alternate_addrs.is_empty(),
        "a single node names no other"
    );
    let status = wait_for_exit(node).await;
    assert_eq!(status.code(), Some(0), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_that_hands_nothing_over_loses_nothing_acked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut members = replicated_three(dir.path()).await;
    // Node 1 runs with a drain that hands nothing over (a debug-build hook): it exits while it
    // still leads its groups, as a drain whose peers could not take over in time would.
    members[0].node.take().expect("running").kill();
    let hold = std::ffi::OsString::from("1");
    members[0].node = Some(ChildNode::start_with_env(
        &members[0].config,
        &members[0].data,
        &[("TERN_DEBUG_DRAIN_NO_HANDOVER", hold.as_os_str())],
    ));
    eventually_within(SETTLE, "node 1 leads its share again", async || {
        led(&members[0]).await >= 2.0
    })
    .await;
    let senders = Senders::start(&members, 6);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (code, output) = tern_drain(&members[0].config, members[0].admin()).await;
    assert_eq!(code, Some(0), "tern drain: {output}");
    senders.set(0, None);
    let node = members[0].node.take().expect("was running");
    assert_eq!(wait_for_exit(node).await.code(), Some(0));
    eventually_within(SETTLE, "the others lead every group", async || {
        all_led(&members).await
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    members[0].node = Some(ChildNode::start(&members[0].config, &members[0].data));
    senders.set(0, Some(members[0].client()));
    eventually_within(SETTLE, "node 1 is ready again", async || {
        readyz(members[0].admin()).await.0 == 200
    })
    .await;
    let acked = senders.stop().await;
    check_every_acked(&members, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_metadata_leader_hands_everything_over_comes_back_and_nothing_is_lost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut members = replicated_three(dir.path()).await;
    let senders = Senders::start(&members, 6);
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The metadata leader is drained; a phone on it is told where to go.
    let leader = view(members[0].admin()).await["leader"]
        .as_u64()
        .expect("a metadata leader");
    let victim = (leader - 1) as usize;
    let others: Vec<String> = (0..3)
        .filter(|index| *index != victim)
        .map(|index| members[index].client().to_string())
        .collect();
    let (mut watcher, _watcher_out) = login_at(&members[victim], "watcher", "phone").await.split();
    let admin = members[victim].admin();
    let draining = tokio::spawn({
        let config = members[victim].config.clone();
        async move { tern_drain(&config, admin).await }
    });
    let told = go_away(&mut watcher).await;
    assert_eq!(told.reason(), GoAwayReason::Shutdown);
    assert!(told.reconnect_after_ms < 5000, "{told:?}");
    let mut named = told.alternate_addrs.clone();
    named.sort();
    let mut others = others;
    others.sort();
    assert_eq!(named, others, "the GoAway names the other nodes");
    let (code, output) = draining.await.expect("drain");
    assert_eq!(code, Some(0), "tern drain: {output}");
    senders.set(victim, None);
    let node = members[victim].node.take().expect("was running");
    assert_eq!(wait_for_exit(node).await.code(), Some(0));

    // The others lead everything, the metadata group included.
    let survivor = &members[(victim + 1) % 3];
    eventually_within(SETTLE, "the others lead every group", async || {
        all_led(&members).await
    })
    .await;
    let seen = view(survivor.admin()).await;
    assert_ne!(seen["leader"].as_u64(), Some(leader), "{seen}");

    // Back: ready once caught up, leading its share again.
    members[victim].node = Some(ChildNode::start(
        &members[victim].config,
        &members[victim].data,
    ));
    senders.set(victim, Some(members[victim].client()));
    let back: &Member = &members[victim];
    eventually_within(
        SETTLE,
        "the drained node is ready and leads its share",
        async || readyz(back.admin()).await.0 == 200 && led(back).await >= 2.0,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let acked = senders.stop().await;
    check_every_acked(&members, &acked).await;
}
