//! Forwarding media: a photo received in a message is sent on by its id, 1:1 and to groups and
//! back, without a new upload; every recipient downloads the same stored object; ids nobody was
//! given (guessed, or of an unfinished upload) are refused on both paths; and a forwarded photo
//! lives exactly as long as its uploader keeps the media.

mod common;
mod media_support;

use std::path::Path;

use bytes::Bytes;
use common::*;
use media_support::*;
use prost::Message as _;
use tern::client::{ClientReader, ClientWriter};
use tern::proto::v1::{
    CreateGroup, ErrorCode, GroupSend, MediaRef, MessageKind, Send, client_frame, deliver,
    group_request::Op, group_response, server_frame::Frame,
};

/// Regular files anywhere under `dir` (0 when it does not exist).
fn files_under(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .map(|entry| entry.expect("dir entry").path())
        .map(|path| if path.is_dir() { files_under(&path) } else { 1 })
        .sum()
}

/// The node's stored content objects: one file per distinct SHA-256.
fn objects_on_disk(server: &TestServer) -> usize {
    files_under(&server.config.node.data_dir.join("media").join("objects"))
}

/// A 1:1 media message with `body` (an encoded MediaRef) as is.
fn media_send(client_msg_id: &str, to_user: &str, body: &Bytes) -> client_frame::Frame {
    client_frame::Frame::Send(Send {
        client_msg_id: client_msg_id.to_owned(),
        to_user: to_user.to_owned(),
        kind: MessageKind::Media.into(),
        body: body.clone(),
    })
}

/// A group media message with `body` (an encoded MediaRef) as is.
fn group_media_send(client_msg_id: &str, group_id: &str, body: &Bytes) -> client_frame::Frame {
    client_frame::Frame::GroupSend(GroupSend {
        client_msg_id: client_msg_id.to_owned(),
        group_id: group_id.to_owned(),
        kind: MessageKind::Media.into(),
        body: body.clone(),
    })
}

/// A MediaRef naming only `id` (what a phone sends when it lets the server fill in the rest).
fn bare_reference(id: &str) -> Bytes {
    MediaRef {
        id: id.to_owned(),
        ..Default::default()
    }
    .encode_to_vec()
    .into()
}

/// A well-formed id that nobody was given: 128 bits from the hash of the time and a label.
fn unknown_id(label: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    sha256_hex(format!("{label}-{nanos}").as_bytes())[..32].to_owned()
}

/// Waits for the answer to `client_msg_id`: Ok(ack seq) or Err(error code).
async fn outcome(reader: &mut ClientReader, client_msg_id: &str) -> Result<u64, ErrorCode> {
    next_matching(reader, |frame| match frame {
        Frame::ServerAck(ack) if ack.client_msg_id == client_msg_id => Some(Ok(ack.seq)),
        Frame::Error(error) if error.client_msg_id == client_msg_id => Some(Err(error.code())),
        _ => None,
    })
    .await
}

/// Creates a group of the phone's user and `members`; returns its id.
async fn create_group(phone: &mut Phone, members: &[&str]) -> String {
    phone
        .writer
        .group_request(
            1,
            Op::Create(CreateGroup {
                subject: "forwards".into(),
                members: members.iter().map(|m| (*m).to_owned()).collect(),
            }),
        )
        .await
        .expect("group request");
    let response = next_matching(&mut phone.reader, |frame| match frame {
        Frame::GroupResponse(response) if response.request_id == 1 => Some(response),
        _ => None,
    })
    .await;
    match response.result {
        Some(group_response::Result::Info(info)) => info.group_id,
        other => panic!("group create refused ({}): {other:?}", response.error),
    }
}

/// The body of the next 1:1 media message delivered (acking every delivery on the way).
async fn next_media_message(reader: &mut ClientReader, writer: &mut ClientWriter) -> Bytes {
    loop {
        let delivered = next_deliver(reader).await;
        writer.ack(delivered.seq).await.expect("ack");
        if let Some(deliver::Payload::Message(message)) = delivered.payload {
            assert_eq!(message.kind(), MessageKind::Media, "{message:?}");
            return message.body;
        }
    }
}

/// The body of the next group media message in `group` (skipping group events, acking).
async fn next_group_media(
    reader: &mut ClientReader,
    writer: &mut ClientWriter,
    group: &str,
) -> Bytes {
    loop {
        let delivered = next_deliver(reader).await;
        writer.ack(delivered.seq).await.expect("ack");
        if let Some(deliver::Payload::GroupMessage(message)) = delivered.payload {
            assert_eq!(message.group_id, group);
            assert_eq!(message.kind(), MessageKind::Media, "{message:?}");
            return message.body;
        }
    }
}

/// Checks that a delivered reference names `id` with the stored values filled in, and that
/// `downloader` gets exactly `data` for it.
async fn downloads_the_same(downloader: &Tus, body: &Bytes, id: &str, data: &[u8]) {
    let reference = MediaRef::decode(body.clone()).expect("a MediaRef");
    assert_eq!(reference.id, id);
    assert_eq!(reference.mime_type, "image/jpeg");
    assert_eq!(reference.size, data.len() as u64);
    let stored_hash: String = reference
        .sha256
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(stored_hash, sha256_hex(data));
    let response = downloader.get(&format!("/media/{id}"), &[]).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.body, data);
    let etag = format!("\"{}\"", sha256_hex(data));
    assert_eq!(response.header("ETag"), Some(etag.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_received_photo_is_forwarded_to_users_and_groups_and_stored_once() {
    let server = TestServer::start().await;
    let mut ann = server.ready("ann", "phone").await;
    let mut bob = server.ready("bob", "phone").await;
    let mut cat = server.ready("cat", "phone").await;
    let mut dan = server.ready("dan", "phone").await;
    let mut eve = server.ready("eve", "phone").await;
    let tus = |user: &str| Tus::new(server.media, &server.token(user, "phone"));

    // ann uploads a photo once and sends it to bob.
    let data = content(150_000, 41);
    let path = tus("ann")
        .upload(&data, &metadata(&[("filetype", "image/jpeg")]), 64 * 1024)
        .await;
    let id = path.trim_start_matches("/media/").to_owned();
    ann.writer
        .send(media_send("photo", "bob", &bare_reference(&id)))
        .await
        .unwrap();
    assert!(outcome(&mut ann.reader, "photo").await.is_ok());
    let received = next_media_message(&mut bob.reader, &mut bob.writer).await;
    downloads_the_same(&tus("bob"), &received, &id, &data).await;

    // bob forwards what he received, unchanged, to cat (1:1) and to a group with dan.
    bob.writer
        .send(media_send("fwd-cat", "cat", &received))
        .await
        .unwrap();
    assert_eq!(
        outcome(&mut bob.reader, "fwd-cat").await.map(|_| ()),
        Ok(())
    );
    let group = create_group(&mut bob, &["dan"]).await;
    bob.writer
        .send(group_media_send("fwd-group", &group, &received))
        .await
        .unwrap();
    assert_eq!(
        outcome(&mut bob.reader, "fwd-group").await.map(|_| ()),
        Ok(())
    );

    let at_cat = next_media_message(&mut cat.reader, &mut cat.writer).await;
    downloads_the_same(&tus("cat"), &at_cat, &id, &data).await;
    let at_dan = next_group_media(&mut dan.reader, &mut dan.writer, &group).await;
    downloads_the_same(&tus("dan"), &at_dan, &id, &data).await;

    // And back: dan forwards from the group to eve (1:1), naming only the id.
    dan.writer
        .send(media_send("fwd-eve", "eve", &bare_reference(&id)))
        .await
        .unwrap();
    assert_eq!(
        outcome(&mut dan.reader, "fwd-eve").await.map(|_| ()),
        Ok(())
    );
    let at_eve = next_media_message(&mut eve.reader, &mut eve.writer).await;
    downloads_the_same(&tus("eve"), &at_eve, &id, &data).await;

    // Four forwards later the node still holds the photo once, and no upload is in progress.
    assert_eq!(objects_on_disk(&server), 1);
    assert_eq!(
        files_under(&server.config.node.data_dir.join("media").join("staging")),
        0
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_nobody_was_given_are_refused_on_both_paths() {
    let server = TestServer::start().await;
    let mut ann = server.ready("ann", "phone").await;
    let mut bob = server.ready("bob", "phone").await;
    let mut cat = server.ready("cat", "phone").await;
    let tus = |user: &str| Tus::new(server.media, &server.token(user, "phone"));
    let group = create_group(&mut ann, &["bob", "cat"]).await;

    // A guessed id: refused 1:1 and in the group, and not downloadable.
    let guessed = bare_reference(&unknown_id("guess"));
    bob.writer
        .send(media_send("guess-1", "cat", &guessed))
        .await
        .unwrap();
    assert_eq!(
        outcome(&mut bob.reader, "guess-1").await,
        Err(ErrorCode::MediaNotFound)
    );
    bob.writer
        .send(group_media_send("guess-group", &group, &guessed))
        .await
        .unwrap();
    assert_eq!(
        outcome(&mut bob.reader, "guess-group").await,
        Err(ErrorCode::MediaNotFound)
    );
    let guessed_get = tus("bob")
        .get(&format!("/media/{}", unknown_id("get")), &[])
        .await;
    assert_eq!(guessed_get.status, 404);

    // An unfinished upload: refused for its uploader and for anyone it was shown to, on both
    // paths, and not downloadable.
    let unfinished = tus("ann").create(1000, "").await;
    let response = tus("ann").patch(&unfinished, 0, &content(400, 42)).await;
    assert_eq!(response.status, 204, "{}", response.text());
    let pending = bare_reference(unfinished.trim_start_matches("/media/"));
    ann.writer
        .send(media_send("pending-1", "bob", &pending))
        .await
        .unwrap();
    assert_eq!(
        outcome(&mut ann.reader, "pending-1").await,
        Err(ErrorCode::MediaNotFound)
    );
    for (phone, client_msg_id) in [(&mut ann, "pending-group-ann"), (&mut bob, "pending-group")] {
        phone
            .writer
            .send(group_media_send(client_msg_id, &group, &pending))
            .await
            .unwrap();
        assert_eq!(
            outcome(&mut phone.reader, client_msg_id).await,
            Err(ErrorCode::MediaNotFound)
        );
    }
    assert_eq!(tus("bob").get(&unfinished, &[]).await.status, 404);

    // A group post of finished media is checked like a 1:1 send: a body that disagrees with the
    // stored media is refused, and an accepted one arrives with the stored values filled in.
    let data = content(5000, 43);
    let path = tus("ann")
        .upload(&data, &metadata(&[("filetype", "image/jpeg")]), 5000)
        .await;
    let id = path.trim_start_matches("/media/").to_owned();
    let wrong_hash: Bytes = MediaRef {
        id: id.clone(),
        sha256: vec![7; 32].into(),
        ..Default::default()
    }
    .encode_to_vec()
    .into();
    ann.writer
        .send(group_media_send("wrong-hash", &group, &wrong_hash))
        .await
        .unwrap();
    assert_eq!(
        outcome(&mut ann.reader, "wrong-hash").await,
        Err(ErrorCode::InvalidArgument)
    );
    ann.writer
        .send(group_media_send("photo", &group, &bare_reference(&id)))
        .await
        .unwrap();
    assert!(outcome(&mut ann.reader, "photo").await.is_ok());
    let at_cat = next_group_media(&mut cat.reader, &mut cat.writer, &group).await;
    downloads_the_same(&tus("cat"), &at_cat, &id, &data).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_photo_lives_as_long_as_its_uploader_keeps_it() {
    let server = TestServer::start().await;
    let mut ann = server.ready("ann", "phone").await;
    let mut bob = server.ready("bob", "phone").await;
    let mut cat = server.ready("cat", "phone").await;
    let tus = |user: &str| Tus::new(server.media, &server.token(user, "phone"));

    let data = content(20_000, 44);
    let path = tus("ann")
        .upload(&data, &metadata(&[("filetype", "image/jpeg")]), 20_000)
        .await;
    let id = path.trim_start_matches("/media/").to_owned();
    ann.writer
        .send(media_send("photo", "bob", &bare_reference(&id)))
        .await
        .unwrap();
    assert!(outcome(&mut ann.reader, "photo").await.is_ok());
    let received = next_media_message(&mut bob.reader, &mut bob.writer).await;
    bob.writer
        .send(media_send("fwd-1", "cat", &received))
        .await
        .unwrap();
    assert_eq!(outcome(&mut bob.reader, "fwd-1").await.map(|_| ()), Ok(()));
    let at_cat = next_media_message(&mut cat.reader, &mut cat.writer).await;
    downloads_the_same(&tus("cat"), &at_cat, &id, &data).await;

    // Only the uploader may delete it; a recipient's attempt changes nothing.
    assert_eq!(tus("bob").delete(&path).await.status, 403);
    assert_eq!(tus("cat").get(&path, &[]).await.status, 200);

    // The uploader deletes it: gone for every holder of the id, and no longer forwardable.
    assert_eq!(tus("ann").delete(&path).await.status, 204);
    assert_eq!(tus("cat").get(&path, &[]).await.status, 404);
    bob.writer
        .send(media_send("fwd-2", "cat", &received))
        .await
        .unwrap();
    assert_eq!(
        outcome(&mut bob.reader, "fwd-2").await,
        Err(ErrorCode::MediaNotFound)
    );
    assert_eq!(objects_on_disk(&server), 0);
    server.stop().await;
}
