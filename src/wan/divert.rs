//! The WAN's seat at the routing seam: operations on keys homed in another datacenter go to the
//! gateway's queue; the rest to the cluster's own router (`crate::cluster::remote::Remote`).

use std::sync::Arc;

use super::{EnqueueFailure, Wan};
use crate::cluster::remote::group_wire;
use crate::cluster::remote::{answer_append, append_call, refuse};
use crate::mailbox::group_ops::{GroupCall, GroupJob};
use crate::mailbox::{AckInfo, AppendFailure, MailboxEvent, MailboxOp};
use crate::mesh::Transport;
use crate::message::Id;
use crate::node::divert::{Divert, Reregistration};
use crate::proto::wan as pb;

/// Routes across datacenters, then within the cluster.
pub struct WanDivert<T: Transport> {
    inner: Arc<dyn Divert>,
    wan: Arc<Wan<T>>,
}

impl<T: Transport> WanDivert<T> {
    /// `inner` routing within the cluster, `wan` across datacenters.
    pub fn new(inner: Arc<dyn Divert>, wan: Arc<Wan<T>>) -> Self {
        WanDivert { inner, wan }
    }

    /// `users` homed here, and those homed elsewhere by datacenter.
    fn by_home(&self, users: &[Id]) -> (Vec<Id>, Vec<(usize, Vec<String>)>) {
        let mut here = Vec::new();
        let mut far: Vec<(usize, Vec<String>)> = Vec::new();
        for user in users {
            match self.far_home(user) {
                None => here.push(user.clone()),
                Some(dc) => match far.iter_mut().find(|(home, _)| *home == dc) {
                    Some((_, users)) => users.push(user.to_string()),
                    None => far.push((dc, vec![user.to_string()])),
                },
            }
        }
        (here, far)
    }

    /// The home of `key` when it is another datacenter.
    fn far_home(&self, key: &str) -> Option<usize> {
        let home = self.wan.directory().home(key);
        (home != self.wan.directory().local()).then_some(home)
    }
}

impl<T: Transport> WanDivert<T> {
    /// Queues a post or a group receipt for the group's datacenter; a post is acked once
    /// queued (its group seq is not known yet: 0).
    fn queue_group_call(&self, home: usize, job: GroupJob) {
        let record = pb::WanRecord {
            record: Some(pb::wan_record::Record::Group(group_wire::call_of(&job))),
            queued_at_ms: 0,
        };
        let queued = self.wan.enqueue(home, &job.group, record);
        tokio::spawn(async move {
            let result = queued.await;
            let GroupCall::Post { tag, server_id, .. } = job.call else {
                return;
            };
            let Some(session) = job.reply else { return };
            let result = match result {
                Ok(_) => Ok((
                    AckInfo {
                        seq: 0,
                        server_id,
                        timestamp_ms: crate::clock::now_ms(),
                    },
                    false,
                )),
                Err(EnqueueFailure::Storage) => Err(AppendFailure::Storage),
                Err(EnqueueFailure::Busy) => Err(AppendFailure::Busy),
            };
            session.send(MailboxEvent::Appended { tag, result });
        });
    }
}

impl<T: Transport> Divert for WanDivert<T> {
    fn divert(&self, op: MailboxOp) -> Option<MailboxOp> {
        let Some(home) = op.owner().and_then(|key| self.far_home(key)) else {
            return self.inner.divert(op);
        };
        match op {
            MailboxOp::Append(job) => {
                let Some(append) = append_call(&job) else {
                    // Group copies for members homed elsewhere are not carried yet.
                    refuse(MailboxOp::Append(job));
                    return None;
                };
                let record = pb::WanRecord {
                    record: Some(pb::wan_record::Record::Append(append)),
                    queued_at_ms: 0,
                };
                let queued = self.wan.enqueue(home, &job.owner, record);
                tokio::spawn(async move {
                    let result = match queued.await {
                        // Durable in this datacenter's queue: acked, its seq not known yet.
                        Ok(_) => Ok((
                            AckInfo {
                                seq: 0,
                                server_id: job.server_id,
                                timestamp_ms: job.timestamp_ms,
                            },
                            false,
                        )),
                        Err(EnqueueFailure::Storage) => Err(AppendFailure::Storage),
                        Err(EnqueueFailure::Busy) => Err(AppendFailure::Busy),
                    };
                    if result.is_err() {
                        metrics::counter!(crate::metrics::REMOTE_FAILURES, "cause" => "wan")
                            .increment(1);
                    }
                    answer_append(*job, result);
                });
                None
            }
            MailboxOp::Group(job)
                if matches!(job.call, GroupCall::Post { .. } | GroupCall::Receipt { .. }) =>
            {
                self.queue_group_call(home, *job);
                None
            }
            // Typing in a group homed elsewhere: carried like a request, nothing answered.
            MailboxOp::Group(job) if matches!(job.call, GroupCall::Typing(_)) => {
                tokio::spawn(self.wan.relay(home, group_wire::call_of(&job)));
                None
            }
            // Other group requests are carried to the group and answered now.
            MailboxOp::Group(job) => {
                let answer = self.wan.relay(home, group_wire::call_of(&job));
                tokio::spawn(async move {
                    match answer.await {
                        Some(reply) => {
                            if let (Some(event), Some(session)) =
                                (group_wire::event_of(reply, &job), &job.reply)
                            {
                                session.send(event);
                            }
                        }
                        None => refuse(MailboxOp::Group(job)),
                    }
                });
                None
            }
            // Everything else on a key homed elsewhere (a login sent home missed, a request to
            // a group of another datacenter) is refused for now: OVERLOADED, the phone retries.
            other => {
                metrics::counter!(crate::metrics::REMOTE_FAILURES, "cause" => "wan").increment(1);
                refuse(other);
                None
            }
        }
    }

    fn logged_out(&self, user: &Id, conn_id: u64) {
        self.inner.logged_out(user, conn_id);
    }

    fn reregister(
        &self,
        user: &Id,
        device: &Id,
        conn_id: u64,
        token_issued_at: u64,
        done: Box<dyn FnOnce(Reregistration) + Send>,
    ) {
        self.inner
            .reregister(user, device, conn_id, token_issued_at, done);
    }

    fn owns(&self, user: &Id) -> bool {
        self.inner.owns(user)
    }

    fn relay_typing(&self, from_user: &Id, to_user: &Id, typing: bool) -> bool {
        match self.far_home(to_user) {
            Some(home) => {
                self.wan.typing(home, from_user, to_user, typing);
                true
            }
            None => self.inner.relay_typing(from_user, to_user, typing),
        }
    }

    fn watch_presence(&self, watcher: &Id, conn_id: u64, users: &[Id]) -> Vec<Id> {
        let (here, far) = self.by_home(users);
        for (dc, users) in far {
            self.wan.watch(dc, watcher, conn_id, users);
        }
        self.inner.watch_presence(watcher, conn_id, &here)
    }

    fn unwatch_presence(&self, watcher: &Id, conn_id: u64, users: &[Id]) {
        let (here, far) = self.by_home(users);
        for (dc, users) in far {
            self.wan.unwatch(dc, watcher, conn_id, users);
        }
        self.inner.unwatch_presence(watcher, conn_id, &here);
    }

    fn home_elsewhere(&self, user: &str) -> Option<Vec<String>> {
        let home = self.far_home(user)?;
        Some(self.wan.clients(home))
    }
}
