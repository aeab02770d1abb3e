//! A user's push registrations: per device, the token its platform's push service wakes it by,
//! whether it shows previews, and the conversations it muted. Kept in the account (absent for
//! users that never registered), journaled as a whole device state on every change
//! (`PushChanged` in `proto/tern/storage/v1/mailbox.proto`) and stored with the account record.

use std::sync::Arc;

use super::device_map::DeviceMap;
use crate::message::Id;
use crate::proto::storage::StoredPusher;
use crate::push::Platform;

/// Longest token accepted, in bytes.
pub const MAX_TOKEN_BYTES: usize = 4096;
/// Longest app id accepted, in bytes.
pub const MAX_APP_ID_BYTES: usize = 256;
/// Mutes one device keeps at most.
pub const MAX_MUTES: usize = 256;

/// A conversation as a device mutes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Conversation {
    /// 1:1 messages with this user.
    User(Id),
    /// Messages of this group.
    Group(Id),
}

impl Conversation {
    /// The stored form: `u:<user>` or `g:<group>`.
    pub fn key(&self) -> String {
        match self {
            Conversation::User(user) => format!("u:{user}"),
            Conversation::Group(group) => format!("g:{group}"),
        }
    }

    /// The conversation a stored form names.
    pub fn from_key(key: &str) -> Option<Self> {
        match key.split_once(':')? {
            ("u", user) => Some(Conversation::User(Id::from(user))),
            ("g", group) => Some(Conversation::Group(Id::from(group))),
            _ => None,
        }
    }

    /// The id the push carries: the peer user's or the group's.
    pub fn id(&self) -> &Id {
        match self {
            Conversation::User(id) | Conversation::Group(id) => id,
        }
    }
}

/// Where one device is pushed: shared with the pushes in flight, replaced on every change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The token's push service.
    pub platform: Platform,
    /// The token.
    pub token: Arc<str>,
    /// The app the token belongs to (may be empty).
    pub app_id: Arc<str>,
    /// Show sender and text.
    pub preview: bool,
    /// When it was registered, ms since the epoch.
    pub registered_ms: u64,
}

/// A change of one device's push state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushChange {
    /// Register (replace) the device's token.
    Register(Arc<Target>),
    /// Remove the device's registration.
    Unregister,
    /// Mute a conversation until a time (ms since the epoch; 0 unmutes).
    Mute(Conversation, u64),
    /// Remove the registration if it still has this token (the gateway rejected it, or it
    /// moved to another device).
    Drop(Arc<str>),
}

/// Why a change of a device's push state was not made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushFailure {
    /// It could not be made durable: STORAGE_FAILURE, retry.
    Storage,
    /// A queue was full or the user's node could not be reached: OVERLOADED, retry.
    Busy,
    /// The device keeps [`MAX_MUTES`] mutes already: INVALID_ARGUMENT.
    TooManyMutes,
}

/// Where the answer to a push change goes: the session that asked (or a node across the mesh).
pub struct PushReply(Box<dyn FnOnce(Result<(), PushFailure>) + Send>);

impl PushReply {
    /// An answer handed to `answer`.
    pub fn new(answer: impl FnOnce(Result<(), PushFailure>) + Send + 'static) -> Self {
        PushReply(Box::new(answer))
    }

    /// Answers.
    pub fn send(self, result: Result<(), PushFailure>) {
        (self.0)(result);
    }
}

impl std::fmt::Debug for PushReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PushReply")
    }
}

/// One device's push state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pusher {
    /// `None`: not registered (its mutes stay).
    pub target: Option<Arc<Target>>,
    /// Muted conversations and until when (ms since the epoch).
    mutes: Vec<(Conversation, u64)>,
}

impl Pusher {
    /// Applies `change` at `now_ms`; `Ok(false)` when nothing changed.
    pub fn apply(&mut self, change: PushChange, now_ms: u64) -> Result<bool, PushFailure> {
        Ok(match change {
            PushChange::Register(target) => {
                let same = self.target.as_deref().is_some_and(|old| {
                    old.platform == target.platform
                        && old.token == target.token
                        && old.app_id == target.app_id
                        && old.preview == target.preview
                });
                if !same {
                    self.target = Some(target);
                }
                !same
            }
            PushChange::Unregister => self.target.take().is_some(),
            PushChange::Mute(conversation, until_ms) => {
                if !self.mute(conversation, until_ms, now_ms) {
                    return Err(PushFailure::TooManyMutes);
                }
                true
            }
            PushChange::Drop(token) => {
                let matches = self.target.as_ref().is_some_and(|t| t.token == token);
                if matches {
                    self.target = None;
                }
                matches
            }
        })
    }

    /// Conversations muted at `now_ms`.
    pub fn muted_count(&self, now_ms: u64) -> usize {
        self.mutes
            .iter()
            .filter(|(_, until)| *until > now_ms)
            .count()
    }

    /// Whether `conversation` is muted at `now_ms`.
    pub fn muted(&self, conversation: &Conversation, now_ms: u64) -> bool {
        self.mutes
            .iter()
            .any(|(muted, until)| muted == conversation && *until > now_ms)
    }

    /// Mutes `conversation` until `until_ms` (0: unmutes); drops mutes that ran out at
    /// `now_ms`. False when the device already keeps [`MAX_MUTES`].
    pub fn mute(&mut self, conversation: Conversation, until_ms: u64, now_ms: u64) -> bool {
        self.mutes
            .retain(|(muted, until)| *until > now_ms && *muted != conversation);
        if until_ms <= now_ms {
            return true;
        }
        if self.mutes.len() >= MAX_MUTES {
            return false;
        }
        self.mutes.push((conversation, until_ms));
        true
    }

    /// The stored form of `device`'s state.
    pub fn to_stored(&self, device: &str) -> StoredPusher {
        let (muted, muted_until_ms) = self
            .mutes
            .iter()
            .map(|(conversation, until)| (conversation.key(), *until))
            .unzip();
        let target = self.target.as_deref();
        StoredPusher {
            device: device.to_owned(),
            platform: target.map_or(0, |t| platform_to_wire(t.platform)),
            token: target.map_or_else(String::new, |t| t.token.to_string()),
            app_id: target.map_or_else(String::new, |t| t.app_id.to_string()),
            preview: target.is_some_and(|t| t.preview),
            registered_ms: target.map_or(0, |t| t.registered_ms),
            muted,
            muted_until_ms,
        }
    }

    /// The state a stored form describes, and its device.
    pub fn from_stored(stored: StoredPusher) -> (Id, Pusher) {
        let target = platform_from_wire(stored.platform)
            .filter(|_| !stored.token.is_empty())
            .map(|platform| {
                Arc::new(Target {
                    platform,
                    token: Arc::from(stored.token.as_str()),
                    app_id: Arc::from(stored.app_id.as_str()),
                    preview: stored.preview,
                    registered_ms: stored.registered_ms,
                })
            });
        let mutes = stored
            .muted
            .iter()
            .zip(&stored.muted_until_ms)
            .filter_map(|(key, until)| Some((Conversation::from_key(key)?, *until)))
            .collect();
        (Id::from(stored.device.as_str()), Pusher { target, mutes })
    }
}

/// The push states of a user's devices.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pushers {
    devices: DeviceMap<Pusher>,
}

impl Pushers {
    /// `device`'s state, created empty when it has none.
    pub fn device_mut(&mut self, device: &Id) -> &mut Pusher {
        self.devices.get_or_insert_with(device, Pusher::default)
    }

    /// `device`'s state.
    pub fn device(&self, device: &str) -> Option<&Pusher> {
        self.devices.get(device)
    }

    /// Sets `device`'s whole state (recovery, a follower applying a record).
    pub fn set(&mut self, device: &Id, pusher: Pusher) {
        *self.device_mut(device) = pusher;
    }

    /// Every device's state.
    pub fn iter(&self) -> impl Iterator<Item = (&Id, &Pusher)> {
        self.devices.iter()
    }

    /// True when some device has a token.
    pub fn any_registered(&self) -> bool {
        self.devices.values().any(|pusher| pusher.target.is_some())
    }

    /// The devices to push for a message in `conversation` at `now_ms`: registered and not
    /// muted.
    pub fn targets(
        &self,
        conversation: &Conversation,
        now_ms: u64,
    ) -> impl Iterator<Item = (&Id, &Arc<Target>)> {
        self.devices.iter().filter_map(move |(device, pusher)| {
            let target = pusher.target.as_ref()?;
            (!pusher.muted(conversation, now_ms)).then_some((device, target))
        })
    }
}

/// The wire value of a platform (`PushPlatform` of the client protocol, the same numbers).
pub fn platform_to_wire(platform: Platform) -> i32 {
    match platform {
        Platform::Apns => 1,
        Platform::Fcm => 2,
        Platform::WebPush => 3,
    }
}

/// The platform of a wire value; `None` for an unknown or unspecified one.
pub fn platform_from_wire(value: i32) -> Option<Platform> {
    match value {
        1 => Some(Platform::Apns),
        2 => Some(Platform::Fcm),
        3 => Some(Platform::WebPush),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(token: &str) -> Arc<Target> {
        Arc::new(Target {
            platform: Platform::Fcm,
            token: Arc::from(token),
            app_id: Arc::from("app"),
            preview: true,
            registered_ms: 7,
        })
    }

    #[test]
    fn mutes_run_out_replace_each_other_and_round_trip() {
        let bob = Conversation::User(Id::from("bob"));
        let team = Conversation::Group(Id::from("team"));
        let mut pusher = Pusher {
            target: Some(target("tok")),
            ..Pusher::default()
        };
        assert!(pusher.mute(bob.clone(), 1_000, 100));
        assert!(pusher.mute(team.clone(), u64::MAX, 100));
        assert!(pusher.muted(&bob, 999) && !pusher.muted(&bob, 1_000));
        assert!(pusher.muted(&team, 5_000));
        assert!(!pusher.muted(&Conversation::User(Id::from("team")), 5_000));
        // Muting again replaces; 0 unmutes.
        assert!(pusher.mute(bob.clone(), 2_000, 100));
        assert!(pusher.muted(&bob, 1_500));
        assert!(pusher.mute(bob.clone(), 0, 100));
        assert!(!pusher.muted(&bob, 150));

        let (device, back) = Pusher::from_stored(pusher.to_stored("phone"));
        assert_eq!((&*device, back), ("phone", pusher));
    }

    #[test]
    fn targets_skip_unregistered_and_muted_devices() {
        let bob = Conversation::User(Id::from("bob"));
        let mut pushers = Pushers::default();
        pushers.device_mut(&Id::from("phone")).target = Some(target("a"));
        pushers.device_mut(&Id::from("tablet")).target = Some(target("b"));
        pushers.device_mut(&Id::from("watch"));
        assert!(
            pushers
                .device_mut(&Id::from("tablet"))
                .mute(bob.clone(), 50, 0)
        );
        let devices = |now| {
            pushers
                .targets(&bob, now)
                .map(|(device, _)| device.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(devices(10), ["phone"]);
        assert_eq!(devices(50), ["phone", "tablet"]);
    }
}
