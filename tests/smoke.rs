mod common;
use common::*;
use tern::proto::v1::server_frame::Frame;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke() {
    let server = TestServer::start().await;
    let (alice, _) = server.login("alice", "phone").await;
    let (bob, welcome) = server.login("bob", "phone").await;
    assert_eq!(welcome.user, "bob");
    let (mut ar, mut aw) = alice.split();
    let (mut br, mut bw) = bob.split();
    assert!(matches!(next(&mut ar).await, Frame::QueueDrained(_)));
    assert!(matches!(next(&mut br).await, Frame::QueueDrained(_)));
    aw.send_text("m1", "bob", "hello").await.unwrap();
    let ack = next(&mut ar).await;
    println!("{ack:?}");
    let d = next(&mut br).await;
    println!("{d:?}");
    let Frame::Deliver(d) = d else { panic!() };
    bw.ack(d.seq).await.unwrap();
    server.stop().await;
}
