//! Push notifications on the worker: changes of a device's registration and mutes (journaled
//! before they are answered), and which registered devices each new message concerns.

use std::sync::Arc;

use super::{MailboxWorker, Shared};
use crate::clock::now_ms;
use crate::mailbox::account::Account;
use crate::mailbox::pushers::{Conversation, PushChange, PushFailure, PushReply, Target};
use crate::mailbox::record;
use crate::message::{Entry, GroupContent, Id, MessageKind, Payload};
use crate::push::hub::{Arrival, PushEvent};

/// Bytes of a message's text a preview carries at most.
const PREVIEW_BYTES: usize = 200;

/// The registered devices a new message is for, decided when it is appended (the account is
/// the worker's); told to the push hub once the message is durable.
#[derive(Debug)]
pub(super) struct PushTargets {
    conversation: Conversation,
    sender: Id,
    preview: Option<Arc<str>>,
    devices: Vec<(Id, Arc<Target>)>,
}

impl PushTargets {
    /// The devices of `owner` to consider for `entry`: messages from others only (not the
    /// user's own copies, receipts or group events), to devices with a token that did not mute
    /// the conversation. `None` when there are none.
    pub(super) fn of(owner: &Id, account: &Account, entry: &Entry) -> Option<Box<PushTargets>> {
        let pushers = account.pushers()?;
        let (conversation, sender, kind, body) = match &entry.payload {
            Payload::Message(m) if m.from_user != *owner => (
                Conversation::User(m.from_user.clone()),
                &m.from_user,
                m.kind,
                &m.body,
            ),
            Payload::Group(g) if g.from_user != *owner => match &g.content {
                GroupContent::Message { kind, body } => (
                    Conversation::Group(g.group_id.clone()),
                    &g.from_user,
                    *kind,
                    body,
                ),
                _ => return None,
            },
            _ => return None,
        };
        let now = now_ms();
        let devices: Vec<(Id, Arc<Target>)> = pushers
            .targets(&conversation, now)
            .map(|(device, target)| (device.clone(), target.clone()))
            .collect();
        if devices.is_empty() {
            return None;
        }
        let preview = devices
            .iter()
            .any(|(_, target)| target.preview)
            .then(|| preview(kind, body))
            .flatten();
        Some(Box::new(PushTargets {
            conversation,
            sender: sender.clone(),
            preview,
            devices,
        }))
    }

    /// Tells the hub that `entry` is durable, device by device, with whether each had a live
    /// session.
    pub(super) fn tell(self, shared: &Shared, owner: &Id, entry: &Entry) {
        let Some(hub) = &shared.push else { return };
        let server_id = match &entry.payload {
            Payload::Message(m) => m.server_id,
            Payload::Group(g) => g.server_id,
            _ => 0,
        };
        for (device, target) in self.devices {
            let mut online = false;
            shared.registry.for_each(owner, |session| {
                online |= session.device == device;
            });
            let preview = self.preview.clone().filter(|_| target.preview);
            hub.tell(PushEvent::Arrived(Box::new(Arrival {
                owner: owner.clone(),
                device,
                target,
                seq: entry.seq,
                server_id,
                conversation: self.conversation.clone(),
                sender: self.sender.clone(),
                preview,
                online,
            })));
        }
    }
}

/// A message's preview text: the start of a text body (cut at a character boundary), a word
/// for media; nothing for application bytes.
fn preview(kind: MessageKind, body: &[u8]) -> Option<Arc<str>> {
    match kind {
        MessageKind::Text => {
            let text = std::str::from_utf8(body).ok()?;
            let mut end = text.len().min(PREVIEW_BYTES);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            Some(Arc::from(&text[..end]))
        }
        MessageKind::Media => Some(Arc::from("Media")),
        MessageKind::Binary => None,
    }
}

impl MailboxWorker {
    /// Applies a change of `device`'s push state, journals the device's whole state, and
    /// answers `reply` once that is durable (at once when nothing changed).
    pub(super) fn push_change(
        &mut self,
        owner: Id,
        device: Id,
        change: PushChange,
        reply: Option<PushReply>,
    ) {
        let answer = |reply: Option<PushReply>, result: Result<(), PushFailure>| {
            if let Some(reply) = reply {
                reply.send(result);
            }
        };
        let slot = self.slots.entry(owner.clone()).or_default();
        let pusher = slot.account.pusher_mut(&device);
        let before = pusher.target.clone();
        let changed = match pusher.apply(change, now_ms()) {
            Ok(changed) => changed,
            Err(refused) => return answer(reply, Err(refused)),
        };
        if !changed {
            return answer(reply, Ok(()));
        }
        slot.dirty = true;
        let after = pusher.target.clone();
        let payload = record::encode_push(&owner, &device, pusher);
        if let Some(hub) = &self.shared.push {
            let replaced =
                before.filter(|old| after.as_ref().is_none_or(|new| new.token != old.token));
            if let Some(old) = replaced {
                hub.release(&old.token, &owner, &device);
                hub.tell(PushEvent::Forget {
                    owner: owner.clone(),
                    device: device.clone(),
                });
            }
            if let Some(new) = &after {
                hub.claim(&new.token, &owner, &device, new.registered_ms);
            }
        }
        let storage_failures = self.shared.storage_failures.clone();
        // The answer is shared by the journal's callback and the refusal below: whichever runs.
        let reply = Arc::new(std::sync::Mutex::new(reply));
        let on_durable = reply.clone();
        let refused = self.journal.append_with(&owner, payload, move |durable| {
            if !durable {
                storage_failures.increment(1);
            }
            let result = if durable {
                Ok(())
            } else {
                Err(PushFailure::Storage)
            };
            answer(take(&on_durable), result);
        });
        // Refused outright (a full queue), the callback was dropped unrun: the change stays in
        // memory, and the device is told to retry.
        if refused.is_err() {
            answer(take(&reply), Err(PushFailure::Busy));
        }
    }

    /// Tells the hub that `device` of `owner` has everything up to `up_to`, if it is
    /// registered.
    pub(super) fn push_acked(&self, owner: &Id, device: &Id, up_to: u64) {
        let Some(hub) = &self.shared.push else { return };
        let registered = self
            .slots
            .get(owner)
            .and_then(|slot| slot.account.pushers())
            .and_then(|pushers| pushers.device(device))
            .is_some_and(|pusher| pusher.target.is_some());
        if registered {
            hub.tell(PushEvent::Acked {
                owner: owner.clone(),
                device: device.clone(),
                up_to,
            });
        }
    }

    /// Registers every recovered token with the hub (the newest registration of a token wins).
    pub(super) fn claim_recovered_tokens(&self) {
        let Some(hub) = &self.shared.push else { return };
        for (owner, slot) in &self.slots {
            let Some(pushers) = slot.account.pushers() else {
                continue;
            };
            for (device, pusher) in pushers.iter() {
                if let Some(target) = &pusher.target {
                    hub.claim(&target.token, owner, device, target.registered_ms);
                }
            }
        }
    }
}

/// Takes the answer out of its cell (a poisoned lock still holds it).
fn take(cell: &std::sync::Mutex<Option<PushReply>>) -> Option<PushReply> {
    cell.lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .take()
}
