//! A link's three bounded outbound lanes (Consensus > Call > Cast) and the writer's side of them:
//! drained in priority order, whatever is queued coalesced into one buffer per write.

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc::{self, error::TrySendError};

/// The lanes of a link, in priority order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Lane {
    /// Consensus traffic (Raft): first on the wire.
    Consensus,
    /// Calls and their replies.
    Call,
    /// One-way casts: last, and dropped when full.
    Cast,
}

impl Lane {
    /// All lanes, in priority order.
    pub const ALL: [Lane; 3] = [Lane::Consensus, Lane::Call, Lane::Cast];

    /// Position in `ALL` (and in `MeshConfig::lane_capacity`).
    pub fn index(self) -> usize {
        match self {
            Lane::Consensus => 0,
            Lane::Call => 1,
            Lane::Cast => 2,
        }
    }

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Lane::Consensus => "consensus",
            Lane::Call => "call",
            Lane::Cast => "cast",
        }
    }
}

/// The sending side: encoded frames are queued without waiting.
#[derive(Debug)]
pub(crate) struct Lanes {
    senders: [mpsc::Sender<Bytes>; 3],
}

/// The receiving side, owned by the link's writer.
#[derive(Debug)]
pub(crate) struct LaneReceivers {
    receivers: [mpsc::Receiver<Bytes>; 3],
}

/// The lane is full (or its writer is gone); the frame was not queued.
#[derive(Debug)]
pub(crate) struct Full;

impl Lanes {
    /// Three lanes of the given capacities (frames).
    pub(crate) fn new(capacity: [usize; 3]) -> (Lanes, LaneReceivers) {
        let (s0, r0) = mpsc::channel(capacity[0].max(1));
        let (s1, r1) = mpsc::channel(capacity[1].max(1));
        let (s2, r2) = mpsc::channel(capacity[2].max(1));
        (
            Lanes {
                senders: [s0, s1, s2],
            },
            LaneReceivers {
                receivers: [r0, r1, r2],
            },
        )
    }

    /// Queues one encoded frame, or refuses at once.
    pub(crate) fn push(&self, lane: Lane, frame: Bytes) -> Result<(), Full> {
        match self.senders[lane.index()].try_send(frame) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_) | TrySendError::Closed(_)) => Err(Full),
        }
    }

    /// Frames queued per lane.
    pub(crate) fn depths(&self) -> [usize; 3] {
        self.senders
            .each_ref()
            .map(|s| s.max_capacity() - s.capacity())
    }
}

impl LaneReceivers {
    /// Waits for at least one frame, then moves queued frames into `buf` in priority order until
    /// it holds `max_bytes` or the lanes are empty. Returns the number of frames, 0 if every
    /// sender is gone. Cancel-safe: a frame is only taken when it is put into `buf`.
    pub(crate) async fn fill(&mut self, buf: &mut BytesMut, max_bytes: usize) -> usize {
        let [consensus, call, cast] = &mut self.receivers;
        let first = tokio::select! {
            biased;
            Some(frame) = consensus.recv() => frame,
            Some(frame) = call.recv() => frame,
            Some(frame) = cast.recv() => frame,
            else => return 0,
        };
        buf.extend_from_slice(&first);
        let mut frames = 1;
        'fill: while buf.len() < max_bytes {
            for receiver in self.receivers.iter_mut() {
                if let Ok(frame) = receiver.try_recv() {
                    buf.extend_from_slice(&frame);
                    frames += 1;
                    continue 'fill;
                }
            }
            break;
        }
        frames
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_leave_in_priority_order_and_full_lanes_refuse() {
        let (lanes, mut receivers) = Lanes::new([2, 2, 1]);
        lanes
            .push(Lane::Cast, Bytes::from_static(b"c"))
            .expect("room");
        assert!(lanes.push(Lane::Cast, Bytes::from_static(b"x")).is_err());
        lanes
            .push(Lane::Call, Bytes::from_static(b"b"))
            .expect("room");
        lanes
            .push(Lane::Consensus, Bytes::from_static(b"a"))
            .expect("room");
        assert_eq!(lanes.depths(), [1, 1, 1]);
        let mut buf = BytesMut::new();
        assert_eq!(receivers.fill(&mut buf, 1024).await, 3);
        assert_eq!(&buf[..], b"abc");
        assert_eq!(lanes.depths(), [0, 0, 0]);
    }

    #[tokio::test]
    async fn a_batch_stops_at_the_byte_budget() {
        let (lanes, mut receivers) = Lanes::new([8, 8, 8]);
        for _ in 0..4 {
            lanes
                .push(Lane::Call, Bytes::from_static(b"12345"))
                .expect("room");
        }
        let mut buf = BytesMut::new();
        assert_eq!(receivers.fill(&mut buf, 8).await, 2);
        buf.clear();
        assert_eq!(receivers.fill(&mut buf, 1024).await, 2);
    }
}
