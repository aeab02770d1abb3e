//! Mailbox operations across nodes. A session's operation on a user whose slot another node
//! owns is sent there as a mesh call ([`Remote`], this node's [`Divert`]); the owner checks the
//! slot against its own map, runs the operation on its workers and answers ([`MailboxService`]);
//! the answer reaches the session as the event a local worker would have sent. Pushes from the
//! owner to sessions on other nodes are casts ([`sink::RemoteSink`]).
//!
//! Every call has a deadline; an append whose answer does not come back in time is answered
//! `Busy`, so the phone retries and dedup makes the retry safe. A slot whose owner is down, or
//! that the owner says is not its own, is refused the same way: unavailable, never served by
//! another node.
//!
//! Group requests go to the owner of the group's slot the same way ([`group_wire`]); the group's
//! owner sends each entry once to every node that owns members ([`copies`]). Revocations of a
//! user's tokens, and changes of a device's push registration ([`push_wire`]), go to the user's
//! owner like a session's operation. Not carried across nodes:
//! account look-ups (the admin API answers for users this node owns).

pub mod copies;
pub(crate) mod group_service;
pub(crate) mod group_wire;
pub mod outbox;
pub(crate) mod push_wire;
mod service;
pub mod sink;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use tokio::sync::watch;

use crate::cluster::leaders::Leaders;
use crate::cluster::map::ClusterMap;
use crate::cluster::route::{Route, place, route, serving};
use crate::mailbox::group_ops::{GroupAnswer, GroupCall, GroupFailure};
use crate::mailbox::record::{self, Record};
use crate::mailbox::revocation::{RevokeError, Revoked};
use crate::mailbox::{
    AckInfo, AppendFailure, AppendJob, Content, LoginInfo, MailboxEvent, MailboxOp,
};
use crate::mesh::{CallError, Lane, Mesh, NodeId, Transport};
use crate::message::Id;
use crate::node::divert::{Divert, Reregistration};
use crate::proto::kinds;
use crate::proto::mesh as pb;

pub use service::MailboxService;
pub(crate) use service::{append_job, append_reply};

/// The mesh service number of mailbox operations and session events.
pub const SERVICE_MAILBOX: u32 = 2;

/// How long a remote operation may take, the owner's fsync included.
pub const CALL_DEADLINE: Duration = Duration::from_secs(5);

/// Sends operations on keys owned elsewhere to their owner.
pub struct Remote<T: Transport> {
    me: NodeId,
    mesh: Mesh<T>,
    map: watch::Receiver<Arc<ClusterMap>>,
    leaders: Arc<Leaders>,
}

impl<T: Transport> Remote<T> {
    /// Routes with `map` (the metadata group's) and `leaders` from node `me`, over `mesh`.
    pub fn new(
        me: NodeId,
        mesh: Mesh<T>,
        map: watch::Receiver<Arc<ClusterMap>>,
        leaders: Arc<Leaders>,
    ) -> Remote<T> {
        Remote {
            me,
            mesh,
            map,
            leaders,
        }
    }

    fn route(&self, key: &str) -> (Route, u64) {
        let map = self.map.borrow();
        (
            route(&map, &self.leaders, self.me, key.as_bytes()),
            map.version,
        )
    }

    /// Sends `call` to `owner` and hands the decoded reply (or why there is none) to `then`.
    fn call(
        &self,
        owner: NodeId,
        call: pb::mailbox_call::Op,
        version: u64,
        then: impl FnOnce(Result<pb::mailbox_reply::Reply, Unanswered>) + Send + 'static,
    ) {
        let payload = Bytes::from(
            pb::MailboxCall {
                map_version: version,
                op: Some(call),
            }
            .encode_to_vec(),
        );
        let (mesh, me) = (self.mesh.clone(), self.me);
        // Queued on the link now, before the task runs: a session's calls to one node leave in
        // the order it made them (the owner serves them in that order too).
        let first = mesh.call(
            owner,
            Lane::Call,
            SERVICE_MAILBOX,
            payload.clone(),
            CALL_DEADLINE,
        );
        tokio::spawn(async move {
            let mut target = owner;
            let mut reply = decode_reply(first.await);
            // An owner that says the slot moved names the new owner (its map is newer than
            // this node's): asked once more there. Never this node: its own map lags, and the
            // phone's retry will find the key here once it has caught up.
            if let Ok(pb::mailbox_reply::Reply::NotOwner(moved)) = &reply
                && moved.owner != 0
                && moved.owner != target
                && moved.owner != me
            {
                target = moved.owner;
                reply = ask(&mesh, target, payload).await;
            }
            let reply = match reply {
                Ok(pb::mailbox_reply::Reply::NotOwner(_)) => Err(Unanswered::NotOwner),
                other => other,
            };
            if let Err(error) = &reply {
                metrics::counter!(crate::metrics::REMOTE_FAILURES, "cause" => error.label())
                    .increment(1);
                tracing::debug!(owner = target, %error, "remote mailbox operation failed");
            }
            then(reply);
        });
    }
}

/// Casts `cast` to `node` on the Cast lane; a full lane or a link that is down drops it, and
/// it is counted. True when the link took it.
pub(crate) fn cast_to<T: Transport>(
    mesh: &Mesh<T>,
    node: NodeId,
    cast: pb::mailbox_cast::Cast,
) -> bool {
    let payload = pb::MailboxCast { cast: Some(cast) }.encode_to_vec();
    let sent = mesh
        .cast(node, SERVICE_MAILBOX, Bytes::from(payload))
        .is_ok();
    if !sent {
        metrics::counter!(crate::metrics::REMOTE_FAILURES, "cause" => "call").increment(1);
    }
    sent
}

/// The answer of a node that does not serve `key`: the node it knows serves it.
fn not_owner(map: &ClusterMap, leaders: &Leaders, key: &str) -> pb::mailbox_reply::Reply {
    pb::mailbox_reply::Reply::NotOwner(pb::NotOwner {
        owner: serving(map, leaders, key.as_bytes()).unwrap_or(0),
        map_version: map.version,
    })
}

/// One call to `owner`, its reply decoded.
async fn ask<T: Transport>(
    mesh: &Mesh<T>,
    owner: NodeId,
    payload: Bytes,
) -> Result<pb::mailbox_reply::Reply, Unanswered> {
    decode_reply(
        mesh.call(owner, Lane::Call, SERVICE_MAILBOX, payload, CALL_DEADLINE)
            .await,
    )
}

/// A call's reply, decoded.
fn decode_reply(reply: Result<Bytes, CallError>) -> Result<pb::mailbox_reply::Reply, Unanswered> {
    match reply {
        Ok(bytes) => match pb::MailboxReply::decode(bytes) {
            Ok(pb::MailboxReply { reply: Some(reply) }) => Ok(reply),
            Ok(_) | Err(_) => Err(Unanswered::Malformed),
        },
        Err(error) => Err(Unanswered::Call(error)),
    }
}

/// Why a remote operation has no answer.
#[derive(Debug, thiserror::Error)]
enum Unanswered {
    #[error("call: {0}")]
    Call(CallError),
    #[error("malformed reply")]
    Malformed,
    #[error("the owner's map places the key elsewhere")]
    NotOwner,
}

impl Unanswered {
    fn label(&self) -> &'static str {
        match self {
            Unanswered::Call(CallError::DeadlineExceeded) => "deadline",
            Unanswered::Call(_) => "call",
            Unanswered::Malformed => "malformed",
            Unanswered::NotOwner => "not_owner",
        }
    }
}

impl<T: Transport> Divert for Remote<T> {
    fn divert(&self, op: MailboxOp) -> Option<MailboxOp> {
        let Some(key) = op.owner() else {
            return Some(op);
        };
        let (route, version) = self.route(key);
        match route {
            Route::Local => Some(op),
            Route::Remote(owner) => {
                self.send(owner, version, op);
                None
            }
            Route::Unavailable => {
                metrics::counter!(crate::metrics::REMOTE_FAILURES, "cause" => "unavailable")
                    .increment(1);
                refuse(op);
                None
            }
        }
    }

    fn reregister(
        &self,
        user: &Id,
        device: &Id,
        conn_id: u64,
        token_issued_at: u64,
        done: Box<dyn FnOnce(Reregistration) + Send>,
    ) {
        match self.route(user) {
            (Route::Remote(owner), version) => {
                // resume_after 0 keeps the owner's cursor for the device.
                let login = pb::mailbox_call::Op::Login(pb::LoginCall {
                    owner: user.to_string(),
                    device: device.to_string(),
                    resume_after: 0,
                    conn_id,
                    token_issued_at,
                });
                self.call(owner, login, version, move |answer| {
                    done(match answer {
                        Ok(pb::mailbox_reply::Reply::Login(_)) => Reregistration::Settled,
                        Ok(pb::mailbox_reply::Reply::Refused(refused)) => {
                            match revoked_by(&refused) {
                                Some(revoked) => Reregistration::Revoked(revoked),
                                None => Reregistration::Failed,
                            }
                        }
                        _ => Reregistration::Failed,
                    });
                });
            }
            _ => done(Reregistration::Settled),
        }
    }

    fn owns(&self, user: &Id) -> bool {
        matches!(self.route(user).0, Route::Local)
    }

    fn relay_typing(&self, from_user: &Id, to_user: &Id, typing: bool) -> bool {
        match self.route(to_user).0 {
            Route::Local => false,
            Route::Remote(owner) => {
                self.cast(
                    owner,
                    pb::mailbox_cast::Cast::Typing(pb::TypingRelay {
                        from_user: from_user.to_string(),
                        to_user: to_user.to_string(),
                        typing,
                    }),
                );
                true
            }
            // Nobody to relay to: typing lapses.
            Route::Unavailable => true,
        }
    }

    fn watch_presence(&self, watcher: &Id, conn_id: u64, users: &[Id]) -> Vec<Id> {
        let mut local = Vec::new();
        for (owner, watched) in self.by_owner(users, &mut local) {
            self.cast(
                owner,
                pb::mailbox_cast::Cast::Watch(pb::PresenceWatch {
                    watcher: watcher.to_string(),
                    conn_id,
                    users: watched,
                }),
            );
        }
        local
    }

    fn unwatch_presence(&self, _watcher: &Id, conn_id: u64, users: &[Id]) {
        for (owner, watched) in self.by_owner(users, &mut Vec::new()) {
            self.cast(
                owner,
                pb::mailbox_cast::Cast::Unwatch(pb::PresenceUnwatch {
                    conn_id,
                    users: watched,
                }),
            );
        }
    }

    fn logged_out(&self, user: &Id, conn_id: u64) {
        if let (Route::Remote(owner), version) = self.route(user) {
            let logout = pb::mailbox_call::Op::Logout(pb::LogoutCall {
                owner: user.to_string(),
                conn_id,
            });
            self.call(owner, logout, version, |_| {});
        }
    }
}

impl<T: Transport> Remote<T> {
    /// Casts to `owner` (see [`cast`]).
    fn cast(&self, owner: NodeId, cast: pb::mailbox_cast::Cast) {
        cast_to(&self.mesh, owner, cast);
    }

    /// `users` by the node that owns them; those owned here go to `local`, those nobody can
    /// serve now are left out.
    fn by_owner(&self, users: &[Id], local: &mut Vec<Id>) -> Vec<(NodeId, Vec<String>)> {
        let placed = place(
            &self.map.borrow(),
            &self.leaders,
            self.me,
            users.iter().cloned(),
        );
        local.extend(placed.here);
        placed
            .remote
            .into_iter()
            .map(|(node, users)| (node, users.iter().map(ToString::to_string).collect()))
            .collect()
    }

    fn send(&self, owner: NodeId, version: u64, op: MailboxOp) {
        use pb::mailbox_call::Op;
        use pb::mailbox_reply::Reply;
        match op {
            MailboxOp::Login {
                owner: user,
                device,
                resume_after,
                conn_id,
                token_issued_at,
                reply,
            } => {
                let call = Op::Login(pb::LoginCall {
                    owner: user.to_string(),
                    device: device.to_string(),
                    resume_after,
                    conn_id,
                    token_issued_at,
                });
                self.call(owner, call, version, move |answer| {
                    // No answer: the dropped sender refuses the login (OVERLOADED, retry).
                    match answer {
                        Ok(Reply::Login(login)) => {
                            let _ = reply.send(Ok(LoginInfo {
                                cursor: login.cursor,
                                last_seq: login.last_seq,
                                devices: login.devices as usize,
                            }));
                        }
                        Ok(Reply::Refused(refused)) => {
                            if let Some(revoked) = revoked_by(&refused) {
                                let _ = reply.send(Err(revoked));
                            }
                        }
                        _ => {}
                    }
                });
            }
            MailboxOp::Revoke {
                owner: user,
                device,
                not_before,
                reply,
            } => {
                let call = Op::Revoke(pb::RevokeCall {
                    owner: user.to_string(),
                    device: device.as_deref().unwrap_or_default().to_owned(),
                    not_before,
                });
                self.call(owner, call, version, move |answer| {
                    let _ = reply.send(match answer {
                        Ok(Reply::Revoked(revoked)) => Ok(revoked.not_before),
                        Ok(Reply::Refused(refused))
                            if refused.reason() == pb::mailbox_refused::Reason::Storage =>
                        {
                            Err(RevokeError::Storage)
                        }
                        _ => Err(RevokeError::Unavailable),
                    });
                });
            }
            MailboxOp::Push {
                owner: user,
                device,
                change,
                reply,
            } => {
                let call = Op::Push(push_wire::call_of(&user, &device, &change));
                self.call(owner, call, version, move |answer| {
                    if let Some(reply) = reply {
                        reply.send(push_wire::result_of(answer.ok()));
                    }
                });
            }
            MailboxOp::Append(job) => {
                let Some(call) = append_call(&job) else {
                    return refuse(MailboxOp::Append(job));
                };
                self.call(owner, Op::Append(call), version, move |answer| {
                    let result = match answer {
                        Ok(Reply::Append(stored)) => Ok((
                            AckInfo {
                                seq: stored.seq,
                                server_id: stored.server_id,
                                timestamp_ms: stored.timestamp_ms,
                            },
                            stored.duplicate,
                        )),
                        Ok(Reply::Refused(refused))
                            if refused.reason() == pb::mailbox_refused::Reason::Storage =>
                        {
                            Err(AppendFailure::Storage)
                        }
                        _ => Err(AppendFailure::Busy),
                    };
                    answer_append(*job, result);
                });
            }
            MailboxOp::Fetch {
                owner: user,
                after,
                limit,
                max_bytes,
                reply,
            } => {
                let call = Op::Fetch(pb::FetchCall {
                    owner: user.to_string(),
                    after,
                    limit: u32::try_from(limit).unwrap_or(u32::MAX),
                    max_bytes: max_bytes as u64,
                });
                self.call(owner, call, version, move |answer| {
                    let event = match answer {
                        Ok(Reply::Fetch(batch)) => match decode_entries(batch.entries) {
                            Some(entries) => MailboxEvent::Batch {
                                entries,
                                last_seq: batch.last_seq,
                                read_upto: batch.read_upto,
                            },
                            None => MailboxEvent::FetchFailed,
                        },
                        _ => MailboxEvent::FetchFailed,
                    };
                    reply.send(event);
                });
            }
            MailboxOp::Ack {
                owner: user,
                device,
                up_to,
            } => {
                // A lost ack is re-sent by the phone with its next one.
                let call = Op::Ack(pb::AckCall {
                    owner: user.to_string(),
                    device: device.to_string(),
                    up_to,
                });
                self.call(owner, call, version, |_| {});
            }
            MailboxOp::Group(job) => {
                let call = Op::Group(group_wire::call_of(&job));
                self.call(owner, call, version, move |answer| match answer {
                    Ok(Reply::Group(reply)) => {
                        if let (Some(event), Some(session)) =
                            (group_wire::event_of(reply, &job), &job.reply)
                        {
                            session.send(event);
                        }
                    }
                    _ => refuse(MailboxOp::Group(job)),
                });
            }
            MailboxOp::ListGroups {
                user,
                after,
                request_id,
                reply,
            } => {
                let call = Op::ListGroups(pb::ListGroupsCall {
                    user: user.to_string(),
                    after: after.as_ref().map(ToString::to_string),
                });
                self.call(owner, call, version, move |answer| {
                    let event = match answer {
                        Ok(Reply::Group(pb::GroupReply {
                            answer: Some(pb::group_reply::Answer::List(list)),
                        })) => MailboxEvent::GroupAnswer {
                            request_id,
                            answer: Ok(GroupAnswer::List(
                                list.groups.into_iter().map(Id::from).collect(),
                            )),
                        },
                        _ => MailboxEvent::GroupAnswer {
                            request_id,
                            answer: Err(GroupFailure::Busy),
                        },
                    };
                    reply.send(event);
                });
            }
            other => refuse(other),
        }
    }
}

/// The revocation a login's refusal names, if it is one.
fn revoked_by(refused: &pb::MailboxRefused) -> Option<Revoked> {
    match refused.reason() {
        pb::mailbox_refused::Reason::RevokedDevice => Some(Revoked::Device),
        pb::mailbox_refused::Reason::RevokedUser => Some(Revoked::User),
        _ => None,
    }
}

/// The call of a session's append; `None` for content built elsewhere (group copies stay on
/// the node of their group).
pub(crate) fn append_call(job: &AppendJob) -> Option<pb::AppendCall> {
    use pb::append_call::Content as Carried;
    let content = match &job.content {
        Content::Message {
            to_user,
            kind,
            body,
        } => Carried::Message(pb::AppendMessage {
            to_user: to_user.to_string(),
            kind: kinds::message_kind_to_wire(*kind).into(),
            body: body.clone(),
        }),
        Content::Receipt { kind, up_to_seq } => Carried::Receipt(pb::AppendReceipt {
            kind: kinds::receipt_kind_to_wire(*kind).into(),
            up_to_seq: *up_to_seq,
        }),
        Content::Copy(_) => return None,
    };
    Some(pb::AppendCall {
        owner: job.owner.to_string(),
        from_user: job.from_user.to_string(),
        from_device: job.from_device.to_string(),
        client_msg_id: job.client_msg_id.to_string(),
        server_id: job.server_id,
        timestamp_ms: job.timestamp_ms,
        content: Some(content),
    })
}

/// Entries as the journal stores them, back to entries; `None` if one is not an entry.
fn decode_entries(entries: Vec<Bytes>) -> Option<Vec<Arc<crate::message::Entry>>> {
    entries
        .into_iter()
        .map(|bytes| match record::decode(bytes) {
            Ok(Record::Appended { entry, .. }) => Some(Arc::new(entry)),
            _ => None,
        })
        .collect()
}

pub(crate) fn answer_append(job: AppendJob, result: Result<(AckInfo, bool), AppendFailure>) {
    if let Some(done) = &job.done {
        done.finish(result.is_ok());
    }
    if let Some((session, tag)) = job.reply {
        session.send(MailboxEvent::Appended { tag, result });
    }
}

/// Answers `op` as refused for now (no node can serve its key, or it cannot be carried across
/// nodes): the phone gets OVERLOADED and retries.
pub(crate) fn refuse(op: MailboxOp) {
    match op {
        MailboxOp::Append(job) => answer_append(*job, Err(AppendFailure::Busy)),
        MailboxOp::Fetch { reply, .. } => {
            reply.send(MailboxEvent::FetchFailed);
        }
        MailboxOp::Group(job) => {
            let job = *job;
            let Some(reply) = job.reply else { return };
            match job.call {
                GroupCall::Post { tag, .. } => {
                    reply.send(MailboxEvent::Appended {
                        tag,
                        result: Err(AppendFailure::Busy),
                    });
                }
                _ if job.request_id != 0 => {
                    reply.send(MailboxEvent::GroupAnswer {
                        request_id: job.request_id,
                        answer: Err(GroupFailure::Busy),
                    });
                }
                _ => {}
            }
        }
        MailboxOp::ListGroups {
            request_id, reply, ..
        } => {
            reply.send(MailboxEvent::GroupAnswer {
                request_id,
                answer: Err(GroupFailure::Busy),
            });
        }
        MailboxOp::Push {
            reply: Some(reply), ..
        } => reply.send(Err(crate::mailbox::pushers::PushFailure::Busy)),
        // Dropping a oneshot answers "no": a login is refused (OVERLOADED), an account look-up
        // finds nothing, a revocation is answered unavailable (retry); acks and internal
        // operations are re-sent by their authors.
        _ => {}
    }
}
