//! Group chats: each group is a keyed record on its shard, owned by the mailbox worker of its
//! key, with a log of its own (messages and membership/subject events numbered by `group_seq`).
//! An entry is acked once the journal holds it; then the fan-out ([`fanout`]) copies it into
//! every recipient's mailbox, in group order, off the sender's path.

pub mod fanout;
pub mod log;
pub mod record;
pub mod slot;
pub mod state;

pub use slot::GroupSlot;
pub use state::{Change, Group, GroupError, Member, Role};
