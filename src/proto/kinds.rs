//! Conversions between the domain's kinds (message, receipt, group event) and their wire enums,
//! shared by the client protocol and the on-disk records.

use crate::message::{GroupEventKind, MessageKind, ReceiptKind};
use crate::proto::v1 as wire;

/// The wire message kind.
pub fn message_kind_to_wire(kind: MessageKind) -> wire::MessageKind {
    match kind {
        MessageKind::Text => wire::MessageKind::Text,
        MessageKind::Binary => wire::MessageKind::Binary,
        MessageKind::Media => wire::MessageKind::Media,
    }
}

/// The domain message kind; `None` for unspecified or unknown values.
pub fn message_kind_from_wire(kind: i32) -> Option<MessageKind> {
    match wire::MessageKind::try_from(kind).ok()? {
        wire::MessageKind::Text => Some(MessageKind::Text),
        wire::MessageKind::Binary => Some(MessageKind::Binary),
        wire::MessageKind::Media => Some(MessageKind::Media),
        wire::MessageKind::Unspecified => None,
    }
}

/// The wire receipt kind.
pub fn receipt_kind_to_wire(kind: ReceiptKind) -> wire::ReceiptKind {
    match kind {
        ReceiptKind::Delivered => wire::ReceiptKind::Delivered,
        ReceiptKind::Read => wire::ReceiptKind::Read,
    }
}

/// The domain receipt kind; `None` for unspecified or unknown values.
pub fn receipt_kind_from_wire(kind: i32) -> Option<ReceiptKind> {
    match wire::ReceiptKind::try_from(kind).ok()? {
        wire::ReceiptKind::Delivered => Some(ReceiptKind::Delivered),
        wire::ReceiptKind::Read => Some(ReceiptKind::Read),
        wire::ReceiptKind::Unspecified => None,
    }
}

/// The wire event kind.
pub fn event_kind_to_wire(kind: GroupEventKind) -> wire::GroupEventKind {
    match kind {
        GroupEventKind::Created => wire::GroupEventKind::Created,
        GroupEventKind::Added => wire::GroupEventKind::Added,
        GroupEventKind::Removed => wire::GroupEventKind::Removed,
        GroupEventKind::Left => wire::GroupEventKind::Left,
        GroupEventKind::Promoted => wire::GroupEventKind::Promoted,
        GroupEventKind::Demoted => wire::GroupEventKind::Demoted,
        GroupEventKind::Subject => wire::GroupEventKind::Subject,
    }
}

/// The domain event kind; `None` for unspecified or unknown values.
pub fn event_kind_from_wire(kind: i32) -> Option<GroupEventKind> {
    Some(match wire::GroupEventKind::try_from(kind).ok()? {
        wire::GroupEventKind::Created => GroupEventKind::Created,
        wire::GroupEventKind::Added => GroupEventKind::Added,
        wire::GroupEventKind::Removed => GroupEventKind::Removed,
        wire::GroupEventKind::Left => GroupEventKind::Left,
        wire::GroupEventKind::Promoted => GroupEventKind::Promoted,
        wire::GroupEventKind::Demoted => GroupEventKind::Demoted,
        wire::GroupEventKind::Subject => GroupEventKind::Subject,
        wire::GroupEventKind::Unspecified => return None,
    })
}
