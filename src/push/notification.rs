//! What one push says, as handed from the scheduler to the gateway client.

/// The push service a device's token belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Platform {
    /// Apple Push Notification service.
    Apns,
    /// Firebase Cloud Messaging.
    Fcm,
    /// Web Push (RFC 8030), through a gateway that speaks it.
    WebPush,
}

impl Platform {
    /// The name used in logs, metrics and docs.
    pub fn label(self) -> &'static str {
        match self {
            Platform::Apns => "apns",
            Platform::Fcm => "fcm",
            Platform::WebPush => "webpush",
        }
    }
}

/// One push to one device: the burst of messages it stands for, collapsed.
///
/// No message content unless the device asked for previews: `sender` and `preview` are `None`
/// otherwise. The ids are always there, so that the app knows what to fetch when it wakes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// Unique per push and the same across its retries (`<user>/<device>/<seq>`), so a gateway
    /// or app can drop a repeat.
    pub id: String,
    /// Where the token belongs.
    pub platform: Platform,
    /// The device's push token (APNs device token, FCM registration token, Web Push
    /// subscription as the gateway expects it).
    pub token: String,
    /// The app the token was issued to (APNs topic / bundle id, FCM or Matrix app id); may be
    /// empty.
    pub app_id: String,
    /// When the device registered the token, seconds since the Unix epoch.
    pub registered_secs: u64,
    /// The user the push is for.
    pub user: String,
    /// The device it is for.
    pub device: String,
    /// The conversation of the latest message: the peer user's id for a 1:1 message, the
    /// group's id for a group message.
    pub conversation: String,
    /// `conversation` is a group.
    pub group: bool,
    /// Server id of the latest message.
    pub server_id: u64,
    /// Seq of the latest message in the user's mailbox: the app fetches up to it.
    pub seq: u64,
    /// Unread messages the push stands for (at least 1).
    pub count: u32,
    /// With previews: who sent the latest message (user id).
    pub sender: Option<String>,
    /// With previews: the latest message's text (UTF-8 bodies only, cut to a few hundred
    /// bytes at a character boundary).
    pub preview: Option<String>,
}
