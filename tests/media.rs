//! The media server over real HTTP: tus uploads in chunks, interruption and resume, downloads
//! whole and by range, ETags, deduplication, termination, expiry, limits, and media messages.

mod common;
mod media_support;

use common::*;
use media_support::*;
use prost::Message as _;
use tern::proto::v1::{ErrorCode, MediaRef, MessageKind, Send, client_frame};
use tokio::io::AsyncWriteExt;

/// Files directly under `dir` and one level below.
fn files_under(dir: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .map(|entry| entry.unwrap().path())
        .map(|path| {
            if path.is_dir() {
                std::fs::read_dir(path).unwrap().count()
            } else {
                1
            }
        })
        .sum()
}

fn media_dir(server: &TestServer) -> std::path::PathBuf {
    server.config.node.data_dir.join("media")
}

/// A node in a child process of its own. Metrics are process-wide, and other tests in this
/// binary run in parallel in this process; a child's `/metrics` counts only what its own test
/// did, so its figures can be asserted exactly.
struct OwnNode {
    files: ChildFiles,
    node: ChildNode,
}

impl OwnNode {
    /// Starts `tern serve` on the shipped config with each (from, to) replacement applied.
    fn start(replacements: &[(&str, &str)]) -> Self {
        let files = ChildFiles::new(replacements);
        let node = files.start();
        Self { files, node }
    }

    /// A tus client for `user`'s phone.
    fn tus(&self, user: &str) -> Tus {
        let token = self
            .files
            .key
            .sign(user, "phone", tern::clock::now_secs() + 3600)
            .expect("token");
        Tus::new(self.node.media, &token)
    }

    /// One series of this node's metrics; 0 when it was never exported.
    async fn metric(&self, series: &str) -> f64 {
        metric_value(&http_get(self.node.admin, "/metrics").await, series).unwrap_or(0.0)
    }

    fn media_dir(&self) -> std::path::PathBuf {
        self.files.data.join("media")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_in_chunks_then_download_whole_by_range_and_conditionally() {
    let server = TestServer::start().await;
    let alice = Tus::new(server.media, &server.token("alice", "phone"));
    let data = content(300 * 1024 + 7, 1);
    let meta = metadata(&[("filename", "cat.png"), ("filetype", "image/png")]);

    let created = alice.create_raw(data.len() as u64, &meta).await;
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(created.header("Tus-Resumable"), Some("1.0.0"));
    assert!(created.header("Upload-Expires").unwrap().ends_with(" GMT"));
    let path = created.header("Location").unwrap().to_owned();
    assert!(
        path.starts_with("/media/") && path.len() == "/media/".len() + 32,
        "{path}"
    );
    let head = alice.head(&path).await;
    assert_eq!(head.header("Upload-Offset"), Some("0"));
    assert_eq!(
        head.header("Upload-Length"),
        Some(data.len().to_string().as_str())
    );
    assert_eq!(head.header("Upload-Metadata"), Some(meta.as_str()));
    assert_eq!(head.header("Cache-Control"), Some("no-store"));

    // Three PATCHes: 100 KiB, 100 KiB, the rest.
    let mut offset = 0;
    for part in data.chunks(100 * 1024) {
        let response = alice.patch(&path, offset, part).await;
        assert_eq!(response.status, 204, "{}", response.text());
        offset += part.len() as u64;
        assert_eq!(
            response.header("Upload-Offset"),
            Some(offset.to_string().as_str())
        );
        assert_eq!(alice.offset(&path).await, offset);
    }

    // Any logged-in user with the id may download.
    let bob = Tus::new(server.media, &server.token("bob", "phone"));
    let whole = bob.get(&path, &[]).await;
    assert_eq!(whole.status, 200);
    assert_eq!(whole.body, data);
    let etag = format!("\"{}\"", sha256_hex(&data));
    assert_eq!(whole.header("ETag"), Some(etag.as_str()));
    assert_eq!(whole.header("Content-Type"), Some("image/png"));
    assert_eq!(
        whole.header("Content-Length"),
        Some(data.len().to_string().as_str())
    );
    assert_eq!(whole.header("Accept-Ranges"), Some("bytes"));
    assert!(whole.header("Cache-Control").unwrap().contains("immutable"));

    let size = data.len();
    let range = bob.get(&path, &[("Range", "bytes=1000-1999")]).await;
    assert_eq!(range.status, 206);
    assert_eq!(range.body, &data[1000..2000]);
    assert_eq!(
        range.header("Content-Range"),
        Some(format!("bytes 1000-1999/{size}").as_str())
    );
    let suffix = bob.get(&path, &[("Range", "bytes=-10")]).await;
    assert_eq!(suffix.status, 206);
    assert_eq!(suffix.body, &data[size - 10..]);
    let open_ended = bob.get(&path, &[("Range", "bytes=300000-")]).await;
    assert_eq!(open_ended.body, &data[300_000..]);

    let past_end = format!("bytes={size}-");
    let unsatisfiable = bob.get(&path, &[("Range", past_end.as_str())]).await;
    assert_eq!(unsatisfiable.status, 416);
    assert_eq!(
        unsatisfiable.header("Content-Range"),
        Some(format!("bytes */{size}").as_str())
    );

    let cached = bob.get(&path, &[("If-None-Match", etag.as_str())]).await;
    assert_eq!(cached.status, 304);
    assert!(cached.body.is_empty());
    assert_eq!(cached.header("ETag"), Some(etag.as_str()));
    let changed = bob
        .get(&path, &[("If-None-Match", "\"something-else\"")])
        .await;
    assert_eq!(changed.status, 200);

    // If-Range with another validator: the whole object instead of the range.
    let stale = bob
        .get(&path, &[("Range", "bytes=0-0"), ("If-Range", "\"old\"")])
        .await;
    assert_eq!(stale.status, 200);
    assert_eq!(stale.body.len(), size);

    // HEAD without Tus-Resumable: the download's headers.
    let bearer = format!("Bearer {}", server.token("bob", "phone"));
    let plain_head = request(
        server.media,
        "HEAD",
        &path,
        &[("Authorization", &bearer)],
        b"",
    )
    .await;
    assert_eq!(plain_head.status, 200);
    assert_eq!(plain_head.header("ETag"), Some(etag.as_str()));
    assert_eq!(
        plain_head.header("Content-Length"),
        Some(size.to_string().as_str())
    );
    // HEAD the tus way: finished, every byte there.
    assert_eq!(alice.offset(&path).await, size as u64);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creation_with_upload_and_an_empty_upload() {
    let server = TestServer::start().await;
    let alice = Tus::new(server.media, &server.token("alice", "phone"));
    let data = content(5000, 2);
    let headers = [
        ("Tus-Resumable", "1.0.0"),
        ("Authorization", alice.bearer.as_str()),
        ("Upload-Length", "8000"),
        ("Content-Type", "application/offset+octet-stream"),
    ];
    let created = request(server.media, "POST", "/media/", &headers, &data).await;
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(created.header("Upload-Offset"), Some("5000"));
    let path = created.header("Location").unwrap().to_owned();
    let rest = content(3000, 3);
    assert_eq!(alice.patch(&path, 5000, &rest).await.status, 204);
    let whole = alice.get(&path, &[]).await;
    assert_eq!(whole.body, [data, rest].concat());
    assert_eq!(
        whole.header("Content-Type"),
        Some("application/octet-stream")
    );

    // A zero-length upload is finished as soon as it is created.
    let empty = alice.create(0, "").await;
    let download = alice.get(&empty, &[]).await;
    assert_eq!(download.status, 200);
    assert!(download.body.is_empty());
    let range = alice.get(&empty, &[("Range", "bytes=0-")]).await;
    assert_eq!(range.status, 416);
    server.stop().await;
}

/// Starts a PATCH of all of `data` from offset 0 on a raw connection, sends only its first
/// `sent` bytes, and returns the connection (open, silent).
async fn partial_patch(
    server: &TestServer,
    alice: &Tus,
    path: &str,
    data: &[u8],
    sent: usize,
) -> tokio::net::TcpStream {
    let mut stream = tokio::net::TcpStream::connect(server.media).await.unwrap();
    let head = request_head(
        "PATCH",
        path,
        &[
            ("Tus-Resumable", "1.0.0"),
            ("Authorization", alice.bearer.as_str()),
            ("Upload-Offset", "0"),
            ("Content-Type", "application/offset+octet-stream"),
        ],
        Some(data.len()),
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&data[..sent]).await.unwrap();
    stream.flush().await.unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_patch_resumes_from_the_head_offset() {
    let server = TestServer::start().await;
    let alice = Tus::new(server.media, &server.token("alice", "phone"));
    let data = content(200_000, 4);
    let path = alice.create(data.len() as u64, "").await;

    // The connection drops after 120,000 of the 200,000 bytes it announced.
    drop(partial_patch(&server, &alice, &path, &data, 120_000).await);

    // What arrived was kept and made durable; the client resumes from there.
    eventually("the partial body is durable", async || {
        alice.offset(&path).await == 120_000
    })
    .await;
    let response = alice.patch(&path, 120_000, &data[120_000..]).await;
    assert_eq!(response.status, 204, "{}", response.text());
    assert_eq!(alice.get(&path, &[]).await.body, data);
    server.stop().await;
}

/// The kernel's (send queue, receive queue) in bytes of the IPv4 TCP socket from local port
/// `local` to remote port `remote` (ports are unique enough on loopback), from /proc/net/tcp.
fn tcp_queues(local: u16, remote: u16) -> Option<(u64, u64)> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let port = |field: &str| u16::from_str_radix(field.rsplit(':').next()?, 16).ok();
        if port(fields.get(1)?)? != local || port(fields.get(2)?)? != remote {
            return None;
        }
        let (send, receive) = fields.get(4)?.split_once(':')?;
        Some((
            u64::from_str_radix(send, 16).ok()?,
            u64::from_str_radix(receive, 16).ok()?,
        ))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_patch_is_taken_over_by_the_resuming_client() {
    let server = TestServer::start().await;
    let alice = Tus::new(server.media, &server.token("alice", "phone"));
    let data = content(100_000, 5);
    let path = alice.create(data.len() as u64, "").await;

    // A phone lost its network mid-body: the connection stays open and silent.
    let stalled = partial_patch(&server, &alice, &path, &data, 40_000).await;
    // Once the kernel holds none of those bytes on either side, the server has read them all
    // (and handed them to the upload, which asked for them).
    let phone_port = stalled.local_addr().unwrap().port();
    let media_port = server.media.port();
    eventually(
        "the server has read every byte of the stalled PATCH",
        async || {
            tcp_queues(phone_port, media_port).is_some_and(|(unsent, _)| unsent == 0)
                && tcp_queues(media_port, phone_port).is_some_and(|(_, unread)| unread == 0)
        },
    )
    .await;

    // The phone comes back on another connection: its PATCH from its last known offset makes
    // the stalled request let go; the bytes that request received are kept, so the offset
    // moved: 409 with the right offset, then resume from HEAD.
    let retry = alice.patch(&path, 0, &data).await;
    assert_eq!(retry.status, 409, "{}", retry.text());
    assert_eq!(retry.header("Upload-Offset"), Some("40000"));
    let offset = alice.offset(&path).await;
    assert_eq!(offset, 40_000);
    let response = alice.patch(&path, offset, &data[40_000..]).await;
    assert_eq!(response.status, 204, "{}", response.text());
    assert_eq!(alice.get(&path, &[]).await.body, data);
    drop(stalled);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_offsets_types_versions_and_owners_are_refused() {
    let server = TestServer::start().await;
    let alice = Tus::new(server.media, &server.token("alice", "phone"));
    let path = alice.create(1000, "").await;
    assert_eq!(alice.patch(&path, 0, &content(400, 6)).await.status, 204);

    let conflict = alice.patch(&path, 0, &content(100, 6)).await;
    assert_eq!(conflict.status, 409);
    assert_eq!(conflict.header("Upload-Offset"), Some("400"));
    assert_eq!(alice.patch(&path, 500, b"x").await.status, 409);
    assert_eq!(alice.offset(&path).await, 400);

    let wrong_type = request(
        server.media,
        "PATCH",
        &path,
        &[
            ("Tus-Resumable", "1.0.0"),
            ("Authorization", alice.bearer.as_str()),
            ("Upload-Offset", "400"),
            ("Content-Type", "application/json"),
        ],
        b"{}",
    )
    .await;
    assert_eq!(wrong_type.status, 415);
    let no_version = request(
        server.media,
        "PATCH",
        &path,
        &[
            ("Authorization", alice.bearer.as_str()),
            ("Upload-Offset", "400"),
            ("Content-Type", "application/offset+octet-stream"),
        ],
        b"x",
    )
    .await;
    assert_eq!(no_version.status, 412);
    assert_eq!(no_version.header("Tus-Version"), Some("1.0.0"));

    // A body longer than what remains is refused before anything is written.
    let too_long = alice.patch(&path, 400, &content(601, 6)).await;
    assert_eq!(too_long.status, 413, "{}", too_long.text());
    assert_eq!(alice.offset(&path).await, 400);

    let mallory = Tus::new(server.media, &server.token("mallory", "phone"));
    assert_eq!(mallory.patch(&path, 400, b"x").await.status, 403);
    assert_eq!(mallory.head(&path).await.status, 403);
    assert_eq!(mallory.delete(&path).await.status, 403);
    let unknown = "/media/00000000000000000000000000000000";
    assert_eq!(alice.patch(unknown, 0, b"x").await.status, 404);
    assert_eq!(alice.head("/media/not-an-id").await.status, 404);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_bad_token_is_401() {
    let server = TestServer::start().await;
    let alice = Tus::new(server.media, &server.token("alice", "phone"));
    let path = alice.upload(&content(10, 7), "", 10).await;
    let expired = Tus::new(server.media, &server.expired_token("alice", "phone", 10));
    let forged = Tus::new(server.media, "t1.YWxpY2U.cGhvbmU.9999999999.AAAA");
    for client in [&expired, &forged] {
        let created = client.create_raw(10, "").await;
        assert_eq!(created.status, 401, "{}", created.text());
        assert!(
            created
                .header("WWW-Authenticate")
                .unwrap()
                .starts_with("Bearer")
        );
        assert_eq!(client.patch(&path, 0, b"x").await.status, 401);
        assert_eq!(client.head(&path).await.status, 401);
        assert_eq!(client.get(&path, &[]).await.status, 401);
        assert_eq!(client.delete(&path).await.status, 401);
    }
    let anonymous = request(server.media, "GET", &path, &[], b"").await;
    assert_eq!(anonymous.status, 401);
    let anonymous = request(
        server.media,
        "POST",
        "/media/",
        &[("Tus-Resumable", "1.0.0"), ("Upload-Length", "10")],
        b"",
    )
    .await;
    assert_eq!(anonymous.status, 401);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_limit_quota_and_options() {
    let server = TestServer::start_with(|config| {
        config.media.max_upload_bytes = 1000;
        config.media.user_quota_bytes = 2500;
        config.media.max_unfinished_uploads_per_user = 3;
    })
    .await;
    let options = request(server.media, "OPTIONS", "/media/", &[], b"").await;
    assert_eq!(options.status, 204);
    assert_eq!(options.header("Tus-Version"), Some("1.0.0"));
    assert_eq!(options.header("Tus-Max-Size"), Some("1000"));
    assert_eq!(
        options.header("Tus-Extension"),
        Some("creation,creation-with-upload,termination,expiration")
    );

    let alice = Tus::new(server.media, &server.token("alice", "phone"));
    let oversize = alice.create_raw(1001, "").await;
    assert_eq!(oversize.status, 413);
    assert!(
        oversize.text().contains("Tus-Max-Size"),
        "{}",
        oversize.text()
    );

    // 1000 + 1000 finished or not, then 1000 more is past the 2500-byte quota.
    alice.upload(&content(1000, 8), "", 1000).await;
    let unfinished = alice.create(1000, "").await;
    let over = alice.create_raw(1000, "").await;
    assert_eq!(over.status, 403);
    assert!(over.text().contains("quota exceeded"), "{}", over.text());
    // Terminating gives the bytes back.
    assert_eq!(alice.delete(&unfinished).await.status, 204);
    let again = alice.create_raw(1000, "").await;
    assert_eq!(again.status, 201, "{}", again.text());
    // Another user has a quota of their own.
    let bob = Tus::new(server.media, &server.token("bob", "phone"));
    for _ in 0..2 {
        bob.create(100, "").await;
    }
    bob.create(100, "").await;
    let fourth = bob.create_raw(100, "").await;
    assert_eq!(fourth.status, 403);
    assert!(fourth.text().contains("unfinished"), "{}", fourth.text());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_content_is_stored_once() {
    let server = OwnNode::start(&[]);
    let objects = server.media_dir().join("objects");
    let data = content(64 * 1024, 9);
    let alice = server.tus("alice");
    let bob = server.tus("bob");
    let first = alice.upload(&data, "", 20_000).await;
    assert_eq!(files_under(&objects), 1);
    assert_eq!(
        server.metric("tern_media_dedup_saved_bytes_total").await,
        0.0
    );
    let second = bob.upload(&data, "", 30_000).await;
    assert_ne!(first, second);
    assert_eq!(
        files_under(&objects),
        1,
        "the second copy took no new space"
    );
    assert_eq!(files_under(&server.media_dir().join("staging")), 0);
    assert_eq!(
        server.metric("tern_media_dedup_saved_bytes_total").await,
        data.len() as f64,
        "the second copy's bytes were saved"
    );
    assert_eq!(server.metric("tern_media_dedup_hits_total").await, 1.0);
    assert_eq!(alice.get(&first, &[]).await.body, data);
    assert_eq!(alice.get(&second, &[]).await.body, data);

    // The object goes with its last reference.
    assert_eq!(alice.delete(&first).await.status, 204);
    assert_eq!(alice.get(&first, &[]).await.status, 404);
    assert_eq!(alice.get(&second, &[]).await.body, data);
    assert_eq!(files_under(&objects), 1);
    assert_eq!(bob.delete(&second).await.status, 204);
    assert_eq!(files_under(&objects), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn termination_deletes_an_unfinished_upload() {
    let server = TestServer::start().await;
    let alice = Tus::new(server.media, &server.token("alice", "phone"));
    let path = alice.create(10_000, "").await;
    assert_eq!(alice.patch(&path, 0, &content(3000, 10)).await.status, 204);
    let staging = media_dir(&server).join("staging");
    assert_eq!(files_under(&staging), 1);
    assert_eq!(alice.delete(&path).await.status, 204);
    assert_eq!(files_under(&staging), 0);
    assert_eq!(alice.head(&path).await.status, 404);
    assert_eq!(alice.patch(&path, 3000, b"x").await.status, 404);
    assert_eq!(alice.delete(&path).await.status, 404);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_uploads_expire_and_are_cleaned_up() {
    let server = OwnNode::start(&[
        ("upload_expiry_secs = 86400", "upload_expiry_secs = 1"),
        ("expiry_sweep_ms = 60000", "expiry_sweep_ms = 50"),
    ]);
    let alice = server.tus("alice");
    let path = alice.create(10_000, "").await;
    let response = alice.patch(&path, 0, &content(2000, 11)).await;
    assert_eq!(response.status, 204);
    assert!(response.header("Upload-Expires").is_some());
    let staging = server.media_dir().join("staging");
    // The counter moves just after the upload is gone: it is part of the condition.
    let expired = "tern_media_uploads_expired_total";
    eventually(
        "the abandoned upload expires and its file is deleted",
        async || {
            alice.head(&path).await.status == 404
                && files_under(&staging) == 0
                && server.metric(expired).await == 1.0
        },
    )
    .await;

    // A finished upload never expires. Proof without a fixed wait: an upload abandoned after
    // it finished expires no earlier than the finished one would, so once the sweeper has
    // removed that one, it has passed the finished upload's expiry too.
    let done = alice.upload(&content(10, 12), "", 10).await;
    let later = alice.create(10_000, "").await;
    eventually("the upload abandoned after it expires", async || {
        alice.head(&later).await.status == 404 && server.metric(expired).await == 2.0
    })
    .await;
    assert_eq!(alice.get(&done, &[]).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn popular_small_objects_are_served_from_the_hot_cache() {
    let server = OwnNode::start(&[]);
    let alice = server.tus("alice");
    let data = content(20_000, 13);
    let path = alice.upload(&data, "", 20_000).await;
    for _ in 0..5 {
        let response = alice.get(&path, &[]).await;
        assert_eq!(response.body, data);
    }
    let ranged = alice.get(&path, &[("Range", "bytes=5-9")]).await;
    assert_eq!(ranged.body, &data[5..10]);
    // The first request only marks it, the second reads it into the cache, then hits.
    let hits = "tern_media_hot_cache_requests_total{result=\"hit\"}";
    let misses = "tern_media_hot_cache_requests_total{result=\"miss\"}";
    assert_eq!(server.metric(hits).await, 4.0);
    assert_eq!(server.metric(misses).await, 2.0);
}

fn media_send(client_msg_id: &str, to_user: &str, reference: &MediaRef) -> client_frame::Frame {
    client_frame::Frame::Send(Send {
        client_msg_id: client_msg_id.to_owned(),
        to_user: to_user.to_owned(),
        kind: MessageKind::Media.into(),
        body: reference.encode_to_vec().into(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_messages_must_name_finished_media() {
    let server = TestServer::start().await;
    let mut alice = server.ready("alice", "phone").await;
    let mut bob = server.ready("bob", "phone").await;
    let uploader = Tus::new(server.media, &server.token("alice", "phone"));
    let data = content(4096, 14);
    let meta = metadata(&[("filetype", "image/jpeg")]);
    let path = uploader.upload(&data, &meta, 4096).await;
    let id = path.trim_start_matches("/media/").to_owned();

    // A missing id.
    let missing = MediaRef {
        id: "0123456789abcdef0123456789abcdef".into(),
        ..Default::default()
    };
    alice
        .writer
        .send(media_send("m1", "bob", &missing))
        .await
        .unwrap();
    let error = next_error(&mut alice.reader, ErrorCode::MediaNotFound).await;
    assert_eq!(error.client_msg_id, "m1");
    // Someone else's finished upload may be sent on too: tests/media_forward.rs.
    // An unfinished upload.
    let unfinished = uploader.create(100, "").await;
    let pending = MediaRef {
        id: unfinished.trim_start_matches("/media/").into(),
        ..Default::default()
    };
    alice
        .writer
        .send(media_send("m3", "bob", &pending))
        .await
        .unwrap();
    next_error(&mut alice.reader, ErrorCode::MediaNotFound).await;
    // Not a MediaRef at all, and a wrong size.
    alice
        .writer
        .send(client_frame::Frame::Send(Send {
            client_msg_id: "m4".into(),
            to_user: "bob".into(),
            kind: MessageKind::Media.into(),
            body: b"\xff\xff\xff".to_vec().into(),
        }))
        .await
        .unwrap();
    next_error(&mut alice.reader, ErrorCode::InvalidArgument).await;
    let wrong_size = MediaRef {
        id: id.clone(),
        size: 1,
        ..Default::default()
    };
    alice
        .writer
        .send(media_send("m5", "bob", &wrong_size))
        .await
        .unwrap();
    next_error(&mut alice.reader, ErrorCode::InvalidArgument).await;

    // Her own finished upload: accepted, and delivered with the stored type, size and hash.
    let good = MediaRef {
        id: id.clone(),
        thumbnail: vec![1, 2, 3].into(),
        ..Default::default()
    };
    alice
        .writer
        .send(media_send("m6", "bob", &good))
        .await
        .unwrap();
    let ack = next_ack(&mut alice.reader).await;
    assert_eq!(ack.client_msg_id, "m6");
    let delivered = next_deliver(&mut bob.reader).await;
    let message = chat(&delivered);
    assert_eq!(message.kind(), MessageKind::Media);
    let reference = MediaRef::decode(message.body.clone()).unwrap();
    assert_eq!(reference.id, id);
    assert_eq!(reference.mime_type, "image/jpeg");
    assert_eq!(reference.size, data.len() as u64);
    assert_eq!(hex(&reference.sha256), sha256_hex(&data));
    assert_eq!(&reference.thumbnail[..], &[1, 2, 3]);
    // What the recipient got is enough to fetch it.
    let fetched = Tus::new(server.media, &server.token("bob", "phone"))
        .get(&format!("/media/{}", reference.id), &[])
        .await;
    assert_eq!(fetched.body, data);
    server.stop().await;
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[test]
fn acknowledged_offsets_and_finished_uploads_survive_sigkill() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (config_path, config) = child_config(dir.path(), &[]);
    let data_dir = dir.path().join("data");
    let key = tern::token::TokenKey::new(config.auth.token_key.as_bytes());
    let token = key
        .sign("alice", "phone", tern::clock::now_secs() + 3600)
        .unwrap();
    let data = content(150_000, 16);

    let node = ChildNode::start(&config_path, &data_dir);
    let alice = Tus::new(node.media, &token);
    let (path, finished) = runtime.block_on(async {
        let path = alice.create(data.len() as u64, "").await;
        assert_eq!(alice.patch(&path, 0, &data[..100_000]).await.status, 204);
        let finished = alice.upload(&content(50, 17), "", 50).await;
        (path, finished)
    });
    node.kill();

    let node = ChildNode::start(&config_path, &data_dir);
    let alice = Tus::new(node.media, &token);
    runtime.block_on(async {
        assert_eq!(alice.offset(&path).await, 100_000);
        let response = alice.patch(&path, 100_000, &data[100_000..]).await;
        assert_eq!(response.status, 204, "{}", response.text());
        assert_eq!(alice.get(&path, &[]).await.body, data);
        assert_eq!(alice.get(&finished, &[]).await.body, content(50, 17));
    });
    drop(node);
}
