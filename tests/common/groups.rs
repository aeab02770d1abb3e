//! A phone as the group tests drive it: requests matched to their responses, posts to their
//! acks or errors, and the group entries it received.

use tern::client::{Client, ClientReader, ClientWriter};
use tern::proto::v1::{
    CreateGroup, GroupResponse, deliver, group_request::Op, group_response, server_frame::Frame,
};

use super::{next, next_matching, sync};

/// A logged-in phone and its group requests.
pub struct GroupPhone {
    pub reader: ClientReader,
    pub writer: ClientWriter,
    pub next_request: u64,
    /// Group entries delivered while logging in.
    pub backlog: Vec<(u64, String)>,
}

impl GroupPhone {
    /// Logs in (already connected) and keeps what the catch-up delivers.
    pub async fn new(client: Client) -> Self {
        let (reader, writer) = client.split();
        let mut member = GroupPhone {
            reader,
            writer,
            next_request: 0,
            backlog: Vec::new(),
        };
        loop {
            match next(&mut member.reader).await {
                Frame::Deliver(d) => {
                    member.writer.ack(d.seq).await.unwrap();
                    member.backlog.extend(group_entry(d.payload));
                }
                Frame::QueueDrained(_) => return member,
                _ => {}
            }
        }
    }

    pub async fn request(&mut self, op: Op) -> GroupResponse {
        self.next_request += 1;
        let id = self.next_request;
        self.writer.group_request(id, op).await.unwrap();
        next_matching(&mut self.reader, |f| match f {
            Frame::GroupResponse(r) if r.request_id == id => Some(r.clone()),
            _ => None,
        })
        .await
    }

    pub async fn create(&mut self, members: &[&str]) -> String {
        let response = self
            .request(Op::Create(CreateGroup {
                subject: "team".into(),
                members: members.iter().map(|m| m.to_string()).collect(),
            }))
            .await;
        match response.result {
            Some(group_response::Result::Info(info)) => info.group_id,
            other => panic!(
                "create answered error {} {:?}: {other:?}",
                response.error, response.message
            ),
        }
    }

    pub async fn change(&mut self, op: Op) -> i32 {
        self.request(op).await.error
    }

    /// Group messages (group_seq, client_msg_id) and events (group_seq, kind) delivered until
    /// a Pong, acking everything.
    pub async fn received(&mut self) -> Vec<(u64, String)> {
        let frames = sync(&mut self.reader, &mut self.writer).await;
        let mut got = std::mem::take(&mut self.backlog);
        for frame in frames {
            if let Frame::Deliver(d) = frame {
                self.writer.ack(d.seq).await.unwrap();
                got.extend(group_entry(d.payload));
            }
        }
        got
    }

    pub async fn post(&mut self, group: &str, id: &str) -> Result<u64, i32> {
        self.writer
            .send_group_text(id, group, "hello")
            .await
            .unwrap();
        loop {
            match next(&mut self.reader).await {
                Frame::ServerAck(ack) if ack.client_msg_id == id => {
                    assert_eq!(ack.group_id, group);
                    return Ok(ack.seq);
                }
                Frame::Error(e) if e.client_msg_id == id => return Err(e.code),
                _ => {}
            }
        }
    }
}

/// (group_seq, client_msg_id) of a group message, (group_seq, "event:KIND") of an event.
pub fn group_entry(payload: Option<deliver::Payload>) -> Option<(u64, String)> {
    match payload? {
        deliver::Payload::GroupMessage(m) => Some((m.group_seq, m.client_msg_id)),
        deliver::Payload::GroupEvent(e) => Some((e.group_seq, format!("event:{}", e.kind))),
        _ => None,
    }
}
