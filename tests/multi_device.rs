//! Several devices of one user: every device receives the user's messages, and a user's own
//! messages reach the user's other devices but never the device that sent them.

mod common;
use common::*;

use tern::proto::v1::server_frame::Frame;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_online_device_of_the_recipient_receives_the_message() {
    let server = TestServer::start().await;
    let mut alice = server.ready("alice", "phone").await;
    let mut phone = server.ready("bob", "phone").await;
    let mut laptop = server.ready("bob", "laptop").await;
    alice
        .writer
        .send_text("m1", "bob", "to both")
        .await
        .unwrap();
    let ack = next_ack(&mut alice.reader).await;
    for device in [&mut phone, &mut laptop] {
        let d = next_deliver(&mut device.reader).await;
        assert_eq!(d.seq, ack.seq);
        assert_eq!(chat(&d).server_id, ack.server_id);
        assert_eq!(chat(&d).from_user, "alice");
        assert_eq!(body(&d), "to both");
        let rest = sync(&mut device.reader, &mut device.writer).await;
        assert!(rest.is_empty(), "{rest:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_was_offline_gets_what_the_other_device_already_acked() {
    let server = TestServer::start().await;
    // Both devices are known to bob's mailbox.
    drop(server.ready("bob", "laptop").await);
    let mut phone = server.ready("bob", "phone").await;
    let mut alice = server.ready("alice", "phone").await;
    for i in 1..=3 {
        alice
            .writer
            .send_text(&format!("m{i}"), "bob", &format!("body {i}"))
            .await
            .unwrap();
        next_ack(&mut alice.reader).await;
    }
    for seq in 1..=3 {
        assert_eq!(next_deliver(&mut phone.reader).await.seq, seq);
    }
    phone.writer.ack(3).await.unwrap();
    sync(&mut phone.reader, &mut phone.writer).await;
    // The laptop's cursor is still 0: the phone's ack must not drop its entries.
    let mut laptop = server.phone("bob", "laptop").await;
    let (delivered, last_seq) = drain(&mut laptop.reader).await;
    assert_eq!(last_seq, 3);
    assert_eq!(
        delivered.iter().map(body).collect::<Vec<_>>(),
        ["body 1", "body 2", "body 3"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_message_reaches_the_other_device_but_not_the_sender() {
    let server = TestServer::start().await;
    let mut bob = server.ready("bob", "phone").await;
    // The laptop logs in first, so when the phone logs in the server knows alice has 2 devices.
    let mut laptop = server.ready("alice", "laptop").await;
    let mut phone = server.ready("alice", "phone").await;

    phone
        .writer
        .send_text("own-1", "bob", "hi bob")
        .await
        .unwrap();
    let ack = next_ack(&mut phone.reader).await;
    assert_eq!(ack.client_msg_id, "own-1");

    let d = next_deliver(&mut bob.reader).await;
    assert_eq!(d.seq, ack.seq);
    assert_eq!(chat(&d).from_device, "phone");

    // The copy in alice's mailbox, for the laptop.
    let copy = next_deliver(&mut laptop.reader).await;
    let m = chat(&copy);
    assert_eq!(m.from_user, "alice");
    assert_eq!(m.from_device, "phone");
    assert_eq!(m.to_user, "bob");
    assert_eq!(m.client_msg_id, "own-1");
    assert_eq!(m.server_id, ack.server_id);
    assert_eq!(&m.body[..], b"hi bob");

    // The sender does not get its own message back, neither live...
    let rest = sync(&mut phone.reader, &mut phone.writer).await;
    assert!(rest.is_empty(), "sender got frames: {rest:?}");

    // ...nor when later entries make it read its mailbox: bob answers, and the phone receives
    // only bob's message (skipping its own copy), the laptop both, in order.
    bob.writer
        .send_text("b1", "alice", "hi alice")
        .await
        .unwrap();
    let back = next_ack(&mut bob.reader).await;
    let d = next_deliver(&mut phone.reader).await;
    assert_eq!(d.seq, back.seq);
    assert_eq!(chat(&d).from_user, "bob");
    assert!(d.seq > copy.seq);
    let rest = sync(&mut phone.reader, &mut phone.writer).await;
    assert!(rest.is_empty(), "sender got frames: {rest:?}");
    let d = next_deliver(&mut laptop.reader).await;
    assert_eq!(d.seq, back.seq);
    assert_eq!(chat(&d).from_user, "bob");

    // After a reconnect from scratch the phone still does not receive its own message.
    phone.writer.ack(back.seq).await.unwrap();
    sync(&mut phone.reader, &mut phone.writer).await;
    drop(phone);
    let mut phone = server.phone_at("alice", "phone", 0).await;
    let (delivered, _) = drain(&mut phone.reader).await;
    assert!(delivered.is_empty(), "{delivered:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_message_copy_waits_for_an_offline_device() {
    let server = TestServer::start().await;
    drop(server.ready("alice", "laptop").await);
    let mut phone = server.ready("alice", "phone").await;
    phone
        .writer
        .send_text("own-1", "bob", "while laptop sleeps")
        .await
        .unwrap();
    let ack = next_ack(&mut phone.reader).await;
    let mut laptop = server.phone("alice", "laptop").await;
    let (delivered, _) = drain(&mut laptop.reader).await;
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    let m = chat(&delivered[0]);
    assert_eq!(m.from_device, "phone");
    assert_eq!(m.to_user, "bob");
    assert_eq!(m.server_id, ack.server_id);
    let frames = sync(&mut phone.reader, &mut phone.writer).await;
    assert!(
        !frames.iter().any(|f| matches!(f, Frame::Deliver(_))),
        "{frames:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_message_copy_starts_once_a_second_device_logs_in() {
    let server = TestServer::start().await;
    let mut bob = server.ready("bob", "phone").await;
    // The phone is alice's only device: nothing to copy.
    let mut phone = server.ready("alice", "phone").await;
    phone
        .writer
        .send_text("solo", "bob", "one device")
        .await
        .unwrap();
    next_ack(&mut phone.reader).await;
    next_deliver(&mut bob.reader).await;
    // The laptop logs in while the phone stays connected; the phone learns of it.
    let mut laptop = server.ready("alice", "laptop").await;
    phone
        .writer
        .send_text("duo", "bob", "two devices")
        .await
        .unwrap();
    let ack = next_ack(&mut phone.reader).await;
    let copy = next_deliver(&mut laptop.reader).await;
    assert_eq!(chat(&copy).client_msg_id, "duo");
    assert_eq!(chat(&copy).from_device, "phone");
    assert_eq!(chat(&copy).server_id, ack.server_id);
    let rest = sync(&mut phone.reader, &mut phone.writer).await;
    assert!(rest.is_empty(), "sender got frames: {rest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_to_oneself_reaches_the_other_devices_once() {
    let server = TestServer::start().await;
    let mut laptop = server.ready("alice", "laptop").await;
    let mut phone = server.ready("alice", "phone").await;
    phone
        .writer
        .send_text("note", "alice", "to self")
        .await
        .unwrap();
    let ack = next_ack(&mut phone.reader).await;
    assert_eq!(ack.seq, 1, "stored once, in alice's own mailbox");
    let d = next_deliver(&mut laptop.reader).await;
    assert_eq!(d.seq, 1);
    let m = chat(&d);
    assert_eq!(m.from_user, "alice");
    assert_eq!(m.from_device, "phone");
    assert_eq!(m.to_user, "alice");
    let rest = sync(&mut laptop.reader, &mut laptop.writer).await;
    assert!(rest.is_empty(), "stored twice: {rest:?}");
    let rest = sync(&mut phone.reader, &mut phone.writer).await;
    assert!(rest.is_empty(), "sender got its own message: {rest:?}");
}
