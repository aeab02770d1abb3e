//! Push notifications in a cluster (three child-process nodes, replication 3, every node
//! configured with the same stand-in gateway): a device registers through a node that does not
//! own its user (the change crosses the mesh), messages to it arrive through a third node, and
//! the gateway gets one push for the burst, from the one node that leads the user's slot group.

mod common;

use common::cluster::{group_leader, replicated_three_with, view};
use common::gateway::StandIn;
use common::*;
use tern::proto::v1::{
    ErrorCode, PushPlatform, PushRegister, push_request::Op, server_frame::Frame,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_pushes_a_user_whichever_nodes_its_devices_and_senders_use() {
    let gateway = StandIn::gorush().await;
    let section = format!(
        "[push]\ngateway = \"gorush\"\nurl = \"{}\"\noffline_delay_ms = 100\n",
        gateway.url("/api/push")
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let members = replicated_three_with(dir.path(), &section).await;
    let map = view(members[0].admin()).await;
    // Bob's slot group is led by node `leader`; his phone registers through another node and
    // Alice sends through the third.
    let (bob, leader) = (0..1000)
        .map(|i| format!("bob-{i}"))
        .find_map(|user| Some((user.clone(), group_leader(&map, &user)? as usize)))
        .expect("a user with a leader");
    let via = leader % 3; // 0-based index of the node after the leader
    let third = (leader + 1) % 3;
    {
        let (mut reader, mut writer) = common::cluster::login_at(&members[via], &bob, "phone")
            .await
            .split();
        let op = Op::Register(PushRegister {
            platform: PushPlatform::Fcm.into(),
            token: "tok-bob".to_owned(),
            app_id: "com.example.chat".to_owned(),
            preview: false,
        });
        let mut answer = ErrorCode::Overloaded;
        for request_id in 1..=50 {
            writer
                .push_request(request_id, op.clone())
                .await
                .expect("push request");
            let response = next_matching(&mut reader, |frame| match frame {
                Frame::PushResponse(response) if response.request_id == request_id => {
                    Some(response)
                }
                _ => None,
            })
            .await;
            answer = response.error();
            if answer != ErrorCode::Overloaded {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(answer, ErrorCode::Unspecified);
    }
    let (mut alice_reader, mut alice_writer) =
        common::cluster::login_at(&members[third], "alice", "phone")
            .await
            .split();
    for n in 0..5 {
        let id = format!("m{n}");
        loop {
            alice_writer
                .send_text(&id, &bob, "hello")
                .await
                .expect("send");
            match next_matching(&mut alice_reader, |frame| match frame {
                Frame::ServerAck(ack) if ack.client_msg_id == id => Some(None),
                Frame::Error(error) if error.client_msg_id == id => Some(Some(error.code())),
                _ => None,
            })
            .await
            {
                None => break,
                Some(ErrorCode::Overloaded) => {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Some(code) => panic!("send refused: {code:?}"),
            }
        }
    }
    eventually("the push", async || !gateway.requests().is_empty()).await;
    // Every node has had the time to push too, had it decided to: the burst's push is due
    // 100 ms after its first message on whichever node decides.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let requests = gateway.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let push = &requests[0].body["notifications"][0];
    assert_eq!(push["tokens"][0], "tok-bob");
    assert_eq!(push["platform"], 2);
    let mut sent = Vec::new();
    for member in &members {
        let text = http_get(member.admin(), "/metrics").await;
        sent.push(metric_value(&text, "tern_push_sent_total").unwrap_or(0.0));
    }
    assert_eq!(sent.iter().sum::<f64>(), 1.0, "{sent:?}");
    assert_eq!(
        sent[leader - 1],
        1.0,
        "not sent by the leader of bob's group: {sent:?}"
    );
}
