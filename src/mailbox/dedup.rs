//! A mailbox's dedup table: the recent `client_msg_id`s of each sender, with their original
//! acks, so that a retry is answered with the original ack instead of being stored again.
//!
//! The key is (sending user, `client_msg_id`), but the window is kept per sending *device*:
//! each device of a sender keeps its last `dedup_window` ids, so one device's sends never push
//! out what another device may still have unacked. `dedup_window` is at least what one device
//! may have in flight (the session's cap), so every id a device may still resend is covered.
//!
//! The table is saved to the store by write-back passes, in fixed slots: the ids of a device
//! take consecutive positions of a ring of [`CHUNKS`] chunks, and only the chunks that changed
//! since the last pass are written again (one record each). A chunk is written only with ids
//! that are durable in the journal, so the store never remembers an append that failed.

use std::collections::VecDeque;
use std::sync::Arc;

use hashbrown::HashMap;

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

/// The dedup table of one mailbox (empty, without an allocation, until a first append).
#[derive(Debug, Default)]
pub struct Dedup {
    senders: HashMap<Id, SenderDedup>,
}

/// The remembered ids of one sending user, found by id whatever device sent them.
#[derive(Debug, Default)]
struct SenderDedup {
    acks: HashMap<Arc<str>, AckInfo>,
    devices: DeviceMap<DeviceWindow>,
}

/// The last ids of one sending device, oldest first (seqs increase along it).
#[derive(Debug, Default)]
struct DeviceWindow {
    order: VecDeque<Arc<str>>,
    /// Ring position of `order[0]`; `order[i]` is at `first + i`.
    first: u64,
    /// Chunks changed since they were last saved, one bit each.
    unsaved: u64,
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

impl Dedup {
    /// The original ack of (`from_user`, `client_msg_id`), if remembered.
    pub fn get(&self, from_user: &str, client_msg_id: &str) -> Option<AckInfo> {
        self.senders
            .get(from_user)
            .and_then(|sender| sender.acks.get(client_msg_id))
            .copied()
    }

    /// True when (`from_user`, `client_msg_id`) is remembered.
    pub fn contains(&self, from_user: &str, client_msg_id: &str) -> bool {
        self.get(from_user, client_msg_id).is_some()
    }

    /// Remembers a new append (its seq above every remembered one), forgetting the device's
    /// oldest id past the window.
    pub fn remember(
        &mut self,
        from_user: &Id,
        from_device: &Id,
        client_msg_id: &Arc<str>,
        ack: AckInfo,
        dedup_window: usize,
    ) {
        let SenderDedup { acks, devices } = self.senders.entry(from_user.clone()).or_default();
        let window = devices.get_or_insert_with(from_device, DeviceWindow::default);
        // Room first, so neither the window nor the map ever holds more than `dedup_window`
        // (a full window would otherwise grow both to the next power of two).
        window.trim(acks, dedup_window.saturating_sub(1));
        acks.insert(client_msg_id.clone(), ack);
        let position = window.first + window.order.len() as u64;
        window.unsaved |= 1 << chunk_of(position, chunk_ids(dedup_window));
        window.order.push_back(client_msg_id.clone());
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
        let SenderDedup { acks, devices } = self.senders.entry(from_user.clone()).or_default();
        if acks.contains_key(client_msg_id) {
            return;
        }
        let window = devices.get_or_insert_with(from_device, DeviceWindow::default);
        let at = window.order.partition_point(|known| {
            acks.get(known)
                .is_some_and(|remembered| remembered.seq < ack.seq)
        });
        if at == 0 && window.order.len() >= dedup_window {
            // Older than every id of a full window: it was forgotten before.
            return;
        }
        acks.insert(client_msg_id.clone(), ack);
        window.order.insert(at, client_msg_id.clone());
        window.trim(acks, dedup_window);
        window.unsaved = chunks_of(window.first, window.order.len(), chunk_ids(dedup_window));
    }

    /// Forgets an append whose write failed, so that a retry is stored anew.
    pub fn forget(&mut self, from_user: &str, client_msg_id: &str) {
        let Some(SenderDedup { acks, devices }) = self.senders.get_mut(from_user) else {
            return;
        };
        if acks.remove(client_msg_id).is_none() {
            return;
        }
        for window in devices.values_mut() {
            // Usually the newest id: search from the back.
            if let Some(index) = window.order.iter().rposition(|id| **id == *client_msg_id) {
                window.order.remove(index);
                // The ids after it moved down one position.
                window.unsaved = ALL_CHUNKS;
                return;
            }
        }
    }

    /// Marks every chunk that holds ids unsaved (a store batch failed: it is all written again).
    pub fn mark_unsaved(&mut self, dedup_window: usize) {
        for sender in self.senders.values_mut() {
            for window in sender.devices.values_mut() {
                window.unsaved |=
                    chunks_of(window.first, window.order.len(), chunk_ids(dedup_window));
            }
        }
    }

    /// True when some chunk changed since it was last saved.
    pub fn has_unsaved(&self) -> bool {
        self.senders
            .values()
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
        let per_chunk = chunk_ids(dedup_window);
        for (sender, SenderDedup { acks, devices }) in &mut self.senders {
            for (device, window) in devices.iter_mut() {
                if window.unsaved == 0 {
                    continue;
                }
                let mut ids: Vec<(usize, Arc<str>, AckInfo)> = window
                    .order
                    .iter()
                    .enumerate()
                    .filter_map(|(index, id)| {
                        let chunk = chunk_of(window.first + index as u64, per_chunk);
                        let ack = acks.get(id)?;
                        (window.unsaved & (1 << chunk) != 0).then(|| (chunk, id.clone(), *ack))
                    })
                    .collect();
                // A chunk's ids are at most two runs (the ring wraps); seq order within each.
                ids.sort_by_key(|(chunk, _, ack)| (*chunk, ack.seq));
                let mut still_unsaved = 0;
                let mut chunk_list: Vec<(Arc<str>, AckInfo)> = Vec::new();
                let mut rest = &ids[..];
                for chunk in 0..CHUNKS {
                    if window.unsaved & (1 << chunk) == 0 {
                        continue;
                    }
                    let end = rest.partition_point(|(of, _, _)| *of == chunk);
                    let (these, after) = rest.split_at(end);
                    rest = after;
                    chunk_list.clear();
                    for (_, id, ack) in these {
                        if ack.seq <= durable {
                            chunk_list.push((id.clone(), *ack));
                        } else {
                            still_unsaved |= 1 << chunk;
                        }
                    }
                    save(SavedChunk {
                        sender,
                        device,
                        chunk: chunk as u8,
                        ids: &chunk_list,
                    });
                }
                window.unsaved = still_unsaved;
            }
        }
    }
}

impl DeviceWindow {
    /// Forgets the oldest ids past `dedup_window`.
    fn trim(&mut self, acks: &mut HashMap<Arc<str>, AckInfo>, dedup_window: usize) {
        while self.order.len() > dedup_window {
            if let Some(old) = self.order.pop_front() {
                acks.remove(&old);
                self.first += 1;
            }
        }
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

    /// Every saved chunk.
    fn saved(dedup: &mut Dedup, durable: u64, window: usize) -> Vec<Chunk> {
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

    #[test]
    fn a_mailbox_without_dedup_history_pays_for_one_empty_map() {
        // Idle phones: the table of a mailbox that never received a message allocates nothing.
        assert_eq!(
            std::mem::size_of::<Dedup>(),
            std::mem::size_of::<HashMap<Id, ()>>()
        );
        assert_eq!(Dedup::default().senders.capacity(), 0);
    }

    #[test]
    fn each_device_keeps_its_own_window() {
        let mut dedup = Dedup::default();
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
        let mut dedup = Dedup::default();
        let (alice, phone) = (id("alice"), id("phone"));
        for seq in 1..=3000 {
            dedup.remember(&alice, &phone, &id(&format!("m{seq}")), ack(seq), 1024);
        }
        let window = dedup.senders["alice"].devices.get("phone").unwrap();
        assert_eq!(window.order.len(), 1024);
        assert_eq!(window.order.capacity(), 1024);
        assert_eq!(dedup.senders["alice"].acks.len(), 1024);
    }

    #[test]
    fn restored_ids_keep_the_last_of_each_device_by_seq() {
        let mut dedup = Dedup::default();
        let (alice, phone) = (id("alice"), id("phone"));
        for seq in [5, 2, 7, 1, 6, 3] {
            dedup.restore(&alice, &phone, &id(&format!("m{seq}")), ack(seq), 4);
        }
        let kept: Vec<u64> = (1..=7)
            .filter(|seq| dedup.contains("alice", &format!("m{seq}")))
            .collect();
        assert_eq!(kept, vec![3, 5, 6, 7]);
        // A repeated id keeps its first ack.
        dedup.restore(&alice, &phone, &id("m7"), ack(99), 4);
        assert_eq!(dedup.get("alice", "m7"), Some(ack(7)));
    }

    #[test]
    fn only_changed_chunks_are_saved_and_only_durable_ids() {
        let mut dedup = Dedup::default();
        let (alice, phone) = (id("alice"), id("phone"));
        // A window of 128: two ids per chunk.
        for seq in 1..=3 {
            dedup.remember(&alice, &phone, &id(&format!("m{seq}")), ack(seq), 128);
        }
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
        let mut dedup = Dedup::default();
        let (alice, phone) = (id("alice"), id("phone"));
        for seq in [3, 1, 2] {
            dedup.restore(&alice, &phone, &id(&format!("m{seq}")), ack(seq), 128);
        }
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
        let mut dedup = Dedup::default();
        let (alice, phone) = (id("alice"), id("phone"));
        // A window of 64: one id per chunk; the 65th id takes chunk 0 again.
        for seq in 1..=65 {
            dedup.remember(&alice, &phone, &id(&format!("m{seq}")), ack(seq), 64);
        }
        let chunks = saved(&mut dedup, 65, 64);
        assert_eq!(chunks.len(), CHUNKS);
        assert_eq!(chunks[0].2, vec![("m65".to_string(), 65)]);
        assert_eq!(chunks[1].2, vec![("m2".to_string(), 2)]);
        let total: usize = chunks.iter().map(|(_, _, ids)| ids.len()).sum();
        assert_eq!(total, 64);
    }
}
