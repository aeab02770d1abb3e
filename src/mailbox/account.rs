//! A user's account as a durable record: when it was first seen and its devices with their
//! first and last logins. It lives beside the user's mailbox, owned by the same worker, and is
//! stored as the mailbox's metadata record (`AccountRecord` in
//! `proto/tern/storage/v1/mailbox.proto`) together with the mailbox's last seq.
//!
//! Login times are written at write-back passes and evictions, not journaled: a crash loses at
//! most the logins since the last pass (the devices themselves survive through their journaled
//! cursors). Revocations ([`super::revocation`]) are journaled before they are confirmed.

use bytes::Bytes;
use hashbrown::{HashMap, HashSet};
use prost::Message;

use super::device_map::DeviceMap;
use super::pushers::{Pusher, Pushers};
use super::revocation::{Revocations, Revoked};
use crate::message::Id;
use crate::proto::storage::{AccountRecord, DeviceRecord, DeviceRevocation};

/// One device's login times, ms since the epoch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceTimes {
    /// The device's first login.
    pub first_login_ms: u64,
    /// Its latest login.
    pub last_login_ms: u64,
}

/// A user's account.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Account {
    /// First seen, ms since the epoch (0 until then).
    pub created_ms: u64,
    /// Devices that logged in.
    pub devices: DeviceMap<DeviceTimes>,
    /// Group memberships and copy marks; boxed, and absent for users never in a group, so an
    /// account costs little for most users.
    memberships: Option<Box<Memberships>>,
    /// Tokens an operator revoked; boxed, and absent for users never signed out.
    revocations: Option<Box<Revocations>>,
    /// Push registrations and mutes; boxed, and absent for users that never registered.
    pushers: Option<Box<Pushers>>,
}

/// A user's side of its groups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Memberships {
    /// Groups the user is a member of.
    groups: HashSet<Id>,
    /// Per group (also after leaving it), the highest group seq copied into the mailbox.
    copied: HashMap<Id, u64>,
    /// Group seqs at or below the mark whose copy failed to be stored (a retry is new); stored
    /// with the account, so a copy that failed before a restart is still made after it.
    holes: HashSet<(Id, u64)>,
    /// Per group, how far the mailbox told the group it released its copies (memory only: after
    /// a restart it tells again).
    reported: HashMap<Id, u64>,
}

impl Account {
    fn memberships(&mut self) -> &mut Memberships {
        self.memberships.get_or_insert_with(Box::default)
    }

    /// The groups the user is a member of.
    pub fn groups(&self) -> impl Iterator<Item = &Id> {
        self.memberships.iter().flat_map(|m| m.groups.iter())
    }

    /// The user joined `group`.
    pub fn join(&mut self, group: &Id) {
        self.memberships().groups.insert(group.clone());
    }

    /// The user left (or was removed from) `group`.
    pub fn leave(&mut self, group: &Id) {
        if let Some(memberships) = &mut self.memberships {
            memberships.groups.remove(group);
        }
    }

    /// True when the copy of entry `group_seq` of `group` was made before.
    pub fn has_copy(&self, group: &Id, group_seq: u64) -> bool {
        self.memberships.as_ref().is_some_and(|m| {
            m.copied.get(group).is_some_and(|mark| group_seq <= *mark)
                && !m.holes.contains(&(group.clone(), group_seq))
        })
    }

    /// Notes the copy of entry `group_seq` of `group`.
    pub fn note_copy(&mut self, group: &Id, group_seq: u64) {
        let memberships = self.memberships();
        memberships.holes.remove(&(group.clone(), group_seq));
        let mark = memberships.copied.entry(group.clone()).or_insert(0);
        *mark = (*mark).max(group_seq);
    }

    /// The copy of entry `group_seq` of `group` failed to be stored: a copy made again is new.
    pub fn note_hole(&mut self, group: Id, group_seq: u64) {
        self.memberships().holes.insert((group, group_seq));
    }

    /// Per group, the highest group seq copied into the mailbox.
    pub fn copy_marks(&self) -> impl Iterator<Item = (&Id, u64)> {
        self.memberships
            .iter()
            .flat_map(|m| m.copied.iter().map(|(group, seq)| (group, *seq)))
    }

    /// How far the mailbox told `group` it released its copies.
    pub fn reported(&self, group: &Id) -> u64 {
        self.memberships
            .as_ref()
            .and_then(|m| m.reported.get(group).copied())
            .unwrap_or(0)
    }

    /// The mailbox told `group` it released its copies up to `upto`.
    pub fn note_reported(&mut self, group: &Id, upto: u64) {
        self.memberships().reported.insert(group.clone(), upto);
    }

    /// The lowest hole of `group` (a copy at or below the mark not in the mailbox), if any.
    pub fn lowest_hole(&self, group: &Id) -> Option<u64> {
        self.memberships.as_ref().and_then(|m| {
            m.holes
                .iter()
                .filter(|(g, _)| g == group)
                .map(|(_, seq)| *seq)
                .min()
        })
    }
}

impl Account {
    /// The devices' push states, if any device ever registered or muted.
    pub fn pushers(&self) -> Option<&Pushers> {
        self.pushers.as_deref()
    }

    /// `device`'s push state, created empty when it has none.
    pub fn pusher_mut(&mut self, device: &Id) -> &mut Pusher {
        self.pushers
            .get_or_insert_with(Box::default)
            .device_mut(device)
    }

    /// Notes that the account took part in something at `now_ms` (a login or a message).
    pub fn touch(&mut self, now_ms: u64) {
        if self.created_ms == 0 {
            self.created_ms = now_ms;
        }
    }

    /// Revokes the tokens of `device` (`None`: of every device) issued at or before
    /// `not_before` (seconds); returns the time now in force for them.
    pub fn revoke(&mut self, device: Option<&Id>, not_before: u64) -> u64 {
        self.revocations
            .get_or_insert_with(Box::default)
            .revoke(device, not_before)
    }

    /// Whether a token of `device` issued at `issued_at` (seconds) may log in.
    pub fn check_token(&self, device: &str, issued_at: u64) -> Result<(), Revoked> {
        self.revocations
            .as_ref()
            .map_or(Ok(()), |revocations| revocations.check(device, issued_at))
    }

    /// Records a login of `device` at `now_ms`.
    pub fn login(&mut self, device: &Id, now_ms: u64) {
        self.touch(now_ms);
        let times = self.devices.get_or_insert_with(device, || DeviceTimes {
            first_login_ms: now_ms,
            last_login_ms: now_ms,
        });
        times.last_login_ms = times.last_login_ms.max(now_ms);
    }
}

/// Encodes the metadata record: `last_seq` and the account. `unsure` are copies of group
/// entries (group, group seq) appended but not yet durable: they are stored as holes, so that
/// if their journal write fails and the node stops before the next record, the copy is made
/// again after the restart (a copy that did become durable is replayed from the journal, which
/// fills the hole).
pub fn encode(last_seq: u64, account: &Account, unsure: &[(Id, u64)]) -> Bytes {
    // By device id: the map keeps them sorted.
    let devices: Vec<DeviceRecord> = account
        .devices
        .iter()
        .map(|(device, times)| DeviceRecord {
            device: device.to_string(),
            first_login_ms: times.first_login_ms,
            last_login_ms: times.last_login_ms,
        })
        .collect();
    let mut groups: Vec<String> = account.groups().map(ToString::to_string).collect();
    groups.sort();
    let (copied_groups, copied_seqs) = account
        .memberships
        .iter()
        .flat_map(|m| m.copied.iter())
        .map(|(group, seq)| (group.to_string(), *seq))
        .unzip();
    let (hole_groups, hole_seqs) = account
        .memberships
        .iter()
        .flat_map(|m| m.holes.iter())
        .chain(unsure.iter())
        .map(|(group, seq)| (group.to_string(), *seq))
        .unzip();
    let revocations = account.revocations.as_deref();
    let record = AccountRecord {
        last_seq,
        created_ms: account.created_ms,
        devices,
        groups,
        copied_groups,
        copied_seqs,
        hole_groups,
        hole_seqs,
        revoked_before: revocations.map_or(0, Revocations::user),
        revoked_devices: revocations
            .iter()
            .flat_map(|revocations| revocations.devices())
            .map(|(device, not_before)| DeviceRevocation {
                device: device.to_string(),
                not_before,
            })
            .collect(),
        pushers: account
            .pushers
            .iter()
            .flat_map(|pushers| pushers.iter())
            .map(|(device, pusher)| pusher.to_stored(device))
            .collect(),
    };
    Bytes::from(record.encode_to_vec())
}

/// Decodes a metadata record into `last_seq` and the account.
pub fn decode(bytes: &[u8]) -> Result<(u64, Account), prost::DecodeError> {
    let record = AccountRecord::decode(bytes)?;
    let revocations = Revocations::from_parts(
        record.revoked_before,
        record
            .revoked_devices
            .into_iter()
            .map(|revoked| (Id::from(revoked.device.as_str()), revoked.not_before)),
    );
    let pushers = (!record.pushers.is_empty()).then(|| {
        let mut pushers = Pushers::default();
        for stored in record.pushers {
            let (device, pusher) = Pusher::from_stored(stored);
            pushers.set(&device, pusher);
        }
        Box::new(pushers)
    });
    let devices = record
        .devices
        .into_iter()
        .map(|device| {
            (
                Id::from(device.device.as_str()),
                DeviceTimes {
                    first_login_ms: device.first_login_ms,
                    last_login_ms: device.last_login_ms,
                },
            )
        })
        .collect();
    Ok((
        record.last_seq,
        Account {
            created_ms: record.created_ms,
            devices,
            memberships: (!record.groups.is_empty() || !record.copied_groups.is_empty()).then(
                || {
                    Box::new(Memberships {
                        groups: record.groups.into_iter().map(Id::from).collect(),
                        copied: record
                            .copied_groups
                            .into_iter()
                            .map(Id::from)
                            .zip(record.copied_seqs)
                            .collect(),
                        holes: record
                            .hole_groups
                            .into_iter()
                            .map(Id::from)
                            .zip(record.hole_seqs)
                            .collect(),
                        reported: HashMap::new(),
                    })
                },
            ),
            revocations: (!revocations.is_empty()).then(|| Box::new(revocations)),
            pushers,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_logins_keep_the_first_time() {
        let mut account = Account::default();
        let phone: Id = Id::from("phone");
        account.login(&phone, 100);
        account.login(&Id::from("laptop"), 150);
        account.login(&phone, 200);
        account.login(&phone, 180);
        assert_eq!(account.created_ms, 100);
        assert_eq!(
            account.devices.get("phone").copied().unwrap(),
            DeviceTimes {
                first_login_ms: 100,
                last_login_ms: 200
            }
        );
        let (last_seq, decoded) = decode(&encode(42, &account, &[])).unwrap();
        assert_eq!((last_seq, decoded), (42, account));
    }

    #[test]
    fn holes_and_unsure_copies_are_stored_as_holes() {
        let group = Id::from("g");
        let mut account = Account::default();
        for seq in 1..=5 {
            account.note_copy(&group, seq);
        }
        account.note_hole(group.clone(), 2);
        assert!(!account.has_copy(&group, 2));
        let (_, decoded) = decode(&encode(7, &account, &[(group.clone(), 5)])).unwrap();
        assert!(decoded.has_copy(&group, 4));
        assert!(!decoded.has_copy(&group, 2), "a failed copy is made again");
        assert!(
            !decoded.has_copy(&group, 5),
            "a copy not known durable is made again"
        );
        assert_eq!(decoded.lowest_hole(&group), Some(2));
        let mut decoded = decoded;
        decoded.note_copy(&group, 2);
        assert!(decoded.has_copy(&group, 2));
    }

    #[test]
    fn revocations_round_trip_and_refuse_older_tokens() {
        let mut account = Account::default();
        account.login(&Id::from("phone"), 100);
        assert_eq!(account.check_token("phone", 0), Ok(()));
        assert_eq!(account.revoke(Some(&Id::from("phone")), 1_000), 1_000);
        assert_eq!(account.revoke(None, 500), 500);
        let (_, decoded) = decode(&encode(3, &account, &[])).unwrap();
        assert_eq!(decoded, account);
        assert_eq!(decoded.check_token("phone", 1_000), Err(Revoked::Device));
        assert_eq!(decoded.check_token("phone", 1_001), Ok(()));
        assert_eq!(decoded.check_token("tablet", 500), Err(Revoked::User));
        assert_eq!(decoded.check_token("tablet", 501), Ok(()));
        // An account never signed out stores nothing for it.
        let (_, plain) = decode(&encode(3, &Account::default(), &[])).unwrap();
        assert_eq!(plain, Account::default());
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(decode(&[0xff, 0xff, 0xff]).is_err());
    }
}
