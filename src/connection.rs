//! A phone's TCP connection: the state its reader task and its session actor share, and the
//! table of open connections that the sweeper walks (with the devices under a flood penalty).
//!
//! The socket is shared, not split: the reader task awaits readiness and reads; the session actor
//! writes with non-blocking `try_write` and, when the socket is full, asks the reader (through
//! `want_write` and `wake`) to wait for writability and cast it a `Flush`. So one task per
//! connection does all the waiting, and an idle connection holds no buffer and no timer.

pub mod per_ip;
pub mod reader;
pub mod sweep;
pub mod tls;

use std::io::{self, Read};
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::BytesMut;
use hashbrown::HashMap;
use ractor::ActorRef;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::clock::uptime_secs;
use crate::mailbox::{EventSink, MailboxEvent};
use crate::session::SessionMsg;
use crate::shard::SHARDS;
use tls::PhoneTls;

/// One accepted connection.
#[derive(Debug)]
pub struct Conn {
    /// Process-unique id (logs, registry).
    pub id: u64,
    /// The socket (reads by the reader task, writes by the session actor). The phone's
    /// address is not kept: `stream.peer_addr()` tells it while the socket is open, and 32
    /// bytes less keep the shared allocation in a smaller size class.
    pub stream: TcpStream,
    /// The TLS session when the client port speaks TLS (boxed: a plain connection pays a
    /// pointer).
    tls: Option<Box<PhoneTls>>,
    opened_at: u32,
    last_active: AtomicU32,
    /// Uptime second + 1 at which delivery became blocked; 0 while it flows.
    stalled_since: AtomicU32,
    /// Uptime second + 1 at which the read buffer began to hold an incomplete frame; 0 while it
    /// holds none. The sweeper cuts a frame that stays incomplete for `frame_timeout_secs`.
    partial_since: AtomicU32,
    /// Highest seq the session has written (or skipped) to the phone: a `DeviceAck` up to here
    /// that moves past the previous one acknowledges something new and is not rate-limited.
    delivered_upto: AtomicU64,
    /// The highest `DeviceAck` that passed without a rate-limit token (see
    /// [`Conn::free_ack`]); only the reader touches it. Kept here rather than in the reader's
    /// future, whose size is per-phone memory rounded up to tokio's 128-byte task cells.
    free_acked: AtomicU64,
    want_write: AtomicBool,
    closed: AtomicBool,
    wake: Notify,
    session: OnceLock<ActorRef<SessionMsg>>,
}

impl Conn {
    /// Wraps an accepted socket.
    pub fn new(id: u64, stream: TcpStream) -> Self {
        Self::with_tls(id, stream, None)
    }

    /// Wraps an accepted socket whose bytes go through `tls` (none: plain text).
    pub fn with_tls(id: u64, stream: TcpStream, tls: Option<PhoneTls>) -> Self {
        let now = uptime_secs();
        Self {
            id,
            stream,
            tls: tls.map(Box::new),
            opened_at: now,
            last_active: AtomicU32::new(now),
            stalled_since: AtomicU32::new(0),
            partial_since: AtomicU32::new(0),
            delivered_upto: AtomicU64::new(0),
            free_acked: AtomicU64::new(0),
            want_write: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            wake: Notify::new(),
            session: OnceLock::new(),
        }
    }

    /// Waits until the socket is readable (or closed), as the reader does while a phone idles.
    pub async fn readable(&self) -> std::io::Result<()> {
        self.stream.readable().await
    }

    /// Records activity from the phone (a coarse stamp; no timer is reset).
    pub fn touch(&self) {
        self.last_active.store(uptime_secs(), Ordering::Relaxed);
    }

    /// Marks delivery as blocked (or flowing again).
    pub fn set_stalled(&self, stalled: bool) {
        if stalled {
            let _ = self.stalled_since.compare_exchange(
                0,
                uptime_secs() + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        } else {
            self.stalled_since.store(0, Ordering::Relaxed);
        }
    }

    /// Records whether the read buffer holds an incomplete frame, and whether a new one began
    /// since the last call (`restarted`: a frame completed and another one is under way).
    pub fn set_partial(&self, partial: bool, restarted: bool) {
        if !partial {
            self.partial_since.store(0, Ordering::Relaxed);
        } else if restarted {
            self.partial_since
                .store(uptime_secs() + 1, Ordering::Relaxed);
        } else {
            let _ = self.partial_since.compare_exchange(
                0,
                uptime_secs() + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// Publishes the highest seq written to the phone (called by the session before the bytes
    /// leave, so the phone's ack of them always finds it).
    pub fn set_delivered(&self, seq: u64) {
        self.delivered_upto.store(seq, Ordering::Release);
    }

    /// The highest seq written to the phone, as last published by the session.
    pub fn delivered(&self) -> u64 {
        self.delivered_upto.load(Ordering::Acquire)
    }

    /// True when a `DeviceAck` up to `up_to` acknowledges entries written to the phone that no
    /// earlier free ack covered; it then passes without a rate-limit token. Any other ack (a
    /// repeat, one below the last, one beyond what was written) takes a token like every other
    /// frame, so free acks are bounded by what the session delivers. Called by the reader only.
    pub fn free_ack(&self, up_to: u64) -> bool {
        if up_to > self.free_acked.load(Ordering::Relaxed) && up_to <= self.delivered() {
            self.free_acked.store(up_to, Ordering::Relaxed);
            true
        } else {
            false
        }
    }

    /// Asks the reader to wait for the socket to become writable and then cast `Flush`.
    pub fn request_writable(&self) {
        self.want_write.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// Closes the connection: no more writes (queued bytes are still sent, then FIN), and the
    /// reader winds down. Idempotent.
    pub fn close(&self) {
        self.close_with(&[]);
    }

    /// Writes `last` (best effort: a fresh or idle socket takes it whole) and closes, unless
    /// the connection is closed already; true when this call closed it. Of two parties ending
    /// a connection at once (a refused login and the shutdown, say), only one writes its frame.
    pub fn close_with(&self, last: &[u8]) -> bool {
        if self.closed.swap(true, Ordering::AcqRel) {
            return false;
        }
        match &self.tls {
            Some(tls) => tls.close(&self.stream, last),
            None if !last.is_empty() => {
                let _ = self.stream.try_write(last);
            }
            None => {}
        }
        let _ = socket2::SockRef::from(&self.stream).shutdown(Shutdown::Write);
        self.wake.notify_one();
        true
    }

    /// True once [`Conn::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// The session actor, once logged in.
    pub fn session(&self) -> Option<&ActorRef<SessionMsg>> {
        self.session.get()
    }

    /// Records the session actor after login.
    pub fn set_session(&self, session: ActorRef<SessionMsg>) {
        let _ = self.session.set(session);
    }
}

/// A session on this node is reached through its connection (no allocation of its own: the
/// connection is already shared).
impl EventSink for Conn {
    fn send(&self, event: MailboxEvent) -> bool {
        self.session
            .get()
            .is_some_and(|session| session.cast(SessionMsg::Event(event)).is_ok())
    }
}

impl Conn {
    /// Reads what the socket has now into the spare capacity of `buf` (which must have some).
    /// Returns the bytes read (0 at end of stream) and whether the read drained the socket.
    ///
    /// A read that leaves part of the spare capacity unfilled has emptied the socket's receive
    /// queue; the socket's readiness is then cleared, so the reader waits for the next data
    /// instead of paying one more `recv` that would only find none. Data arriving meanwhile
    /// raises a new readiness event, which clearing does not lose.
    pub fn try_read_drained(&self, buf: &mut BytesMut) -> io::Result<(usize, bool)> {
        let start = buf.len();
        let spare = buf.capacity() - start;
        buf.resize(start + spare, 0);
        if let Some(tls) = &self.tls {
            let result = tls.read(&self.stream, &mut buf[start..]);
            buf.truncate(start + result.as_ref().map_or(0, |read| read.read));
            if tls.pending_write() {
                self.request_writable();
            }
            return result.map(|read| (read.read, read.drained));
        }
        let mut read = 0;
        let result = self.stream.try_io(Interest::READABLE, || {
            let mut socket: &socket2::Socket = &socket2::SockRef::from(&self.stream);
            read = socket.read(&mut buf[start..])?;
            if read > 0 && read < spare {
                // Drained: report WouldBlock to clear the readiness; `read` carries the count.
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(read)
        });
        buf.truncate(start + read);
        match result {
            Ok(read) => Ok((read, false)),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock && read > 0 => Ok((read, true)),
            Err(error) => Err(error),
        }
    }

    /// Writes as much of `bytes` as the socket takes now.
    pub fn try_write(&self, bytes: &[u8]) -> std::io::Result<usize> {
        let Some(tls) = &self.tls else {
            return self.stream.try_write(bytes);
        };
        let (taken, pending) = tls.write(&self.stream, bytes)?;
        if pending {
            // The reader flushes the rest when the socket can take it.
            self.request_writable();
        }
        Ok(taken)
    }

    /// Writes encrypted bytes that wait for the socket (a TLS connection's); true when none
    /// are left (always, for plain text).
    pub fn flush_pending(&self) -> io::Result<bool> {
        self.tls
            .as_ref()
            .map_or(Ok(true), |tls| tls.flush(&self.stream))
    }

    /// True when input was received and decrypted but not read yet (a TLS connection's), so
    /// the reader must read before it waits for the socket.
    pub fn has_buffered_input(&self) -> bool {
        self.tls.as_ref().is_some_and(|tls| tls.has_plaintext())
    }

    /// True when the connection speaks TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Seconds since the phone last sent a frame, at `now`.
    fn idle_secs(&self, now: u32) -> u32 {
        now.saturating_sub(self.last_active.load(Ordering::Relaxed))
    }

    /// Seconds delivery has been blocked, at `now` (0 when flowing).
    fn stalled_secs(&self, now: u32) -> u32 {
        match self.stalled_since.load(Ordering::Relaxed) {
            0 => 0,
            since => (now + 1).saturating_sub(since),
        }
    }

    /// Seconds the read buffer has held an incomplete frame, at `now` (0 when it holds none).
    fn partial_secs(&self, now: u32) -> u32 {
        match self.partial_since.load(Ordering::Relaxed) {
            0 => 0,
            since => (now + 1).saturating_sub(since),
        }
    }

    /// Seconds since the connection was accepted, at `now`.
    fn age_secs(&self, now: u32) -> u32 {
        now.saturating_sub(self.opened_at)
    }
}

type ConnShard = Mutex<HashMap<u64, Arc<Conn>>>;

/// Devices cut for flooding, by [`device_key`], with the uptime second from which they may log
/// in again.
type PenaltyShard = Mutex<HashMap<u64, u32>>;

/// Devices under a flood penalty per shard, at most: past it (a flood of floods) new penalties
/// are not recorded, so the table stays bounded.
const MAX_PENALTIES_PER_SHARD: usize = 4096;

/// Seconds a device cut for flooding is refused at login: the delay its `GoAway{FLOOD}`
/// announces (`reconnect_after_ms`), enforced, so reconnecting at once does not buy a fresh
/// burst of the rate limit.
pub const FLOOD_PENALTY_SECS: u32 = 5;

/// All open connections, in 32 shards so the sweeper and accepts rarely contend.
#[derive(Debug)]
pub struct ConnTable {
    shards: Box<[ConnShard]>,
    count: AtomicUsize,
    next_id: AtomicU64,
    penalties: Box<[PenaltyShard]>,
}

impl Default for ConnTable {
    /// The table of a node without `[cluster]` (ordinal 0).
    fn default() -> Self {
        Self::new(0)
    }
}

/// The key of a (user, device) login in the penalty table.
pub fn device_key(user: &str, device: &str) -> u64 {
    let mut key = Vec::with_capacity(user.len() + device.len() + 1);
    key.extend_from_slice(user.as_bytes());
    key.push(0);
    key.extend_from_slice(device.as_bytes());
    crate::shard::key_hash(&key)
}

impl ConnTable {
    /// An empty table whose connection ids carry `ordinal` (`cluster.node`, 0 without
    /// `[cluster]`) in their top bits, so they are unique across the cluster; the low bits
    /// count from 1 (layout in `crate::node::ids`).
    pub fn new(ordinal: u64) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            count: AtomicUsize::new(0),
            next_id: AtomicU64::new(crate::node::ids::first_conn_id(ordinal)),
            penalties: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    /// A fresh connection id.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn shard(&self, id: u64) -> &ConnShard {
        &self.shards[(id % SHARDS as u64) as usize]
    }

    /// Adds a connection.
    pub fn insert(&self, conn: Arc<Conn>) {
        let mut shard = self
            .shard(conn.id)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if shard.insert(conn.id, conn).is_none() {
            self.count.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Removes a connection.
    pub fn remove(&self, id: u64) {
        let mut shard = self.shard(id).lock().unwrap_or_else(|e| e.into_inner());
        if shard.remove(&id).is_some() {
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Open connections.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// True when no connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn penalty_shard(&self, device: u64) -> &PenaltyShard {
        &self.penalties[(device % SHARDS as u64) as usize]
    }

    /// Refuses logins of `device` (a [`device_key`]) for [`FLOOD_PENALTY_SECS`] from `now`.
    pub fn penalize(&self, device: u64, now: u32) {
        let mut shard = self
            .penalty_shard(device)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if shard.len() >= MAX_PENALTIES_PER_SHARD {
            shard.retain(|_, until| *until > now);
        }
        if shard.len() < MAX_PENALTIES_PER_SHARD {
            shard.insert(device, now + FLOOD_PENALTY_SECS);
        }
    }

    /// Seconds `device` must still wait before it may log in again, at `now` (0: it may).
    pub fn penalty_secs(&self, device: u64, now: u32) -> u32 {
        let shard = self
            .penalty_shard(device)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        shard
            .get(&device)
            .map_or(0, |until| until.saturating_sub(now))
    }

    /// Forgets penalties that ended before `now` (the sweeper's pass).
    pub fn expire_penalties(&self, now: u32) {
        for shard in self.penalties.iter() {
            let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            if !shard.is_empty() {
                shard.retain(|_, until| *until > now);
            }
        }
    }

    /// Calls `f` on every connection, one shard locked at a time (`f` must not block).
    pub fn for_each(&self, mut f: impl FnMut(&Arc<Conn>)) {
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            shard.values().for_each(&mut f);
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use tokio::io::{AsyncWriteExt, Interest};
    use tokio::net::{TcpListener, TcpStream};

    use super::Conn;

    /// A short read clears the readiness; data that arrives afterwards raises it again and is
    /// read whole, and a read that fills the buffer leaves the rest for the next one.
    #[tokio::test]
    async fn a_drained_read_clears_readiness_without_losing_later_data() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut phone = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let conn = Conn::new(1, stream);

        phone.write_all(b"hello").await.unwrap();
        conn.stream.ready(Interest::READABLE).await.unwrap();
        let mut buf = BytesMut::with_capacity(16);
        assert_eq!(conn.try_read_drained(&mut buf).unwrap(), (5, true));
        assert_eq!(&buf[..], b"hello");
        // Readiness is cleared: nothing to read is reported as such, not as a stale event.
        assert_eq!(
            conn.try_read_drained(&mut buf).unwrap_err().kind(),
            std::io::ErrorKind::WouldBlock
        );

        phone.write_all(&[7u8; 20]).await.unwrap();
        conn.stream.ready(Interest::READABLE).await.unwrap();
        buf.clear();
        buf.reserve(16);
        let (first, drained) = conn.try_read_drained(&mut buf).unwrap();
        assert!(!drained && first == buf.capacity());
        buf.reserve(64);
        let (second, drained) = conn.try_read_drained(&mut buf).unwrap();
        assert!(drained);
        assert_eq!((first + second, &buf[..]), (20, &[7u8; 20][..]));
    }
}

#[cfg(test)]
mod size_tests {
    /// A connection lives in an `Arc` per phone (two counters, then the `Conn`): it stays
    /// within mimalloc's 160-byte size class (the TLS pointer included: 152 bytes without it),
    /// so plain-text phones pay nothing for TLS.
    #[test]
    fn a_connection_fits_its_size_class() {
        let size = std::mem::size_of::<super::Conn>() + 16;
        assert!(size <= 160, "Arc<Conn> takes {size} bytes");
    }
}
