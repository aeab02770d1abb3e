//! Media index changes are durable against power loss when they are answered: the index is not
//! left to sled's flush (which stops at `sync_file_range`) but fsynced, and each such sync is
//! counted in `tern_media_index_sync_seconds`. Alone in its binary, so no other test's uploads
//! move the count.

mod common;
mod media_support;

use common::*;
use media_support::*;

async fn syncs(server: &TestServer) -> f64 {
    server
        .metric("tern_media_index_sync_seconds_count")
        .await
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creation_and_completion_are_fsynced_before_they_are_answered() {
    let server = TestServer::start().await;
    let alice = Tus::new(server.media, &server.token("alice", "phone"));
    let data = content(10_000, 3);
    let at_start = syncs(&server).await;

    let path = alice.create(data.len() as u64, "").await;
    assert_eq!(
        syncs(&server).await,
        at_start + 1.0,
        "the new upload's record is durable when 201 is answered"
    );
    let first = alice.patch(&path, 0, &data[..4_000]).await;
    assert_eq!(first.status, 204, "{}", first.text());
    let last = alice.patch(&path, 4_000, &data[4_000..]).await;
    assert_eq!(last.status, 204, "{}", last.text());
    assert_eq!(
        syncs(&server).await,
        at_start + 2.0,
        "the completion is durable when the last PATCH is answered"
    );
    let download = alice.get(&path, &[]).await;
    assert_eq!(download.status, 200);
    assert_eq!(download.body, data);
}
