//! Translates what the mailbox service and the directory tell a session into its actions.

use ractor::ActorRef;

use super::{SessionMsg, SessionState, go_away_label};
use crate::mailbox::MailboxEvent;
use crate::proto::v1::{ErrorCode, GoAwayReason};

impl SessionState {
    /// Acts on one event of the mailbox service (or the directory of who is online).
    pub(super) fn on_event(&mut self, myself: &ActorRef<SessionMsg>, event: MailboxEvent) {
        match event {
            MailboxEvent::Push(entry) => {
                let missed = self.pushes.release();
                self.on_push(myself, &entry, missed);
            }
            MailboxEvent::Batch {
                entries,
                last_seq,
                read_upto,
            } => self.on_batch(myself, &entries, last_seq, read_upto),
            MailboxEvent::FetchFailed => self.fetch_failed(myself),
            MailboxEvent::Appended { tag, result } => self.on_appended(tag, result),
            MailboxEvent::Devices(count) => self.devices = count,
            MailboxEvent::GroupAnswer { request_id, answer } => {
                self.on_group_answer(request_id, answer);
            }
            MailboxEvent::GroupRefused { group, error } => self.on_group_refused(&group, &error),
            MailboxEvent::PushAnswer { request_id, result } => {
                self.on_push_answer(request_id, result);
            }
            MailboxEvent::Typing {
                from_user,
                typing,
                group,
            } => {
                let missed = self.pushes.release();
                self.on_typing_notice(&from_user, typing, group.as_ref());
                if missed {
                    self.delivery.lost_pushes();
                    self.fetch(myself);
                }
            }
            MailboxEvent::Presence {
                user,
                online,
                last_seen_ms,
            } => self.on_presence(&user, online, last_seen_ms),
            MailboxEvent::Missed => {
                self.delivery.lost_pushes();
                self.fetch(myself);
            }
            MailboxEvent::Replaced => {
                let reason = GoAwayReason::Replaced;
                self.go_away(reason, 0, go_away_label(reason));
            }
            MailboxEvent::Revoked(revoked) => {
                tracing::info!(conn = self.conn.id, user = %self.user, device = %self.device, %revoked, "session signed out");
                self.fatal(ErrorCode::TokenRevoked, &revoked.to_string());
            }
        }
    }
}
