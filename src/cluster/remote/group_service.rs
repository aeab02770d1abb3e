//! The group side of the mailbox service: members' requests for groups this node owns, the
//! entries a group's owner sends for the members this node owns, and the casts of receipts,
//! releases and typing in groups.

use std::sync::Arc;

use prost::Message;
use tokio::sync::watch;

use super::group_wire;
use super::service::{busy, refused};
use super::sink::CallSink;
use crate::cluster::map::ClusterMap;
use crate::cluster::route::{Route, route};
use crate::group::fanout::{copy_id, copy_job};
use crate::group::record as group_record;
use crate::mailbox::checkpoint::Countdown;
use crate::mailbox::{MailboxEvent, MailboxOp};
use crate::mesh::NodeId;
use crate::message::{GroupReceiptNotice, Id};
use crate::node::Node;
use crate::proto::kinds;
use crate::proto::mesh as pb;
use crate::proto::storage as pb_storage;

/// Runs a member's group request on the group's worker here; answers with what it answered.
pub async fn serve_group(
    node: &Node,
    call: pb::GroupCall,
) -> Result<pb::mailbox_reply::Reply, String> {
    let (sink, answer) = CallSink::new();
    let job = group_wire::job_of(call, sink).map_err(|error| error.to_string())?;
    if node
        .mailboxes
        .submit(MailboxOp::Group(Box::new(job)))
        .is_err()
    {
        return Ok(busy());
    }
    // A receipt or typing that was taken answers nothing: the sink is dropped unused.
    let event = answer.await.ok();
    Ok(pb::mailbox_reply::Reply::Group(group_wire::reply_of(event)))
}

pub async fn serve_list_groups(node: &Node, list: pb::ListGroupsCall) -> pb::mailbox_reply::Reply {
    let (sink, answer) = CallSink::new();
    let op = MailboxOp::ListGroups {
        user: Id::from(list.user),
        after: list.after.map(Id::from),
        request_id: 0,
        reply: sink,
    };
    if node.mailboxes.submit(op).is_err() {
        return busy();
    }
    pb::mailbox_reply::Reply::Group(group_wire::reply_of(answer.await.ok()))
}

/// Appends a group's entries to the mailboxes of their recipients here, in order; answers once
/// every copy is durable (or one failed). Refused whole when a recipient is not this node's.
pub async fn serve_copies(
    node: &Node,
    map: &watch::Receiver<Arc<ClusterMap>>,
    me: NodeId,
    call: pb::GroupCopiesCall,
) -> pb::mailbox_reply::Reply {
    use pb::mailbox_reply::Reply;
    {
        let map = map.borrow();
        let stranger = call
            .copies
            .iter()
            .flat_map(|copy| &copy.recipients)
            .find(|user| route(&map, &node.leaders, me, user.as_bytes()) != Route::Local);
        if let Some(user) = stranger {
            return super::not_owner(&map, &node.leaders, user);
        }
    }
    let mut entries = Vec::with_capacity(call.copies.len());
    for copy in call.copies {
        let Ok(entry) = pb_storage::StoredGroupEntry::decode(copy.entry)
            .map_err(|_| ())
            .and_then(|stored| group_record::decode_entry(stored).map_err(|_| ()))
        else {
            return refused(pb::mailbox_refused::Reason::Unspecified);
        };
        entries.push((Arc::new(entry), copy.recipients));
    }
    let parts = entries.iter().map(|(_, recipients)| recipients.len()).sum();
    let (countdown, outcome) = Countdown::new(parts);
    let mailboxes = &node.mailboxes;
    for (entry, recipients) in entries {
        let copy_id = copy_id(&entry);
        for recipient in recipients {
            let job = copy_job(Id::from(recipient), &entry, &copy_id, &countdown);
            if mailboxes
                .submit_wait(MailboxOp::Append(Box::new(job)))
                .await
                .is_err()
            {
                return busy();
            }
        }
    }
    let complete = outcome.await.unwrap_or(false);
    Reply::Copies(pb::CopiesReply { complete })
}

/// A member's receipt for the authors this node owns (a notice: lost when a queue is full).
/// False when it was not taken (its fan-out lane is full, or it is malformed).
pub fn receipt(node: &Node, receipt: pb::GroupReceiptCopies) -> bool {
    let Some(kind) = kinds::receipt_kind_from_wire(receipt.kind) else {
        return false;
    };
    let notice = GroupReceiptNotice {
        group_id: Id::from(receipt.group),
        from_user: Id::from(receipt.from_user),
        from_device: Id::from(receipt.from_device),
        kind,
        up_to_group_seq: receipt.up_to_group_seq,
    };
    let authors = receipt.authors.into_iter().map(Id::from).collect();
    match node.fanout.reserve(&notice.group_id) {
        Some(permit) => {
            permit.send(crate::group::fanout::FanOutJob::Receipt { notice, authors });
            true
        }
        None => false,
    }
}

/// A member's mailbox on another node released copies of a group this node owns.
pub fn released(node: &Node, released: pb::GroupCopiesReleased) {
    let op = MailboxOp::GroupReleased {
        group: Id::from(released.group),
        member: Id::from(released.member),
        upto: released.upto,
    };
    // Lost when the lane is full: the member tells again after its mailbox's next change.
    let _ = node.mailboxes.submit(op);
}

/// Typing in a group, for the sessions of members this node owns.
pub fn typing(node: &Node, typing: pb::GroupTypingRelay) {
    let group = Id::from(typing.group);
    let from_user = Id::from(typing.from_user);
    let limit = node.config.mailbox.push_queue;
    for user in typing.to_users {
        node.registry.for_each(&Id::from(user), |session| {
            session.try_push(
                limit,
                MailboxEvent::Typing {
                    from_user: from_user.clone(),
                    typing: typing.typing,
                    group: Some(group.clone()),
                },
            );
        });
    }
}
