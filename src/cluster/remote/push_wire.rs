//! Push registration changes across the mesh: a device whose user is owned by another node has
//! its change made there ([`pb::PushCall`]), and the answer comes back as a reply.

use std::sync::Arc;

use crate::mailbox::pushers::{
    Conversation, PushChange, PushFailure, Target, platform_from_wire, platform_to_wire,
};
use crate::message::Id;
use crate::proto::mesh as pb;

use pb::mailbox_refused::Reason;
use pb::mailbox_reply::Reply;
use pb::push_call::Change;

/// The call that makes `change` to `device` of `owner` on the owner.
pub fn call_of(owner: &Id, device: &Id, change: &PushChange) -> pb::PushCall {
    let change = match change {
        PushChange::Register(target) => Change::Register(pb::PushTarget {
            platform: platform_to_wire(target.platform),
            token: target.token.to_string(),
            app_id: target.app_id.to_string(),
            preview: target.preview,
            registered_ms: target.registered_ms,
        }),
        PushChange::Unregister => Change::Unregister(pb::Done {}),
        PushChange::Mute(conversation, until_ms) => Change::Mute(pb::PushMuteChange {
            conversation: conversation.key(),
            until_ms: *until_ms,
        }),
        PushChange::Drop(token) => Change::DropToken(token.to_string()),
    };
    pb::PushCall {
        owner: owner.to_string(),
        device: device.to_string(),
        change: Some(change),
    }
}

/// The owner, device and change a call asks for; `None` for a malformed one.
pub fn change_of(call: pb::PushCall) -> Option<(Id, Id, PushChange)> {
    let change = match call.change? {
        Change::Register(target) => PushChange::Register(Arc::new(Target {
            platform: platform_from_wire(target.platform)?,
            token: Arc::from(target.token.as_str()),
            app_id: Arc::from(target.app_id.as_str()),
            preview: target.preview,
            registered_ms: target.registered_ms,
        })),
        Change::Unregister(_) => PushChange::Unregister,
        Change::Mute(mute) => {
            PushChange::Mute(Conversation::from_key(&mute.conversation)?, mute.until_ms)
        }
        Change::DropToken(token) => PushChange::Drop(Arc::from(token.as_str())),
    };
    Some((
        Id::from(call.owner.as_str()),
        Id::from(call.device.as_str()),
        change,
    ))
}

/// The reply carrying `result`.
pub fn reply_of(result: Result<(), PushFailure>) -> Reply {
    let reason = match result {
        Ok(()) => return Reply::Done(pb::Done {}),
        Err(PushFailure::Storage) => Reason::Storage,
        Err(PushFailure::Busy) => Reason::Busy,
        Err(PushFailure::TooManyMutes) => Reason::TooManyMutes,
    };
    Reply::Refused(pb::MailboxRefused {
        reason: reason.into(),
    })
}

/// The result a reply carries (anything unexpected: busy, retry).
pub fn result_of(reply: Option<Reply>) -> Result<(), PushFailure> {
    match reply {
        Some(Reply::Done(_)) => Ok(()),
        Some(Reply::Refused(refused)) => Err(match refused.reason() {
            Reason::Storage => PushFailure::Storage,
            Reason::TooManyMutes => PushFailure::TooManyMutes,
            _ => PushFailure::Busy,
        }),
        _ => Err(PushFailure::Busy),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::Platform;

    #[test]
    fn changes_and_answers_round_trip() {
        let (alice, phone) = (Id::from("alice"), Id::from("phone"));
        let changes = [
            PushChange::Register(Arc::new(Target {
                platform: Platform::Fcm,
                token: Arc::from("tok"),
                app_id: Arc::from("app"),
                preview: true,
                registered_ms: 9,
            })),
            PushChange::Unregister,
            PushChange::Mute(Conversation::Group(Id::from("team")), 77),
            PushChange::Drop(Arc::from("tok")),
        ];
        for change in changes {
            let call = call_of(&alice, &phone, &change);
            assert_eq!(
                change_of(call),
                Some((alice.clone(), phone.clone(), change))
            );
        }
        for result in [
            Ok(()),
            Err(PushFailure::Storage),
            Err(PushFailure::Busy),
            Err(PushFailure::TooManyMutes),
        ] {
            assert_eq!(result_of(Some(reply_of(result))), result);
        }
    }
}
