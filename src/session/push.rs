//! Push registration frames: a device registers or removes its push token, or mutes a
//! conversation; the user's mailbox worker makes the change durable and the session answers.

use std::sync::Arc;

use super::SessionState;
use crate::clock::now_ms;
use crate::mailbox::pushers::{
    Conversation, MAX_APP_ID_BYTES, MAX_TOKEN_BYTES, PushChange, PushFailure, PushReply, Target,
    platform_from_wire,
};
use crate::mailbox::{MailboxEvent, MailboxOp};
use crate::message::Id;
use crate::proto::v1::{
    ErrorCode, PushRequest, PushResponse, push_request::Op, server_frame::Frame as Out,
};
use crate::token::valid_id;

impl SessionState {
    /// A push registration request: checked here, then made on the user's worker.
    pub(super) fn on_push_request(&mut self, request: PushRequest) {
        let request_id = request.request_id;
        let change = match request.op {
            None => Err("empty push request"),
            Some(Op::Register(register)) => match platform_from_wire(register.platform) {
                None => Err("unknown push platform"),
                Some(_) if register.token.is_empty() => Err("empty push token"),
                Some(_) if register.token.len() > MAX_TOKEN_BYTES => {
                    Err("push token over 4096 bytes")
                }
                Some(_) if register.app_id.len() > MAX_APP_ID_BYTES => Err("app id over 256 bytes"),
                Some(platform) => Ok(PushChange::Register(Arc::new(Target {
                    platform,
                    token: Arc::from(register.token.as_str()),
                    app_id: Arc::from(register.app_id.as_str()),
                    preview: register.preview,
                    registered_ms: now_ms(),
                }))),
            },
            Some(Op::Unregister(_)) => Ok(PushChange::Unregister),
            Some(Op::Mute(mute)) => match (mute.user.is_empty(), mute.group_id.is_empty()) {
                (false, true) if valid_id(&mute.user) => Ok(PushChange::Mute(
                    Conversation::User(Id::from(mute.user.as_str())),
                    mute.until_ms,
                )),
                (true, false) if valid_id(&mute.group_id) => Ok(PushChange::Mute(
                    Conversation::Group(Id::from(mute.group_id.as_str())),
                    mute.until_ms,
                )),
                (false, false) | (true, true) => {
                    Err("a mute names exactly one of user and group_id")
                }
                _ => Err("invalid user or group id"),
            },
        };
        let change = match change {
            Ok(change) => change,
            Err(problem) => {
                return self.answer_push(request_id, ErrorCode::InvalidArgument, problem);
            }
        };
        let session = self.reply_to();
        let op = MailboxOp::Push {
            owner: self.user.clone(),
            device: self.device.clone(),
            change,
            reply: Some(PushReply::new(move |result| {
                session.send(MailboxEvent::PushAnswer { request_id, result });
            })),
        };
        if self.node.submit(op).is_err() {
            self.answer_push(request_id, ErrorCode::Overloaded, "server busy; retry");
        }
    }

    /// The worker's answer to a push request.
    pub(super) fn on_push_answer(&mut self, request_id: u64, result: Result<(), PushFailure>) {
        let (code, message) = match result {
            Ok(()) => (ErrorCode::Unspecified, ""),
            Err(PushFailure::Storage) => (
                ErrorCode::StorageFailure,
                "the change could not be stored; retry later",
            ),
            Err(PushFailure::Busy) => (ErrorCode::Overloaded, "server busy; retry"),
            Err(PushFailure::TooManyMutes) => (
                ErrorCode::InvalidArgument,
                "this device has 256 mutes already",
            ),
        };
        self.answer_push(request_id, code, message);
    }

    fn answer_push(&mut self, request_id: u64, error: ErrorCode, message: &str) {
        self.send(Out::PushResponse(PushResponse {
            request_id,
            error: error.into(),
            message: message.to_owned(),
        }));
    }
}
