//! Revoked tokens: an operator signs a device, or every device of a user, out before its tokens
//! expire. A revocation is a "not before" time (seconds since the epoch, the clock tokens are
//! issued by): a token of the device issued at or before it is refused at login. It is kept in
//! the user's account ([`super::account`]), journaled as a `TokensRevoked` record like any other
//! account change and saved with the account record, so it replicates and survives a restart
//! as the account does.

use super::device_map::DeviceMap;
use crate::message::Id;

/// Why a login's token is refused: a revocation at or after its issue time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Revoked {
    /// The device was signed out.
    #[error("token revoked: issued before this device was signed out")]
    Device,
    /// Every device of the user was signed out.
    #[error("token revoked: issued before this user was signed out")]
    User,
}

/// Why a revocation was not confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RevokeError {
    /// Its record could not be made durable. It holds on the owner until that restarts: retry.
    #[error("the revocation could not be made durable; retry")]
    Storage,
    /// No node could take it now (a full queue, the user's owner down or unknown, a shutdown,
    /// or a user homed in another datacenter): retry.
    #[error(
        "no node can take the revocation now (queue full, owner unavailable or stopping); retry"
    )]
    Unavailable,
}

/// The revocations of one user's tokens.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Revocations {
    /// Every device's tokens issued at or before this are refused (0: none).
    user: u64,
    /// Per device, the same for that device alone.
    devices: DeviceMap<u64>,
}

impl Revocations {
    /// Revocations as stored: user-wide `user` (0: none) and per device.
    pub fn from_parts(user: u64, devices: impl IntoIterator<Item = (Id, u64)>) -> Self {
        Revocations {
            user,
            devices: devices.into_iter().collect(),
        }
    }

    /// The user-wide not-before time (0: none).
    pub fn user(&self) -> u64 {
        self.user
    }

    /// The per-device not-before times, by device id.
    pub fn devices(&self) -> impl Iterator<Item = (&Id, u64)> {
        self.devices.iter().map(|(device, at)| (device, *at))
    }

    /// Revokes the tokens of `device` (`None`: of every device) issued at or before
    /// `not_before`; an earlier revocation is never moved back. Returns the time now in force
    /// for what was revoked.
    pub fn revoke(&mut self, device: Option<&Id>, not_before: u64) -> u64 {
        let at = match device {
            None => &mut self.user,
            Some(device) => self.devices.get_or_insert_with(device, || 0),
        };
        *at = (*at).max(not_before);
        *at
    }

    /// Whether a token of `device` issued at `issued_at` is refused, and by which revocation
    /// (the device's own first when both refuse it).
    pub fn check(&self, device: &str, issued_at: u64) -> Result<(), Revoked> {
        let refuses = |not_before: u64| not_before > 0 && issued_at <= not_before;
        if self.devices.get(device).is_some_and(|at| refuses(*at)) {
            return Err(Revoked::Device);
        }
        if refuses(self.user) {
            return Err(Revoked::User);
        }
        Ok(())
    }

    /// True when nothing is revoked.
    pub fn is_empty(&self) -> bool {
        self.user == 0 && self.devices.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_revocation_refuses_that_device_up_to_its_time() {
        let mut revocations = Revocations::default();
        assert_eq!(revocations.check("phone", 0), Ok(()));
        let phone = Id::from("phone");
        assert_eq!(revocations.revoke(Some(&phone), 1_000), 1_000);
        assert_eq!(revocations.check("phone", 999), Err(Revoked::Device));
        assert_eq!(revocations.check("phone", 1_000), Err(Revoked::Device));
        assert_eq!(revocations.check("phone", 1_001), Ok(()));
        assert_eq!(revocations.check("tablet", 5), Ok(()));
        // A token of the first format has no issue time: any revocation refuses it.
        assert_eq!(revocations.check("phone", 0), Err(Revoked::Device));
        // Never moved back.
        assert_eq!(revocations.revoke(Some(&phone), 500), 1_000);
    }

    #[test]
    fn a_user_revocation_refuses_every_device() {
        let mut revocations = Revocations::default();
        revocations.revoke(Some(&Id::from("phone")), 2_000);
        assert_eq!(revocations.revoke(None, 1_000), 1_000);
        assert_eq!(revocations.check("tablet", 1_000), Err(Revoked::User));
        assert_eq!(revocations.check("tablet", 1_001), Ok(()));
        assert_eq!(revocations.check("phone", 1_500), Err(Revoked::Device));
        assert_eq!(revocations.check("phone", 2_001), Ok(()));
        assert!(!revocations.is_empty());
    }
}
