//! The owner's side of mailbox operations across nodes: mesh service [`SERVICE_MAILBOX`](super::SERVICE_MAILBOX). A call
//! runs on this node's workers only when this node's own map gives it the key's slot; a cast
//! carries a user's owner's event to one of the user's sessions here.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use prost::Message;
use tokio::sync::{oneshot, watch};

use super::group_service as groups;
use super::outbox::Outboxes;
use super::sink::{CallSink, RemoteSink, encode_entry};
use crate::cluster::map::ClusterMap;
use crate::cluster::route::{Route, route};
use crate::mailbox::record::{self, Record};
use crate::mailbox::revocation::{RevokeError, Revoked};
use crate::mailbox::{AppendFailure, AppendJob, Content, MailboxEvent, MailboxOp};
use crate::mesh::{BoxFuture, Handler, Mesh, NodeId, Transport};
use crate::message::Id;
use crate::node::Node;
use crate::proto::kinds;
use crate::proto::mesh as pb;
use crate::registry::{DeviceSession, PushBudget};

/// What the service needs once the node has started.
struct Attached<T: Transport> {
    node: Arc<Node>,
    mesh: Mesh<T>,
    map: watch::Receiver<Arc<ClusterMap>>,
    /// Session events for each other node, gathered into one cast per wake-up.
    outboxes: Arc<Outboxes<T>>,
}

impl<T: Transport> Clone for Attached<T> {
    fn clone(&self) -> Self {
        Attached {
            node: self.node.clone(),
            mesh: self.mesh.clone(),
            map: self.map.clone(),
            outboxes: self.outboxes.clone(),
        }
    }
}

/// Serves peers' mailbox operations and session events (refused until attached to the node).
pub struct MailboxService<T: Transport> {
    attached: OnceLock<Attached<T>>,
}

impl<T: Transport> Default for MailboxService<T> {
    fn default() -> Self {
        MailboxService {
            attached: OnceLock::new(),
        }
    }
}

impl<T: Transport> MailboxService<T> {
    /// Starts serving `node`'s mailboxes, routing with `map` and pushing over `mesh`.
    pub fn attach(&self, node: Arc<Node>, mesh: Mesh<T>, map: watch::Receiver<Arc<ClusterMap>>) {
        let outboxes = Arc::new(Outboxes::new(mesh.clone()));
        let _ = self.attached.set(Attached {
            node,
            mesh,
            map,
            outboxes,
        });
    }
}

impl<T: Transport> Handler for MailboxService<T> {
    fn call(&self, from: NodeId, payload: Bytes) -> BoxFuture<'static, Result<Bytes, String>> {
        let attached = self.attached.get().cloned();
        let mut serving: BoxFuture<'static, Result<Bytes, String>> = Box::pin(async move {
            let attached = attached.ok_or_else(|| "the node is starting".to_owned())?;
            let call = pb::MailboxCall::decode(payload).map_err(|error| error.to_string())?;
            let reply = serve(&attached, from, call).await?;
            Ok(Bytes::from(
                pb::MailboxReply { reply: Some(reply) }.encode_to_vec(),
            ))
        });
        // Run up to the first wait now, while the link's reader hands calls over in the order
        // they came: an append is queued on its worker before the next call is read, so one
        // session's appends to a user are stored in the order it sent them. (Polled again, the
        // future registers the real waker.)
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        match serving.as_mut().poll(&mut context) {
            std::task::Poll::Ready(done) => Box::pin(std::future::ready(done)),
            std::task::Poll::Pending => serving,
        }
    }

    fn cast(&self, from: NodeId, payload: Bytes) {
        use pb::mailbox_cast::Cast;
        let Some(attached) = self.attached.get() else {
            return;
        };
        match pb::MailboxCast::decode(payload) {
            Ok(pb::MailboxCast {
                cast: Some(Cast::Event(event)),
            }) => deliver(&attached.node, event),
            Ok(pb::MailboxCast {
                cast: Some(Cast::Events(events)),
            }) => {
                for event in events.events {
                    deliver(&attached.node, event);
                }
            }
            Ok(pb::MailboxCast {
                cast: Some(Cast::Typing(typing)),
            }) => {
                let node = &attached.node;
                node.registry.relay_typing(
                    &Id::from(typing.from_user),
                    &Id::from(typing.to_user),
                    typing.typing,
                    node.config.mailbox.push_queue,
                );
            }
            Ok(pb::MailboxCast {
                cast: Some(Cast::Watch(watch)),
            }) => watch_presence(attached, from, watch),
            Ok(pb::MailboxCast {
                cast: Some(Cast::Unwatch(unwatch)),
            }) => {
                let users: Vec<Id> = unwatch.users.into_iter().map(Id::from).collect();
                attached.node.presence.unwatch(unwatch.conn_id, &users);
            }
            Ok(pb::MailboxCast {
                cast: Some(Cast::ReceiptCopies(receipt)),
            }) => {
                groups::receipt(&attached.node, receipt);
            }
            Ok(pb::MailboxCast {
                cast: Some(Cast::Released(released)),
            }) => groups::released(&attached.node, released),
            Ok(pb::MailboxCast {
                cast: Some(Cast::GroupTyping(typing)),
            }) => groups::typing(&attached.node, typing),
            Ok(_) => {}
            Err(error) => tracing::debug!(%error, "malformed mailbox cast"),
        }
    }
}

pub(super) fn refused(reason: pb::mailbox_refused::Reason) -> pb::mailbox_reply::Reply {
    pb::mailbox_reply::Reply::Refused(pb::MailboxRefused {
        reason: reason.into(),
    })
}

pub(super) fn busy() -> pb::mailbox_reply::Reply {
    refused(pb::mailbox_refused::Reason::Busy)
}

async fn serve<T: Transport>(
    attached: &Attached<T>,
    from: NodeId,
    call: pb::MailboxCall,
) -> Result<pb::mailbox_reply::Reply, String> {
    use pb::mailbox_call::Op;
    use pb::mailbox_reply::Reply;
    let op = call
        .op
        .ok_or_else(|| "MailboxCall without an operation".to_owned())?;
    let node = &attached.node;
    if let Op::Logout(logout) = &op {
        // Whoever owns the user now, this node forgets the session if it knew it.
        let user = Id::from(logout.owner.as_str());
        if node.registry.remove(&user, logout.conn_id) {
            node.presence.changed(&user, false, crate::clock::now_ms());
        }
        return Ok(Reply::Done(pb::Done {}));
    }
    let key = match &op {
        Op::Login(login) => &login.owner,
        Op::Append(append) => &append.owner,
        Op::Fetch(fetch) => &fetch.owner,
        Op::Ack(ack) => &ack.owner,
        Op::Logout(logout) => &logout.owner,
        Op::Group(group) => &group.group,
        Op::ListGroups(list) => &list.user,
        Op::Revoke(revoke) => &revoke.owner,
        Op::Push(push) => &push.owner,
        // Checked per recipient, below.
        Op::Copies(_) => "",
    };
    if let Op::Copies(copies) = op {
        let me = attached.mesh.node();
        return Ok(groups::serve_copies(node, &attached.map, me, copies).await);
    }
    {
        let map = attached.map.borrow();
        let me = attached.mesh.node();
        if route(&map, &node.leaders, me, key.as_bytes()) != Route::Local {
            return Ok(super::not_owner(&map, &node.leaders, key));
        }
    }
    Ok(match op {
        Op::Login(login) => serve_login(attached, from, login).await,
        Op::Append(append) => serve_append(node, append).await?,
        Op::Fetch(fetch) => serve_fetch(node, fetch).await,
        Op::Ack(ack) => {
            let op = MailboxOp::Ack {
                owner: Id::from(ack.owner),
                device: Id::from(ack.device),
                up_to: ack.up_to,
            };
            match node.mailboxes.submit(op) {
                Ok(()) => Reply::Done(pb::Done {}),
                Err(_) => busy(),
            }
        }
        Op::Logout(_) => Reply::Done(pb::Done {}),
        Op::Group(call) => groups::serve_group(node, call).await?,
        Op::ListGroups(list) => groups::serve_list_groups(node, list).await,
        Op::Revoke(revoke) => serve_revoke(node, revoke).await,
        Op::Push(push) => serve_push(node, push).await,
        Op::Copies(_) => busy(),
    })
}

/// Changes a push registration of a user this node owns, for the node the device is on.
async fn serve_push(node: &Node, push: pb::PushCall) -> pb::mailbox_reply::Reply {
    let Some((owner, device, change)) = super::push_wire::change_of(push) else {
        return busy();
    };
    let (reply, answer) = oneshot::channel();
    let op = MailboxOp::Push {
        owner,
        device,
        change,
        reply: Some(crate::mailbox::pushers::PushReply::new(move |result| {
            let _ = reply.send(result);
        })),
    };
    if node.mailboxes.submit(op).is_err() {
        return busy();
    }
    match answer.await {
        Ok(result) => super::push_wire::reply_of(result),
        Err(_) => busy(),
    }
}

/// Revokes tokens of a user this node owns, for the node the operator asked.
async fn serve_revoke(node: &Node, revoke: pb::RevokeCall) -> pb::mailbox_reply::Reply {
    let (reply, answer) = oneshot::channel();
    let op = MailboxOp::Revoke {
        owner: Id::from(revoke.owner),
        device: (!revoke.device.is_empty()).then(|| Id::from(revoke.device)),
        not_before: revoke.not_before,
        reply,
    };
    if node.mailboxes.submit(op).is_err() {
        return busy();
    }
    match answer.await {
        Ok(Ok(not_before)) => pb::mailbox_reply::Reply::Revoked(pb::RevokeReply { not_before }),
        Ok(Err(RevokeError::Storage)) => refused(pb::mailbox_refused::Reason::Storage),
        Ok(Err(RevokeError::Unavailable)) | Err(_) => busy(),
    }
}

/// Logs the device in here and registers its session on node `from` for pushes.
async fn serve_login<T: Transport>(
    attached: &Attached<T>,
    from: NodeId,
    login: pb::LoginCall,
) -> pb::mailbox_reply::Reply {
    let node = &attached.node;
    let owner = Id::from(login.owner);
    let device = Id::from(login.device);
    let (reply, answer) = oneshot::channel();
    let op = MailboxOp::Login {
        owner: owner.clone(),
        device: device.clone(),
        resume_after: login.resume_after,
        conn_id: login.conn_id,
        token_issued_at: login.token_issued_at,
        reply,
    };
    if node.mailboxes.submit(op).is_err() {
        return busy();
    }
    let info = match answer.await {
        Ok(Ok(info)) => info,
        Ok(Err(Revoked::Device)) => return refused(pb::mailbox_refused::Reason::RevokedDevice),
        Ok(Err(Revoked::User)) => return refused(pb::mailbox_refused::Reason::RevokedUser),
        Err(_) => return busy(),
    };
    let pushes = Arc::new(PushBudget::default());
    let sink = Arc::new(RemoteSink::new(
        &attached.outboxes,
        &attached.mesh,
        from,
        owner.clone(),
        login.conn_id,
        pushes.clone(),
    ));
    let registered = node.registry.insert(
        &owner,
        DeviceSession {
            device,
            conn_id: login.conn_id,
            sink,
            pushes,
        },
    );
    // The same connection registering again (after a reconnect of the link) replaces nobody.
    if let Some(old) = registered
        .replaced
        .filter(|old| old.conn_id != login.conn_id)
    {
        old.sink.send(MailboxEvent::Replaced);
    }
    if registered.came_online {
        node.presence.changed(&owner, true, crate::clock::now_ms());
    }
    pb::mailbox_reply::Reply::Login(pb::LoginReply {
        cursor: info.cursor,
        last_seq: info.last_seq,
        devices: u32::try_from(info.devices).unwrap_or(u32::MAX),
    })
}

async fn serve_append(
    node: &Node,
    append: pb::AppendCall,
) -> Result<pb::mailbox_reply::Reply, String> {
    let (sink, answer) = CallSink::new();
    let job = append_job(append, Some((sink, 0)))?;
    if node
        .mailboxes
        .submit(MailboxOp::Append(Box::new(job)))
        .is_err()
    {
        return Ok(busy());
    }
    Ok(append_reply(answer.await))
}

/// The append a remote `AppendCall` asks for, answered to `reply`.
pub(crate) fn append_job(
    append: pb::AppendCall,
    reply: Option<(crate::mailbox::SessionHandle, u64)>,
) -> Result<AppendJob, String> {
    use pb::append_call::Content as Carried;
    let content = match append.content {
        Some(Carried::Message(message)) => Content::Message {
            to_user: Id::from(message.to_user),
            kind: kinds::message_kind_from_wire(message.kind)
                .ok_or_else(|| "unknown message kind".to_owned())?,
            body: message.body,
        },
        Some(Carried::Receipt(receipt)) => Content::Receipt {
            kind: kinds::receipt_kind_from_wire(receipt.kind)
                .ok_or_else(|| "unknown receipt kind".to_owned())?,
            up_to_seq: receipt.up_to_seq,
        },
        None => return Err("AppendCall without content".to_owned()),
    };
    Ok(AppendJob {
        owner: Id::from(append.owner),
        from_user: Id::from(append.from_user),
        from_device: Id::from(append.from_device),
        client_msg_id: Arc::from(append.client_msg_id),
        server_id: append.server_id,
        timestamp_ms: append.timestamp_ms,
        content,
        reply,
        done: None,
    })
}

/// The reply to an append, from the event its sink got (none: busy).
pub(crate) fn append_reply(
    event: Result<MailboxEvent, oneshot::error::RecvError>,
) -> pb::mailbox_reply::Reply {
    match event {
        Ok(MailboxEvent::Appended {
            result: Ok((stored, duplicate)),
            ..
        }) => pb::mailbox_reply::Reply::Append(pb::AppendReply {
            seq: stored.seq,
            server_id: stored.server_id,
            timestamp_ms: stored.timestamp_ms,
            duplicate,
        }),
        Ok(MailboxEvent::Appended {
            result: Err(AppendFailure::Storage),
            ..
        }) => refused(pb::mailbox_refused::Reason::Storage),
        _ => busy(),
    }
}

async fn serve_fetch(node: &Node, fetch: pb::FetchCall) -> pb::mailbox_reply::Reply {
    let owner = Id::from(fetch.owner);
    let (sink, answer) = CallSink::new();
    let op = MailboxOp::Fetch {
        owner: owner.clone(),
        after: fetch.after,
        limit: fetch.limit as usize,
        max_bytes: usize::try_from(fetch.max_bytes).unwrap_or(usize::MAX),
        reply: sink,
    };
    if node.mailboxes.submit(op).is_err() {
        return busy();
    }
    match answer.await {
        Ok(MailboxEvent::Batch {
            entries,
            last_seq,
            read_upto,
        }) => pb::mailbox_reply::Reply::Fetch(pb::FetchReply {
            entries: entries
                .iter()
                .map(|entry| encode_entry(&owner, entry))
                .collect(),
            last_seq,
            read_upto,
        }),
        _ => refused(pb::mailbox_refused::Reason::ReadFailed),
    }
}

/// Hands an owner's event to the session on `conn_id` here, a push within its push budget
/// (marked missed when the owner could not send an earlier one, so the session reads again).
fn deliver(node: &Node, event: pb::SessionEvent) {
    use pb::session_event::Event;
    let owner = Id::from(event.owner);
    let (conn_id, missed) = (event.conn_id, event.missed);
    let limit = node.config.mailbox.push_queue;
    let mut event = Some(match event.event {
        Some(Event::Push(bytes)) => match record::decode(bytes) {
            Ok(Record::Appended { entry, .. }) => MailboxEvent::Push(Arc::new(entry)),
            _ => return tracing::debug!("session event with a malformed entry"),
        },
        Some(Event::Devices(count)) => MailboxEvent::Devices(count as usize),
        Some(Event::Replaced(_)) => MailboxEvent::Replaced,
        Some(Event::Revoked(revoked)) => MailboxEvent::Revoked(if revoked.user_wide {
            Revoked::User
        } else {
            Revoked::Device
        }),
        Some(Event::MissedPushes(_)) => MailboxEvent::Missed,
        Some(Event::Typing(typing)) => MailboxEvent::Typing {
            from_user: Id::from(typing.from_user),
            typing: typing.typing,
            group: (!typing.group.is_empty()).then(|| Id::from(typing.group)),
        },
        Some(Event::Presence(presence)) => MailboxEvent::Presence {
            user: Id::from(presence.user),
            online: presence.online,
            last_seen_ms: presence.last_seen_ms,
        },
        None => return,
    });
    node.registry.for_each(&owner, |session| {
        if session.conn_id != conn_id {
            return;
        }
        match event.take() {
            Some(push @ MailboxEvent::Push(_)) => {
                if missed {
                    session.pushes.mark_missed();
                }
                session.try_push(limit, push);
            }
            Some(typing @ MailboxEvent::Typing { .. }) => {
                session.try_push(limit, typing);
            }
            Some(other) => {
                session.sink.send(other);
            }
            None => {}
        }
    });
    // A watcher of another datacenter this node stands in for.
    if let (
        Some(MailboxEvent::Presence {
            user,
            online,
            last_seen_ms,
        }),
        Some(far),
    ) = (event, node.far_watchers.get())
    {
        far.relay(conn_id, &user, online, last_seen_ms);
    }
}

/// A session on node `from` watches users this node owns: it gets their presence now, then
/// every change.
fn watch_presence<T: Transport>(attached: &Attached<T>, from: NodeId, watch: pb::PresenceWatch) {
    let node = &attached.node;
    let sink: crate::mailbox::SessionHandle = Arc::new(RemoteSink::new(
        &attached.outboxes,
        &attached.mesh,
        from,
        Id::from(watch.watcher),
        watch.conn_id,
        Arc::new(PushBudget::default()),
    ));
    let users: Vec<Id> = watch.users.into_iter().map(Id::from).collect();
    node.presence.watch(watch.conn_id, &sink, &users);
    for user in users {
        let online = node.registry.is_online(&user);
        let last_seen_ms = if online {
            0
        } else {
            node.presence.last_seen(&user)
        };
        sink.send(MailboxEvent::Presence {
            user,
            online,
            last_seen_ms,
        });
    }
}
