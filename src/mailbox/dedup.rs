//! A mailbox's dedup table: the recent `client_msg_id`s of each sender, with their original
//! acks, so that a retry is answered with the original ack instead of being stored again.
//!
//! The key is (sending user, `client_msg_id`), but the window is kept per sending *device*:
//! each device of a sender keeps its last `dedup_window` ids, so one device's sends never push
//! out what another device may still have unacked. `dedup_window` is at least what one device
//! may have in flight (the session's cap), so every id a device may still resend is covered.
//!
//! An id is hashed once, when it is remembered: the window keeps the hash beside the id and its
//! ack, and the sender's hash table holds only the id's seq (unique in the mailbox), so that
//! forgetting the oldest id is a probe by the kept hash for that seq, with no string hashed or
//! compared. A lookup compares the whole string on a hash match, so two ids whose hashes
//! collide are never taken for one another.
//!
//! The table is saved to the store by write-back passes, in fixed slots: the ids of a device
//! take consecutive positions of a ring of [`CHUNKS`] chunks, and only the chunks that changed
//! since the last pass are written again (one record each). A chunk is written only with ids
//! that are durable in the journal, so the store never remembers an append that failed.

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::{DefaultHashBuilder, HashTable};

use super::device_map::DeviceMap;
use super::log::AckInfo;
use crate::message::Id;

/// Chunks of the ring each sending device's window is saved in.
pub const CHUNKS: usize = 64;

/// Every chunk.
const ALL_CHUNKS: u64 = u64::MAX;

/// Ids per saved chunk for a window of `dedup_window` ids.
pub fn chunk_ids(dedup_window: usize) -> usize {
    dedup_window.div_ceil(CHUNKS).max(1)
}

/// The chunk of ring position `position`.
fn chunk_of(position: u64, chunk_ids: usize) -> usize {
    ((position / chunk_ids as u64) % CHUNKS as u64) as usize
}

/// The chunks holding ring positions `first .. first + len`.
fn chunks_of(first: u64, len: usize, chunk_ids: usize) -> u64 {
    if len == 0 {
        return 0;
    }
    let per_chunk = chunk_ids as u64;
    let spanned = (first + len as u64 - 1) / per_chunk - first / per_chunk + 1;
    (0..spanned.min(CHUNKS as u64)).fold(0, |bits, step| {
        bits | 1 << ((first / per_chunk + step) % CHUNKS as u64)
    })
}

/// The dedup table of one mailbox (empty, without an allocation, until a first append). Ids
/// are chosen by senders: `S` is keyed, so that nobody can make them collide on purpose.
#[derive(Debug, Default)]
pub struct Dedup<S = DefaultHashBuilder> {
    senders: HashTable<SenderDedup>,
    hasher: S,
}

/// The remembered ids of one sending user, found by id whatever device sent them.
#[derive(Debug)]
struct SenderDedup {
    sender: Id,
    /// The seq of each remembered id, by the id's hash: the id is in the window holding it.
    seqs: HashTable<u64>,
    devices: DeviceMap<DeviceWindow>,
}

/// The last ids of one sending device, oldest first (seqs increase along it).
#[derive(Debug, Default)]
struct DeviceWindow {
    order: VecDeque<Remembered>,
    /// Ring position of `order[0]`; `order[i]` is at `first + i`.
    first: u64,
    /// Chunks changed since they were last saved, one bit each.
    unsaved: u64,
}

/// One remembered id.
#[derive(Debug)]
struct Remembered {
    id: Arc<str>,
    ack: AckInfo,
    /// The id's hash, kept so that it is computed once.
    hash: u64,
}

/// One saved chunk of a device's window: its durable ids and their acks. Empty: the chunk's
/// record is deleted.
#[derive(Debug)]
pub struct SavedChunk<'a> {
    /// The sending user.
    pub sender: &'a Id,
    /// The sending device.
    pub device: &'a Id,
    /// Which chunk of the ring.
    pub chunk: u8,
    /// Its ids, oldest first.
    pub ids: &'a [(Arc<str>, AckInfo)],
}

impl<S: BuildHasher> Dedup<S> {
    /// The original ack of (`from_user`, `client_msg_id`), if remembered (appends check and
    /// remember in one step, [`Dedup::remember`]; this lookup serves the tests).
    #[cfg(test)]
    pub fn get(&self, from_user: &str, client_msg_id: &str) -> Option<AckInfo> {
        let sender = self
            .senders
            .find(self.hasher.hash_one(from_user), |known| {
                *known.sender == *from_user
            })?;
        let found = sender.find(self.hasher.hash_one(client_msg_id), client_msg_id)?;
        Some(found.ack)
    }

    /// True when (`from_user`, `client_msg_id`) is remembered.
    #[cfg(test)]
    pub fn contains(&self, from_user: &str, client_msg_id: &str) -> bool {
        self.get(from_user, client_msg_id).is_some()
    }

    /// The table of `from_user`, made empty if it has none.
    fn sender_mut(&mut self, from_user: &Id) -> &mut SenderDedup {
        let hasher = &self.hasher;
        self.senders
            .entry(
                hasher.hash_one(&**from_user),
                |known| known.sender == *from_user,
                |known| hasher.hash_one(&*known.sender),
            )
            .or_insert_with(|| SenderDedup {
                sender: from_user.clone(),
                seqs: HashTable::new(),
                devices: DeviceMap::default(),
            })
            .into_mut()
    }

    /// Remembers a new append (its seq above every remembered one), forgetting the device's
    /// oldest id past the window; or, when (`from_user`, `client_msg_id`) is remembered
    /// already, changes nothing and returns its original ack.
    pub fn remember(
        &mut self,
        from_user: &Id,
        from_device: &Id,
        client_msg_id: &Arc<str>,
        ack: AckInfo,
        dedup_window: usize,
    ) -> Option<AckInfo> {
        let hash = self.hasher.hash_one(&**client_msg_id);
        let sender = self.sender_mut(from_user);
        if let Some(original) = sender.find(hash, client_msg_id) {
            return Some(original.ack);
        }
        let SenderDedup { seqs, devices, .. } = sender;
        let window = devices.get_or_insert_with(from_device, DeviceWindow::default);
        // Room first, so neither the window nor the table ever holds more than
        // `dedup_window` (a full window would otherwise grow both to the next power of two).
        window.trim(seqs, dedup_window.saturating_sub(1));
        let position = window.first + window.order.len() as u64;
        window.unsaved |= 1 << chunk_of(position, chunk_ids(dedup_window));
        window.order.push_back(Remembered {
            id: client_msg_id.clone(),
            ack,
            hash,
        });
        seqs.insert_unique(hash, ack.seq, |&seq| hash_of(devices, seq));
        None
    }

    /// Remembers an id read back at recovery (from the saved table, the store's entries or the
    /// journal, in any order): placed by seq, kept only if among the device's last
    /// `dedup_window`. The device's window is saved again, in its new places, by the next pass
    /// (saved chunks it no longer fills keep ids that were true, and are overwritten in turn).
    pub fn restore(
        &mut self,
        from_user: &Id,
        from_device: &Id,
        client_msg_id: &Arc<str>,
        ack: AckInfo,
        dedup_window: usize,
    ) {
        let hash = self.hasher.hash_one(&**client_msg_id);
        let sender = self.sender_mut(from_user);
        if sender.find(hash, client_msg_id).is_some() {
            return;
        }
        let SenderDedup { seqs, devices, .. } = sender;
        let window = devices.get_or_insert_with(from_device, DeviceWindow::default);
        let at = window
            .order
            .partition_point(|known| known.ack.seq < ack.seq);
        if at == 0 && window.order.len() >= dedup_window {
            // Older than every id of a full window: it was forgotten before.
            return;
        }
        window.order.insert(
            at,
            Remembered {
                id: client_msg_id.clone(),
                ack,
                hash,
            },
        );
        let trimmed = window.trim(seqs, dedup_window);
        window.unsaved = chunks_of(window.first, window.order.len(), chunk_ids(dedup_window));
        if at >= trimmed {
            seqs.insert_unique(hash, ack.seq, |&seq| hash_of(devices, seq));
        }
    }

    /// Forgets an append whose write failed, so that a retry is stored anew.
    pub fn forget(&mut self, from_user: &str, client_msg_id: &str) {
        let hash = self.hasher.hash_one(client_msg_id);
        let Some(SenderDedup { seqs, devices, .. }) = self
            .senders
            .find_mut(self.hasher.hash_one(from_user), |known| {
                *known.sender == *from_user
            })
        else {
            return;
        };
        let Ok(place) = seqs.find_entry(hash, |&seq| {
            remembered(devices, seq).is_some_and(|found| found.is(hash, client_msg_id))
        }) else {
            return;
        };
        let (seq, _) = place.remove();
        for window in devices.values_mut() {
            if let Ok(index) = window
                .order
                .binary_search_by_key(&seq, |known| known.ack.seq)
            {
                window.order.remove(index);
                // The ids after it moved down one position.
                window.unsaved = ALL_CHUNKS;
                return;
            }
        }
    }

    /// Marks every chunk that holds ids unsaved (a store batch failed: it is all written again).
    pub fn mark_unsaved(&mut self, dedup_window: usize) {
        for sender in self.senders.iter_mut() {
            for window in sender.devices.values_mut() {
                window.unsaved |=
                    chunks_of(window.first, window.order.len(), chunk_ids(dedup_window));
            }
        }
    }

    /// True when some chunk changed since it was last saved.
    pub fn has_unsaved(&self) -> bool {
        self.senders
            .iter()
            .any(|sender| sender.devices.values().any(|window| window.unsaved != 0))
    }

    /// Hands every unsaved chunk to `save` with its ids durable up to `durable` (empty when the
    /// chunk holds none); a chunk that holds an id above `durable` stays unsaved, to be saved
    /// again once that id is durable.
    pub fn save(
        &mut self,
        durable: u64,
        dedup_window: usize,
        mut save: impl FnMut(SavedChunk<'_>),
    ) {
        let per_chunk = chunk_ids(dedup_window) as u64;
        let ring = per_chunk * CHUNKS as u64;
        let mut ids: Vec<(Arc<str>, AckInfo)> = Vec::new();
        for table in self.senders.iter_mut() {
            let sender = &table.sender;
            for (device, window) in table.devices.iter_mut() {
                let (first, end) = (window.first, window.first + window.order.len() as u64);
                let mut still_unsaved = 0;
                let mut chunks = window.unsaved;
                while chunks != 0 {
                    let chunk = chunks.trailing_zeros();
                    chunks &= chunks - 1;
                    ids.clear();
                    // The chunk's slots on each lap of the ring the window covers, oldest lap
                    // first: its ids in seq order, straight from the window.
                    let slot = u64::from(chunk) * per_chunk;
                    for lap in first / ring..=end.saturating_sub(1) / ring {
                        let from = (lap * ring + slot).max(first);
                        let to = (lap * ring + slot + per_chunk).min(end);
                        if from >= to {
                            continue;
                        }
                        for known in window
                            .order
                            .range((from - first) as usize..(to - first) as usize)
                        {
                            if known.ack.seq <= durable {
                                ids.push((known.id.clone(), known.ack));
                            } else {
                                still_unsaved |= 1 << chunk;
                            }
                        }
                    }
                    save(SavedChunk {
                        sender,
                        device,
                        chunk: chunk as u8,
                        ids: &ids,
                    });
                }
                window.unsaved = still_unsaved;
            }
        }
    }
}

impl SenderDedup {
    /// The remembered `id`, whose hash is `hash`.
    fn find(&self, hash: u64, id: &str) -> Option<&Remembered> {
        let mut found = None;
        self.seqs.find(hash, |&seq| {
            found = remembered(&self.devices, seq).filter(|known| known.is(hash, id));
            found.is_some()
        })?;
        found
    }
}

/// The remembered id of seq `seq`, in whichever window holds it.
fn remembered(devices: &DeviceMap<DeviceWindow>, seq: u64) -> Option<&Remembered> {
    devices.values().find_map(|window| {
        let index = window
            .order
            .binary_search_by_key(&seq, |known| known.ack.seq)
            .ok()?;
        window.order.get(index)
    })
}

/// The kept hash of the id of seq `seq` (to move it when the table grows).
fn hash_of(devices: &DeviceMap<DeviceWindow>, seq: u64) -> u64 {
    remembered(devices, seq).map_or(0, |known| known.hash)
}

impl Remembered {
    /// True when this is `id`, of hash `hash` (the hashes first: they rarely match otherwise).
    fn is(&self, hash: u64, id: &str) -> bool {
        self.hash == hash && *self.id == *id
    }
}

impl DeviceWindow {
    /// Forgets the oldest ids past `dedup_window`; returns how many.
    fn trim(&mut self, seqs: &mut HashTable<u64>, dedup_window: usize) -> usize {
        let mut trimmed = 0;
        while self.order.len() > dedup_window {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            // Its seq is unique in the mailbox: no need to look at the id.
            if let Ok(place) = seqs.find_entry(old.hash, |&seq| seq == old.ack.seq) {
                place.remove();
            }
            self.first += 1;
            trimmed += 1;
        }
        trimmed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(seq: u64) -> AckInfo {
        AckInfo {
            seq,
            server_id: seq * 10,
            timestamp_ms: seq * 100,
        }
    }

    fn id(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    /// A saved chunk as the tests compare it: (device, chunk, [(id, seq)]).
    type Chunk = (String, u8, Vec<(String, u64)>);

    /// Every saved chunk, whatever the hasher.
    fn saved<S: BuildHasher>(dedup: &mut Dedup<S>, durable: u64, window: usize) -> Vec<Chunk> {
        let mut chunks = Vec::new();
        dedup.save(durable, window, |chunk| {
            chunks.push((
                chunk.device.to_string(),
                chunk.chunk,
                chunk
                    .ids
                    .iter()
                    .map(|(id, ack)| (id.to_string(), ack.seq))
                    .collect(),
            ));
        });
        chunks
    }

    /// How alice's phone's ids go into a table: sent (remembered) or restored at recovery.
    #[derive(Clone, Copy)]
    enum Put {
        Sent,
        Restored,
    }

    /// A table into which alice's phone put `m{seq}` (acked `seq`) for each seq, in that order.
    fn phone_table(put: Put, seqs: impl IntoIterator<Item = u64>, window: usize) -> Dedup {
        let mut dedup: Dedup = Dedup::default();
        let (alice, phone) = (id("alice"), id("phone"));
        for seq in seqs {
            let message = id(&format!("m{seq}"));
            match put {
                Put::Sent => {
                    dedup.remember(&alice, &phone, &message, ack(seq), window);
                }
                Put::Restored => dedup.restore(&alice, &phone, &message, ack(seq), window),
            }
        }
        dedup
    }

    /// The seqs among `seqs` whose `m{seq}` alice's table still knows.
    fn kept<S: BuildHasher>(dedup: &Dedup<S>, seqs: std::ops::RangeInclusive<u64>) -> Vec<u64> {
        seqs.filter(|seq| dedup.contains("alice", &format!("m{seq}")))
            .collect()
    }

    #[test]
    fn a_mailbox_without_dedup_history_pays_for_one_empty_map() {
        // Idle phones: the table of a mailbox that never received a message allocates nothing.
        assert_eq!(
            std::mem::size_of::<Dedup>(),
            std::mem::size_of::<hashbrown::HashMap<Id, ()>>()
        );
        let dedup: Dedup = Dedup::default();
        assert_eq!(dedup.senders.capacity(), 0);
    }

    #[test]
    fn each_device_keeps_its_own_window() {
        let mut dedup: Dedup = Dedup::default();
        let (alice, phone, laptop) = (id("alice"), id("phone"), id("laptop"));
        for n in 0..4 {
            dedup.remember(&alice, &phone, &id(&format!("p{n}")), ack(n + 1), 4);
        }
        for n in 0..4 {
            dedup.remember(&alice, &laptop, &id(&format!("l{n}")), ack(n + 5), 4);
        }
        // The laptop's four sends did not push out the phone's.
        assert_eq!(dedup.get("alice", "p0"), Some(ack(1)));
        assert_eq!(dedup.get("alice", "l3"), Some(ack(8)));
        dedup.remember(&alice, &phone, &id("p4"), ack(9), 4);
        assert_eq!(dedup.get("alice", "p0"), None, "the phone's window is 4");
        assert_eq!(dedup.get("alice", "l0"), Some(ack(5)));
        assert_eq!(
            dedup.get("bob", "p1"),
            None,
            "the key is the sending user's"
        );
    }

    #[test]
    fn a_full_window_keeps_its_capacity() {
        let dedup = phone_table(Put::Sent, 1..=3000, 1024);
        let alice = dedup.senders.iter().next().unwrap();
        let window = alice.devices.get("phone").unwrap();
        assert_eq!(window.order.len(), 1024);
        assert_eq!(window.order.capacity(), 1024);
        assert_eq!(alice.seqs.len(), 1024);
        // 1024 ids take 2048 buckets of one seq each (room for 1792, less the buckets freed
        // but not yet reclaimed), however long the window has run.
        assert!((1024..=1792).contains(&alice.seqs.capacity()));
    }

    #[test]
    fn restored_ids_keep_the_last_of_each_device_by_seq() {
        let mut dedup = phone_table(Put::Restored, [5, 2, 7, 1, 6, 3], 4);
        assert_eq!(kept(&dedup, 1..=7), vec![3, 5, 6, 7]);
        // A repeated id keeps its first ack.
        dedup.restore(&id("alice"), &id("phone"), &id("m7"), ack(99), 4);
        assert_eq!(dedup.get("alice", "m7"), Some(ack(7)));
    }

    #[test]
    fn only_changed_chunks_are_saved_and_only_durable_ids() {
        // A window of 128: two ids per chunk.
        let mut dedup = phone_table(Put::Sent, 1..=3, 128);
        let first = saved(&mut dedup, 2, 128);
        assert_eq!(
            first,
            vec![
                ("phone".into(), 0, vec![("m1".into(), 1), ("m2".into(), 2)]),
                ("phone".into(), 1, vec![]),
            ],
            "m3 is not durable yet"
        );
        let second = saved(&mut dedup, 3, 128);
        assert_eq!(second, vec![("phone".into(), 1, vec![("m3".into(), 3)])]);
        assert!(saved(&mut dedup, 3, 128).is_empty(), "nothing changed");
        dedup.forget("alice", "m2");
        assert!(!dedup.contains("alice", "m2"));
        let after_forget = saved(&mut dedup, 3, 128);
        assert_eq!(after_forget.len(), CHUNKS, "every chunk is written again");
        assert_eq!(
            after_forget[0].2,
            vec![("m1".to_string(), 1), ("m3".to_string(), 3)]
        );
    }

    #[test]
    fn occupied_chunks_wrap_around_the_ring() {
        assert_eq!(chunks_of(0, 0, 16), 0);
        assert_eq!(chunks_of(0, 1, 16), 1);
        assert_eq!(chunks_of(15, 2, 16), 0b11);
        assert_eq!(chunks_of(63 * 16, 17, 16), 1 << 63 | 1);
        assert_eq!(chunks_of(5, 1024, 16), ALL_CHUNKS);
    }

    #[test]
    fn a_restored_window_is_saved_where_it_now_lies() {
        let mut dedup = phone_table(Put::Restored, [3, 1, 2], 128);
        let chunks = saved(&mut dedup, 3, 128);
        assert_eq!(
            chunks,
            vec![
                ("phone".into(), 0, vec![("m1".into(), 1), ("m2".into(), 2)]),
                ("phone".into(), 1, vec![("m3".into(), 3)]),
            ]
        );
    }

    #[test]
    fn a_full_ring_wraps_into_its_first_chunk() {
        // A window of 64: one id per chunk; the 65th id takes chunk 0 again.
        let mut dedup = phone_table(Put::Sent, 1..=65, 64);
        let chunks = saved(&mut dedup, 65, 64);
        assert_eq!(chunks.len(), CHUNKS);
        assert_eq!(chunks[0].2, vec![("m65".to_string(), 65)]);
        assert_eq!(chunks[1].2, vec![("m2".to_string(), 2)]);
        let total: usize = chunks.iter().map(|(_, _, ids)| ids.len()).sum();
        assert_eq!(total, 64);
    }

    /// A hasher that gives every id the same hash.
    #[derive(Debug, Default)]
    struct Colliding;

    impl BuildHasher for Colliding {
        type Hasher = Constant;
        fn build_hasher(&self) -> Constant {
            Constant
        }
    }

    struct Constant;

    impl std::hash::Hasher for Constant {
        fn finish(&self) -> u64 {
            7
        }
        fn write(&mut self, _: &[u8]) {}
    }

    #[test]
    fn ids_whose_hashes_collide_stay_apart() {
        let mut dedup: Dedup<Colliding> = Dedup::default();
        let (alice, phone, laptop) = (id("alice"), id("phone"), id("laptop"));
        for seq in 1..=6 {
            let device = if seq % 2 == 0 { &phone } else { &laptop };
            let fresh = dedup.remember(&alice, device, &id(&format!("m{seq}")), ack(seq), 2);
            assert_eq!(fresh, None);
        }
        // Each device kept its last two; the oldest of each went, exactly those.
        assert_eq!(kept(&dedup, 1..=6), vec![3, 4, 5, 6]);
        assert_eq!(dedup.get("alice", "m5"), Some(ack(5)));
        assert_eq!(
            dedup.remember(&alice, &phone, &id("m4"), ack(7), 2),
            Some(ack(4)),
            "a retry gets its own ack, not a colliding one's"
        );
        dedup.forget("alice", "m5");
        assert!(!dedup.contains("alice", "m5"));
        assert!(dedup.contains("alice", "m3"));
        dedup.restore(&alice, &laptop, &id("m0"), ack(0), 2);
        assert_eq!(dedup.get("alice", "m0"), Some(ack(0)));
        let total: usize = saved(&mut dedup, 99, 2)
            .iter()
            .map(|(_, _, ids)| ids.len())
            .sum();
        assert_eq!(total, 4, "m0, m3 (laptop), m4, m6 (phone)");
    }

    #[test]
    fn the_table_holds_exactly_the_ids_of_the_windows() {
        let mut dedup: Dedup = Dedup::default();
        let (alice, phone, laptop) = (id("alice"), id("phone"), id("laptop"));
        for seq in 1..=500 {
            let device = if seq % 3 == 0 { &phone } else { &laptop };
            dedup.remember(&alice, device, &id(&format!("m{seq}")), ack(seq), 64);
        }
        dedup.forget("alice", "m499");
        for seq in [1000, 1001] {
            dedup.restore(&alice, &phone, &id(&format!("m{seq}")), ack(seq), 64);
        }
        let sender = dedup.senders.iter().next().unwrap();
        let held: usize = sender.devices.values().map(|w| w.order.len()).sum();
        assert_eq!(sender.seqs.len(), held);
        for window in sender.devices.values() {
            for known in &window.order {
                assert_eq!(dedup.get("alice", &known.id), Some(known.ack));
            }
        }
    }
}
