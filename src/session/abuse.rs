//! Group requests under the per-user abuse limits (`limits.group_creates_per_min`,
//! `limits.group_adds_per_min`, counted on this node): one over its limit is answered
//! `RATE_LIMITED` with the delay, and the connection goes on.

use super::{SessionState, group_wire};
use crate::limits::Refused;
use crate::proto::v1::group_request::Op;
use crate::proto::v1::server_frame::Frame as Out;

impl SessionState {
    /// True when the group request `op` may go on; otherwise answers `request_id` with the
    /// refusal. Creations and member adds take a token of the user's bucket, whether or not
    /// the group's worker then accepts them; other requests are not limited here.
    pub(super) fn admit_group_op(&mut self, request_id: u64, op: &Op) -> bool {
        let admitted = match op {
            Op::Create(_) => self.node.abuse.admit_group_create(&self.user),
            Op::Add(_) => self.node.abuse.admit_group_add(&self.user),
            _ => return true,
        };
        match admitted {
            Ok(()) => true,
            Err(refused) => {
                self.refuse_group_op(request_id, &refused);
                false
            }
        }
    }

    fn refuse_group_op(&mut self, request_id: u64, refused: &Refused) {
        let code = super::wire::abuse_code(refused);
        let max_frame = self.node.config.limits.max_frame_bytes as usize;
        let mut response =
            group_wire::response(request_id, Err((code, refused.to_string())), max_frame);
        response.retry_after_ms = refused.retry_after_ms();
        self.send(Out::GroupResponse(response));
    }
}
