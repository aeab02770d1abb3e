//! A minimal MQTT 3.1.1 client, enough to load a broker the way the chat scenarios load tern:
//! CONNECT/CONNACK, SUBSCRIBE/SUBACK, PUBLISH/PUBACK (QoS 0 and 1), PINGREQ/PINGRESP and
//! DISCONNECT. QoS 2, wills, user names and retained-message handling are left out.

pub mod client;
pub mod codec;

pub use self::client::{MqttReader, MqttWriter};
pub use self::codec::Packet;

/// What can go wrong speaking MQTT.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    /// Socket trouble.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The broker closed the connection.
    #[error("connection closed by the broker")]
    Closed,
    /// A packet that does not follow MQTT 3.1.1.
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    /// A packet larger than the client accepts (checked before allocating).
    #[error("packet of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Announced remaining length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// CONNACK with a non-zero return code.
    #[error("connection refused with return code {0}")]
    Refused(u8),
    /// SUBACK with the failure code 0x80.
    #[error("subscription to {0:?} refused")]
    SubscribeRefused(String),
    /// A packet that makes no sense at this point (e.g. anything but CONNACK first).
    #[error("unexpected packet: {0}")]
    Unexpected(String),
}
