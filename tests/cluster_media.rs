//! Media in a replicated cluster (three child-process nodes, replication 3: one island), talked
//! to over HTTP like a phone: what is uploaded through one node downloads byte-identical through
//! the others (whole, by range, and conditionally); a tus upload interrupted on one node resumes
//! on another at the offset the first one acked; and when a node is killed with SIGKILL right
//! after its uploads were acked and its disk is lost, every object still downloads from the two
//! others, and the new node that replaces it (docs/operations.md, "Replacing a node that will
//! not come back") refills its replicas from its peers and serves them itself.

mod common;
mod media_support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::cluster::{Member, SETTLE, free_port, island_of, replicated_three, state_of, view};
use common::*;
use media_support::*;

/// Bytes per PATCH, as a phone's tus client would send them.
const CHUNK: usize = 256 * 1024;

const MIB: usize = 1024 * 1024;

/// How long a new node may take to copy every object from its peers (a bound on a hang, not a
/// timing assertion).
const REFILL_WAIT: Duration = Duration::from_secs(300);

/// Objects copied from peers by a node that lacked them.
const REFILL_OBJECTS: &str = "tern_media_refill_objects_total";
/// Bytes of those objects.
const REFILL_BYTES: &str = "tern_media_refill_bytes_total";
/// Downloads a node served by reading the object from another node.
const REMOTE_READS: &str = "tern_media_remote_reads_total";

/// Random bytes (splitmix64), the same for the same seed: incompressible, and no two uploads
/// alike (so deduplication does not fold them into one object).
fn random_bytes(length: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    let mut bytes = Vec::with_capacity(length + 8);
    while bytes.len() < length {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut mixed = state;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        bytes.extend_from_slice(&(mixed ^ (mixed >> 31)).to_le_bytes());
    }
    bytes.truncate(length);
    bytes
}

/// Fails with the lengths and the first differing byte (not two multi-megabyte dumps).
fn assert_same_bytes(what: &str, got: &[u8], expected: &[u8]) {
    if got != expected {
        let first = got
            .iter()
            .zip(expected)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(expected.len()));
        panic!(
            "{what}: got {} bytes, expected {}; they differ from byte {first} on",
            got.len(),
            expected.len()
        );
    }
}

/// The Upload-Metadata every upload here carries.
fn video() -> String {
    metadata(&[("filename", "clip.mp4"), ("filetype", "video/mp4")])
}

/// The strong ETag of `data`.
fn etag_of(data: &[u8]) -> String {
    format!("\"{}\"", sha256_hex(data))
}

/// The media listener of a running member.
fn media_of(member: &Member) -> SocketAddr {
    member.node.as_ref().expect("running").media
}

/// A tus client for `user`'s phone at `member`'s media listener (every node shares the token
/// key, so one token is good on all of them).
fn phone_at(member: &Member, user: &str) -> Tus {
    let token = member
        .key
        .sign(user, "phone", tern::clock::now_secs() + 3600)
        .expect("token");
    Tus::new(media_of(member), &token)
}

/// One series of `member`'s /metrics; 0 when it was never exported.
async fn metric_of(member: &Member, series: &str) -> f64 {
    metric_value(&http_get(member.admin(), "/metrics").await, series).unwrap_or(0.0)
}

/// Waits until every running member answers `GET /readyz` with 200.
async fn serving(members: &[Member]) {
    eventually_within(SETTLE, "every node is ready for phones", async || {
        for member in members.iter().filter(|member| member.node.is_some()) {
            let answer =
                tern::admin::request::request(member.admin(), "GET", "/readyz", None).await;
            if !matches!(answer, Ok((200, _))) {
                return false;
            }
        }
        true
    })
    .await;
}

/// Uploads `data` through `phone` in [`CHUNK`] PATCHes (each acked with the new offset).
async fn upload(phone: &Tus, data: &[u8]) -> String {
    phone.upload(data, &video(), CHUNK).await
}

/// GET `path` with `extra` headers through `phone`, asked again while the node answers 5xx (a
/// cluster that has just lost a node may turn a request away for a moment, and a phone would
/// ask again); any other answer is returned at once.
async fn download(phone: &Tus, path: &str, extra: &[(&str, &str)]) -> Response {
    let mut last = None;
    eventually_within(SETTLE, "a download that is not refused", async || {
        let response = phone.get(path, extra).await;
        let answered = response.status < 500;
        last = Some(response);
        answered
    })
    .await;
    last.expect("a response")
}

/// Checks that `phone` downloads exactly `data` at `path`: whole (with its ETag and type), the
/// range 1000-5000, the last 4000 bytes, and a 304 for its ETag.
async fn downloads_exactly(phone: &Tus, node: usize, path: &str, data: &[u8]) {
    let size = data.len();
    let etag = etag_of(data);
    let whole = download(phone, path, &[]).await;
    assert_eq!(
        whole.status,
        200,
        "GET {path} through node {node}: {}",
        whole.text()
    );
    assert_same_bytes(
        &format!("GET {path} through node {node}"),
        &whole.body,
        data,
    );
    assert_eq!(whole.header("ETag"), Some(etag.as_str()), "node {node}");
    assert_eq!(
        whole.header("Content-Type"),
        Some("video/mp4"),
        "node {node}"
    );
    assert_eq!(
        whole.header("Content-Length"),
        Some(size.to_string().as_str()),
        "node {node}"
    );

    let range = download(phone, path, &[("Range", "bytes=1000-5000")]).await;
    assert_eq!(
        range.status,
        206,
        "range through node {node}: {}",
        range.text()
    );
    assert_eq!(
        range.header("Content-Range"),
        Some(format!("bytes 1000-5000/{size}").as_str()),
        "node {node}"
    );
    assert_same_bytes(
        &format!("bytes 1000-5000 of {path} through node {node}"),
        &range.body,
        &data[1000..=5000],
    );
    let tail_start = size - 4000;
    let tail = format!("bytes={tail_start}-");
    let tail = download(phone, path, &[("Range", tail.as_str())]).await;
    assert_eq!(
        tail.status,
        206,
        "tail through node {node}: {}",
        tail.text()
    );
    assert_same_bytes(
        &format!("the last 4000 bytes of {path} through node {node}"),
        &tail.body,
        &data[tail_start..],
    );

    let cached = download(phone, path, &[("If-None-Match", etag.as_str())]).await;
    assert_eq!(cached.status, 304, "If-None-Match through node {node}");
    assert!(cached.body.is_empty(), "a 304 with a body");
    assert_eq!(cached.header("ETag"), Some(etag.as_str()), "node {node}");
}

/// Starts node `ordinal` as a new machine joining the running cluster (a spare until a member is
/// removed), with an empty data directory under `dir`: `template`'s configuration with its own
/// node id, ordinal and mesh port, and itself added to the seeds (the members' seeds do not name
/// it: it announces itself to them).
fn join_new_node(dir: &Path, template: &Member, ordinal: u64) -> Member {
    let text = std::fs::read_to_string(&template.config).expect("template config");
    let (base, cluster) = text
        .split_once("\n[cluster]\n")
        .expect("a [cluster] section at the end");
    let base: Vec<String> = base
        .lines()
        .map(|line| {
            if line.starts_with("id = \"tern-") {
                format!("id = \"tern-{ordinal}\"")
            } else {
                line.to_owned()
            }
        })
        .collect();
    let port = free_port();
    let cluster: Vec<String> = cluster
        .lines()
        .map(|line| {
            if line.starts_with("node = ") {
                format!("node = {ordinal}")
            } else if line.starts_with("listen = ") {
                format!("listen = \"127.0.0.1:{port}\"")
            } else if line == "seeds = [" {
                format!("seeds = [\n    {{ node = {ordinal}, addr = \"127.0.0.1:{port}\" }},")
            } else {
                line.to_owned()
            }
        })
        .collect();
    let text = format!("{}\n[cluster]\n{}\n", base.join("\n"), cluster.join("\n"));
    assert!(
        text.contains(&format!("id = \"tern-{ordinal}\""))
            && text.contains(&format!("\nnode = {ordinal}\n"))
            && text.contains(&format!("listen = \"127.0.0.1:{port}\"")),
        "the template configuration did not take the new node's values:\n{text}"
    );
    let node_dir = dir.join(format!("node-{ordinal}"));
    std::fs::create_dir_all(&node_dir).expect("node dir");
    let config = node_dir.join("node.toml");
    std::fs::write(&config, text).expect("write config");
    let data = node_dir.join("data");
    let node = ChildNode::start(&config, &data);
    Member {
        config,
        data,
        key: template.key.clone(),
        node: Some(node),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploaded_through_one_node_downloads_through_the_others() {
    let dir = tempfile::tempdir().expect("tempdir");
    let members = replicated_three(dir.path()).await;
    serving(&members).await;

    let alice = phone_at(&members[0], "alice");
    let sizes = [100 * 1024, 333_333, 700 * 1024 + 5, MIB, 1_500_000, 2 * MIB];
    let mut uploaded = Vec::new();
    for (index, size) in sizes.into_iter().enumerate() {
        let data = random_bytes(size, 0xA000 + index as u64);
        let path = upload(&alice, &data).await;
        uploaded.push((path, data));
    }

    for (index, member) in members.iter().enumerate().skip(1) {
        let bob = phone_at(member, "bob");
        for (path, data) in &uploaded {
            downloads_exactly(&bob, index + 1, path, data).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_interrupted_on_one_node_resumes_on_another() {
    let dir = tempfile::tempdir().expect("tempdir");
    let members = replicated_three(dir.path()).await;
    serving(&members).await;
    let data = random_bytes(4 * MIB, 0xB000);
    let half = data.len() / 2;

    // The first half through node 1, PATCH by PATCH.
    let on_first = phone_at(&members[0], "carol");
    let path = on_first.create(data.len() as u64, &video()).await;
    let mut acked = 0;
    for part in data[..half].chunks(CHUNK) {
        let response = on_first.patch(&path, acked as u64, part).await;
        assert_eq!(response.status, 204, "PATCH on node 1: {}", response.text());
        acked += part.len();
        assert_eq!(
            response.header("Upload-Offset"),
            Some(acked.to_string().as_str())
        );
    }

    // The app comes back on node 2 (node 1 is gone from its point of view) and asks where to
    // resume: exactly what node 1 acked.
    let on_second = phone_at(&members[1], "carol");
    let head = on_second.head(&path).await;
    assert_eq!(head.status, 200, "HEAD on node 2: {}", head.text());
    assert_eq!(
        head.header("Upload-Offset"),
        Some(acked.to_string().as_str()),
        "node 2 does not know what node 1 acked"
    );
    assert_eq!(
        head.header("Upload-Length"),
        Some(data.len().to_string().as_str())
    );
    let mut offset = acked;
    for (index, part) in data[half..].chunks(CHUNK).enumerate() {
        let response = on_second.patch(&path, offset as u64, part).await;
        assert_eq!(response.status, 204, "PATCH on node 2: {}", response.text());
        offset += part.len();
        assert_eq!(
            response.header("Upload-Offset"),
            Some(offset.to_string().as_str())
        );
        if index == 0 {
            // Node 1 now knows the upload moved on: a late PATCH at its old offset is refused
            // with the current one, not appended a second time.
            assert_eq!(on_first.offset(&path).await, offset as u64);
            let stale = on_first.patch(&path, acked as u64, part).await;
            assert_eq!(
                stale.status,
                409,
                "a stale PATCH on node 1: {}",
                stale.text()
            );
            assert_eq!(
                stale.header("Upload-Offset"),
                Some(offset.to_string().as_str())
            );
        }
    }
    assert_eq!(offset, data.len());

    // Finished: node 3 serves the whole, and so does node 1, where it began.
    for (index, member) in members.iter().enumerate().rev() {
        let dave = phone_at(member, "dave");
        let whole = dave.get(&path, &[]).await;
        assert_eq!(
            whole.status,
            200,
            "GET through node {}: {}",
            index + 1,
            whole.text()
        );
        assert_eq!(
            sha256_hex(&whole.body),
            sha256_hex(&data),
            "sha256 through node {}",
            index + 1
        );
        assert_same_bytes(
            &format!("GET through node {}", index + 1),
            &whole.body,
            &data,
        );
        assert_eq!(whole.header("ETag"), Some(etag_of(&data).as_str()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_loses_no_media() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut members = replicated_three(dir.path()).await;
    serving(&members).await;

    // Below and above the hot cache's 1 MiB object limit, and across PATCH boundaries.
    let sizes = [
        64 * 1024,
        200_000,
        512 * 1024 + 3,
        MIB - 1,
        1_300_000,
        2 * MIB,
        3 * MIB + 17,
    ];
    let erin = phone_at(&members[0], "erin");
    let mut uploaded = Vec::new();
    for (index, size) in sizes.into_iter().enumerate() {
        let data = random_bytes(size, 0xC000 + index as u64);
        let path = upload(&erin, &data).await;
        uploaded.push((path, data));
    }

    // At once after the last ack, the node that took every upload dies and its disk is lost.
    members[0].node.take().expect("running").kill();
    std::fs::remove_dir_all(&members[0].data).expect("wipe node 1's data directory");

    for (index, member) in members.iter().enumerate().skip(1) {
        let frank = phone_at(member, "frank");
        for (path, data) in &uploaded {
            downloads_exactly(&frank, index + 1, path, data).await;
        }
    }

    // A new machine joins as node 4; once node 1 is down an operator removes it, and node 4
    // takes its place in the island.
    let newcomer = join_new_node(dir.path(), &members[2], 4);
    members.push(newcomer);
    let asked = members[1].admin();
    eventually_within(SETTLE, "node 1 is marked down", async || {
        state_of(&view(asked).await, 1) == "down"
    })
    .await;
    let (status, body) = admin_post(asked, "/cluster/nodes/1/remove").await;
    assert_eq!(status, 200, "removing node 1: {body}");
    eventually_within(SETTLE, "node 4 takes node 1's place", async || {
        let seen = view(members[3].admin()).await;
        let island = island_of(&seen);
        island.len() == 3 && island.contains(&4) && !island.contains(&1)
    })
    .await;

    // It copies every object from its peers.
    let objects = uploaded.len() as f64;
    let bytes: usize = uploaded.iter().map(|(_, data)| data.len()).sum();
    let newcomer = &members[3];
    eventually_within(REFILL_WAIT, "node 4 refilled every object", async || {
        metric_of(newcomer, REFILL_OBJECTS).await >= objects
    })
    .await;
    let refilled = metric_of(newcomer, REFILL_BYTES).await;
    assert!(
        refilled >= bytes as f64,
        "node 4 refilled {refilled} bytes of {bytes}"
    );

    // And serves them from its own disk.
    serving(&members).await;
    let remote_before = metric_of(newcomer, REMOTE_READS).await;
    let grace = phone_at(newcomer, "grace");
    for (path, data) in &uploaded {
        downloads_exactly(&grace, 4, path, data).await;
    }
    assert_eq!(
        metric_of(newcomer, REMOTE_READS).await,
        remote_before,
        "node 4 read objects from its peers that it had refilled"
    );
}

/// `POST /drain` on the node a PATCH is streaming through (the phone's network went quiet
/// mid-body): the node exits, what it committed stays, and the phone finishes the upload
/// through another node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_cut_by_a_drain_finishes_through_another_node() {
    use tokio::io::AsyncWriteExt as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut members = replicated_three(dir.path()).await;
    serving(&members).await;
    let data = random_bytes(3 * MIB, 0xD000);
    let on_first = phone_at(&members[0], "dave");
    let on_second = phone_at(&members[1], "dave");
    let path = on_first.create(data.len() as u64, &video()).await;

    // Two full pieces and a little more, then silence: the request stays open.
    let sent = 2 * MIB + 1000;
    let mut stream = tokio::net::TcpStream::connect(media_of(&members[0]))
        .await
        .expect("connect");
    let head = request_head(
        "PATCH",
        &path,
        &[
            ("Tus-Resumable", "1.0.0"),
            ("Authorization", on_first.bearer.as_str()),
            ("Upload-Offset", "0"),
            ("Content-Type", "application/offset+octet-stream"),
        ],
        Some(data.len()),
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    stream.write_all(&data[..sent]).await.expect("body");
    stream.flush().await.expect("flush");
    eventually_within(SETTLE, "node 2 sees the first two pieces", async || {
        on_second.offset(&path).await >= (2 * MIB) as u64
    })
    .await;

    assert_eq!(admin_post(members[0].admin(), "/drain").await.0, 202);
    let exit = wait_for_exit(members[0].node.take().expect("running")).await;
    assert!(exit.success(), "a drained node exits 0, got {exit:?}");
    drop(stream);

    let offset = on_second.offset(&path).await as usize;
    assert!(
        (2 * MIB..=sent).contains(&offset),
        "after the drain node 2 says {offset}: it must keep the committed pieces and nothing \
         past what was sent"
    );
    let response = on_second.patch(&path, offset as u64, &data[offset..]).await;
    assert_eq!(
        response.status,
        204,
        "the rest through node 2: {}",
        response.text()
    );
    let third = phone_at(&members[2], "erin");
    let got = third.get(&path, &[]).await;
    assert_eq!(got.status, 200, "GET through node 3: {}", got.text());
    assert_same_bytes("the drained upload through node 3", &got.body, &data);
}

/// Six nodes, replication 3: two islands. Uploads and objects land on either island (by id and
/// by digest), and every node serves every object, the ones held on the other island streamed
/// from it; an upload begun on one island resumes through a node of the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_islands_serve_each_others_media() {
    let dir = tempfile::tempdir().expect("tempdir");
    let members = common::cluster::start_cluster(dir.path(), 6, 3);
    let mut islands: Vec<Vec<u64>> = Vec::new();
    eventually_within(
        SETTLE,
        "two islands of three, every group led",
        async || {
            let map = view(members[0].admin()).await;
            islands = map["map"]["islands"]
                .as_array()
                .map(|islands| {
                    islands
                        .iter()
                        .map(|island| {
                            island["members"]
                                .as_array()
                                .map(|m| m.iter().filter_map(|n| n.as_u64()).collect())
                                .unwrap_or_default()
                        })
                        .collect()
                })
                .unwrap_or_default();
            islands.len() == 2
                && islands.iter().all(|island| island.len() == 3)
                && common::cluster::all_led(&members).await
        },
    )
    .await;
    serving(&members).await;

    let alice = phone_at(&members[0], "alice");
    let mut uploaded = Vec::new();
    for index in 0..8 {
        let data = random_bytes(200 * 1024 + index * 77_777, 0xE000 + index as u64);
        let path = upload(&alice, &data).await;
        uploaded.push((path, data));
    }
    for (index, member) in members.iter().enumerate() {
        let bob = phone_at(member, "bob");
        for (path, data) in &uploaded {
            downloads_exactly(&bob, index + 1, path, data).await;
        }
    }
    let mut remote = 0.0;
    for member in &members {
        remote += metric_of(member, REMOTE_READS).await;
    }
    assert!(
        remote > 0.0,
        "some node must have streamed an object held on the other island"
    );

    // Begun through node 1, resumed through a node of the other island.
    let other = islands
        .iter()
        .find(|island| !island.contains(&1))
        .and_then(|island| island.first().copied())
        .expect("a node off node 1's island");
    let data = random_bytes(3 * MIB, 0xE100);
    let path = alice.create(data.len() as u64, &video()).await;
    let half = data.len() / 2;
    assert_eq!(alice.patch(&path, 0, &data[..half]).await.status, 204);
    let far = phone_at(&members[(other - 1) as usize], "alice");
    assert_eq!(far.offset(&path).await, half as u64);
    let response = far.patch(&path, half as u64, &data[half..]).await;
    assert_eq!(
        response.status,
        204,
        "the rest through node {other}: {}",
        response.text()
    );
    for (index, member) in members.iter().enumerate() {
        downloads_exactly(&phone_at(member, "bob"), index + 1, &path, &data).await;
    }
}
