//! Login tokens: an HMAC-SHA256-signed (user, device, expiry) triple, as text.
//!
//! Format: `t1.<user>.<device>.<expiry>.<mac>` where `user` and `device` are base64url (no
//! padding), `expiry` is decimal seconds since the Unix epoch and `mac` is the base64url
//! HMAC-SHA256, under the configured key, of everything before the last dot.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Longest user or device id, in bytes.
pub const MAX_ID_BYTES: usize = 64;

const PREFIX: &str = "t1";

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not of the token format at all.
    #[error("malformed token")]
    Malformed,
    /// The signature does not match: forged, or signed with another key.
    #[error("bad token signature")]
    BadSignature,
    /// Correctly signed but past its expiry.
    #[error("token expired")]
    Expired,
    /// A user or device id that is empty, too long, or has characters outside `[A-Za-z0-9._@+-]`.
    #[error("invalid id {0:?}: 1-64 characters of [A-Za-z0-9._@+-]")]
    InvalidId(String),
}

/// The identity a valid token proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The user.
    pub user: String,
    /// The device of that user.
    pub device: String,
    /// Expiry, seconds since the Unix epoch.
    pub expires_at: u64,
}

/// True when `id` is usable as a user or device id.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_BYTES
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'+' | b'-'))
}

/// Signs and verifies tokens with one key.
#[derive(Clone)]
pub struct TokenKey {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

impl TokenKey {
    /// A key from the configured secret (any length is accepted by HMAC; config asks for >= 16).
    pub fn new(secret: &[u8]) -> Self {
        // HMAC accepts keys of every length, so this cannot fail.
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        Self { mac }
    }

    /// A token for `user` on `device`, valid until `expires_at` (seconds since the epoch).
    pub fn sign(&self, user: &str, device: &str, expires_at: u64) -> Result<String, TokenError> {
        for id in [user, device] {
            if !valid_id(id) {
                return Err(TokenError::InvalidId(id.to_owned()));
            }
        }
        let body = format!(
            "{PREFIX}.{}.{}.{expires_at}",
            URL_SAFE_NO_PAD.encode(user),
            URL_SAFE_NO_PAD.encode(device)
        );
        let mut mac = self.mac.clone();
        mac.update(body.as_bytes());
        let tag = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        Ok(format!("{body}.{tag}"))
    }

    /// Checks the signature, then the expiry against `now` (seconds since the epoch).
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, TokenError> {
        let (body, tag) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| TokenError::Malformed)?;
        let mut mac = self.mac.clone();
        mac.update(body.as_bytes());
        mac.verify_slice(&tag)
            .map_err(|_| TokenError::BadSignature)?;

        let mut parts = body.split('.');
        let (Some(PREFIX), Some(user), Some(device), Some(expiry), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(TokenError::Malformed);
        };
        let decode = |part: &str| {
            URL_SAFE_NO_PAD
                .decode(part)
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .filter(|id| valid_id(id))
                .ok_or(TokenError::Malformed)
        };
        let claims = Claims {
            user: decode(user)?,
            device: decode(device)?,
            expires_at: expiry.parse().map_err(|_| TokenError::Malformed)?,
        };
        if claims.expires_at <= now {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let key = TokenKey::new(b"0123456789abcdef");
        let token = key.sign("alice", "phone-1", 2_000).unwrap();
        let claims = key.verify(&token, 1_000).unwrap();
        assert_eq!(claims.user, "alice");
        assert_eq!(claims.device, "phone-1");
        assert_eq!(claims.expires_at, 2_000);
    }

    #[test]
    fn expired_forged_and_malformed_are_refused() {
        let key = TokenKey::new(b"0123456789abcdef");
        let token = key.sign("alice", "phone-1", 2_000).unwrap();
        assert_eq!(key.verify(&token, 2_000), Err(TokenError::Expired));
        let other = TokenKey::new(b"another-key-of-16");
        assert_eq!(other.verify(&token, 1_000), Err(TokenError::BadSignature));
        let tampered = token.replacen("t1.", "t1.Y", 1);
        assert_eq!(key.verify(&tampered, 1_000), Err(TokenError::BadSignature));
        assert_eq!(key.verify("garbage", 1_000), Err(TokenError::Malformed));
        assert_eq!(key.verify("", 1_000), Err(TokenError::Malformed));
    }

    #[test]
    fn ids_are_checked() {
        let key = TokenKey::new(b"0123456789abcdef");
        assert!(matches!(
            key.sign("a:b", "d", 1),
            Err(TokenError::InvalidId(_))
        ));
        assert!(matches!(
            key.sign("", "d", 1),
            Err(TokenError::InvalidId(_))
        ));
        assert!(key.sign(&"a".repeat(65), "d", 1).is_err());
    }
}
