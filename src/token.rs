//! Login tokens: an HMAC-SHA256-signed (key id, user, device, issue time, expiry) tuple, as
//! text, verified against any of the keys the node accepts, so a key can be replaced without
//! logging every phone out (docs/operations.md, "Rotating the token key").
//!
//! Format: `t2.<key id>.<user>.<device>.<issued>.<expiry>.<mac>` where `user` and `device` are
//! base64url (no padding), `issued` and `expiry` are decimal seconds since the Unix epoch and
//! `mac` is the base64url HMAC-SHA256, under the key named by `key id`, of everything before the
//! last dot. Tokens of the first format, `t1.<user>.<device>.<expiry>.<mac>` (no key id, no
//! issue time), are still accepted under any of the keys.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Longest user or device id, in bytes.
pub const MAX_ID_BYTES: usize = 64;

/// Longest key id, in bytes.
pub const MAX_KEY_ID_BYTES: usize = 16;

/// The id of the signing key when the configuration names none.
pub const DEFAULT_KEY_ID: &str = "k1";

const PREFIX: &str = "t2";
const LEGACY_PREFIX: &str = "t1";

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not of the token format at all.
    #[error("malformed token")]
    Malformed,
    /// The signature does not match: forged, or signed with another key.
    #[error("bad token signature")]
    BadSignature,
    /// Signed with a key this node does not (or no longer) accept.
    #[error("token signed with key {0:?}, which this server does not accept")]
    UnknownKey(String),
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
    /// When it was signed, seconds since the Unix epoch (0 for a token of the first format).
    pub issued_at: u64,
}

/// True when `id` is usable as a user or device id.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_BYTES
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'+' | b'-'))
}

/// True when `id` is usable as a key id: 1-16 characters of `[A-Za-z0-9_-]`.
pub fn valid_key_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_KEY_ID_BYTES
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

/// Signs tokens with one key and verifies them with any of the keys it accepts (the signing key
/// first).
#[derive(Clone)]
pub struct TokenKey {
    keys: Arc<[(Box<str>, Hmac<Sha256>)]>,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| &**id).collect();
        write!(f, "TokenKey(signs with {:?}, accepts {ids:?})", ids[0])
    }
}

fn hmac(secret: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of every length, so this cannot fail.
    <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"))
}

impl TokenKey {
    /// A key from the configured secret (any length is accepted by HMAC; config asks for >= 16),
    /// with id [`DEFAULT_KEY_ID`].
    pub fn new(secret: &[u8]) -> Self {
        Self::with_id(DEFAULT_KEY_ID, secret)
    }

    /// A signing key named `id`.
    pub fn with_id(id: &str, secret: &[u8]) -> Self {
        Self {
            keys: Arc::from(vec![(Box::from(id), hmac(secret))]),
        }
    }

    /// The same, also accepting tokens signed with key `id` (a key being rotated out, or one
    /// being rotated in).
    #[must_use]
    pub fn accepting(self, id: &str, secret: &[u8]) -> Self {
        let mut keys = self.keys.to_vec();
        keys.push((Box::from(id), hmac(secret)));
        Self {
            keys: Arc::from(keys),
        }
    }

    /// The keys of a loaded configuration: `auth.token_key` named `auth.token_key_id` signs,
    /// every `auth.verify_keys` entry is accepted too.
    pub fn from_config(auth: &crate::config::AuthConfig) -> Self {
        auth.verify_keys.iter().fold(
            Self::with_id(&auth.token_key_id, auth.token_key.as_bytes()),
            |keys, extra| keys.accepting(&extra.id, extra.key.as_bytes()),
        )
    }

    /// The id of the signing key.
    pub fn signing_id(&self) -> &str {
        &self.keys[0].0
    }

    /// A token for `user` on `device`, valid until `expires_at` (seconds since the epoch),
    /// issued now.
    pub fn sign(&self, user: &str, device: &str, expires_at: u64) -> Result<String, TokenError> {
        self.sign_at(user, device, crate::clock::now_secs(), expires_at)
    }

    /// [`TokenKey::sign`] with the issue time given.
    pub fn sign_at(
        &self,
        user: &str,
        device: &str,
        issued_at: u64,
        expires_at: u64,
    ) -> Result<String, TokenError> {
        for id in [user, device] {
            if !valid_id(id) {
                return Err(TokenError::InvalidId(id.to_owned()));
            }
        }
        let (id, key) = &self.keys[0];
        let body = format!(
            "{PREFIX}.{id}.{}.{}.{issued_at}.{expires_at}",
            URL_SAFE_NO_PAD.encode(user),
            URL_SAFE_NO_PAD.encode(device)
        );
        let mut mac = key.clone();
        mac.update(body.as_bytes());
        let tag = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        Ok(format!("{body}.{tag}"))
    }

    /// Checks the signature (under the key the token names, or for a token of the first format
    /// under any accepted key), then the expiry against `now` (seconds since the epoch).
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, TokenError> {
        let (body, tag) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| TokenError::Malformed)?;
        let signed_by = |key: &Hmac<Sha256>| {
            let mut mac = key.clone();
            mac.update(body.as_bytes());
            mac.verify_slice(&tag).is_ok()
        };
        let parts: Vec<&str> = body.split('.').collect();
        let (user, device, issued, expiry) = match parts.as_slice() {
            [PREFIX, id, user, device, issued, expiry] => {
                let (_, key) = self
                    .keys
                    .iter()
                    .find(|(known, _)| **known == **id)
                    .ok_or_else(|| TokenError::UnknownKey(sanitized(id)))?;
                if !signed_by(key) {
                    return Err(TokenError::BadSignature);
                }
                (*user, *device, *issued, *expiry)
            }
            [LEGACY_PREFIX, user, device, expiry] => {
                if !self.keys.iter().any(|(_, key)| signed_by(key)) {
                    return Err(TokenError::BadSignature);
                }
                (*user, *device, "0", *expiry)
            }
            _ => return Err(TokenError::Malformed),
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
            issued_at: issued.parse().map_err(|_| TokenError::Malformed)?,
        };
        if claims.expires_at <= now {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

/// A key id from a token, safe to log: at most 16 characters, anything outside the key id
/// alphabet replaced.
fn sanitized(id: &str) -> String {
    id.chars()
        .take(MAX_KEY_ID_BYTES)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '?'
            }
        })
        .collect()
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
        let tampered = token.replacen(".k1.", ".k1.Y", 1);
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

    #[test]
    fn the_documented_example_matches() {
        let key = TokenKey::new(b"tern-development-key-change-me");
        assert_eq!(
            key.sign_at("alice", "phone-1", 1_700_000_000, 2_000_000_000)
                .unwrap(),
            "t2.k1.YWxpY2U.cGhvbmUtMQ.1700000000.2000000000.\
             5_BzF3LaWRL4lZQ6ms6rPk7y245w9hvGuq-I0gPvgss"
        );
    }

    #[test]
    fn rotation_accepts_listed_keys_only() {
        let old = TokenKey::with_id("k1", b"the-old-key-0123");
        let token = old.sign_at("alice", "phone", 500, 2_000).unwrap();
        assert!(token.starts_with("t2.k1."), "{token}");
        // Rotating: the new key signs, the old one is still accepted.
        let rotating =
            TokenKey::with_id("k2", b"the-new-key-0123").accepting("k1", b"the-old-key-0123");
        let claims = rotating.verify(&token, 1_000).unwrap();
        assert_eq!((claims.user.as_str(), claims.issued_at), ("alice", 500));
        let fresh = rotating.sign("bob", "tab", 2_000).unwrap();
        assert!(fresh.starts_with("t2.k2."), "{fresh}");
        // Rotated: the old key is gone, its tokens with it; the new ones still work.
        let rotated = TokenKey::with_id("k2", b"the-new-key-0123");
        assert_eq!(
            rotated.verify(&token, 1_000),
            Err(TokenError::UnknownKey("k1".to_owned()))
        );
        assert_eq!(rotated.verify(&fresh, 1_000).unwrap().user, "bob");
        // A token naming a listed key but signed with another secret is forged.
        let impostor = TokenKey::with_id("k2", b"not-the-real-k2-key")
            .sign("eve", "x", 2_000)
            .unwrap();
        assert_eq!(
            rotated.verify(&impostor, 1_000),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn first_format_tokens_verify_under_any_accepted_key() {
        let secret = b"the-old-key-0123";
        let body = format!(
            "t1.{}.{}.2000",
            URL_SAFE_NO_PAD.encode("alice"),
            URL_SAFE_NO_PAD.encode("phone")
        );
        let mut mac = hmac(secret);
        mac.update(body.as_bytes());
        let token = format!(
            "{body}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        );
        let keys = TokenKey::with_id("k2", b"the-new-key-0123").accepting("k1", secret);
        let claims = keys.verify(&token, 1_000).unwrap();
        assert_eq!((claims.user.as_str(), claims.issued_at), ("alice", 0));
        assert_eq!(
            TokenKey::new(b"the-new-key-0123").verify(&token, 1_000),
            Err(TokenError::BadSignature)
        );
    }
}
