//! TLS on a phone's connection, in the connection's own style: no task and no stream wrapper,
//! but a rustls session beside the shared socket. The reader feeds it what the socket has and
//! takes the plain text out; the session actor hands it plain text to encrypt and it writes
//! what the socket takes now. Encrypted bytes the socket did not take wait in rustls (at most
//! [`MAX_SEND_BUFFER`]) until the reader sees the socket writable and flushes them.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rustls::{ServerConfig, ServerConnection};
use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::tls::{HANDSHAKES, MAX_SEND_BUFFER, record_failure};

/// The rustls session of one connection.
#[derive(Debug)]
pub struct PhoneTls {
    session: Mutex<ServerConnection>,
    handshaken: AtomicBool,
}

/// What a read from a TLS connection gave.
pub struct TlsRead {
    /// Plain-text bytes put in the buffer (0 at the end of the stream).
    pub read: usize,
    /// True when the socket is drained and rustls holds no plain text: the reader may wait
    /// for the socket.
    pub drained: bool,
}

impl PhoneTls {
    /// A session for a freshly accepted connection, under `config`.
    pub fn new(config: Arc<ServerConfig>) -> Result<Self, rustls::Error> {
        let mut session = ServerConnection::new(config)?;
        session.set_buffer_limit(Some(MAX_SEND_BUFFER));
        Ok(Self {
            session: Mutex::new(session),
            handshaken: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> MutexGuard<'_, ServerConnection> {
        self.session.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads plain text into `out` (not empty): what rustls holds first, else what the socket
    /// has, decrypted. `WouldBlock` when neither has any.
    pub fn read(&self, stream: &TcpStream, out: &mut [u8]) -> io::Result<TlsRead> {
        let mut session = self.lock();
        let mut socket_drained = false;
        loop {
            match session.reader().read(out) {
                Ok(read) => {
                    let left = session
                        .process_new_packets()
                        .map_or(0, |state| state.plaintext_bytes_to_read());
                    return Ok(TlsRead {
                        read,
                        drained: read == 0 || (socket_drained && left == 0),
                    });
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                // The peer closed without close_notify: the end of the stream all the same.
                Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => {
                    return Ok(TlsRead {
                        read: 0,
                        drained: true,
                    });
                }
                Err(error) => return Err(error),
            }
            if socket_drained {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut drained = false;
            let received = stream.try_io(Interest::READABLE, || {
                let mut socket = Socket::new(stream);
                let read = session.read_tls(&mut socket)?;
                if read > 0 && read < socket.requested {
                    // Drained: WouldBlock clears the readiness (see `Conn::try_read_drained`).
                    drained = true;
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok(read)
            });
            match received {
                Ok(0) => {
                    // End of stream: rustls now answers the next read with its end.
                    let _ = session.process_new_packets();
                    continue;
                }
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock && drained => {}
                Err(error) => return Err(error),
            }
            socket_drained = drained;
            if let Err(error) = session.process_new_packets() {
                // rustls queued an alert telling the peer why: send it (best effort).
                let _ = flush(&mut session, stream);
                let error = io::Error::new(io::ErrorKind::InvalidData, error);
                if !self.handshaken.load(Ordering::Relaxed) {
                    let peer = stream.peer_addr().map(|peer| peer.to_string());
                    record_failure("client", peer.as_deref().unwrap_or("?"), &error);
                }
                return Err(error);
            }
            if !session.is_handshaking() && !self.handshaken.swap(true, Ordering::Relaxed) {
                metrics::counter!(HANDSHAKES, "listener" => "client").increment(1);
            }
            if session.wants_write() && !flush(&mut session, stream)? {
                // Handshake messages wait for the socket (the caller sees `pending_write`);
                // there is nothing to hand out before the peer answers them.
                return Err(io::ErrorKind::WouldBlock.into());
            }
        }
    }

    /// True when encrypted bytes wait for the socket to take them.
    pub fn pending_write(&self) -> bool {
        self.lock().wants_write()
    }

    /// Encrypts as much of `bytes` as fits and writes what the socket takes now. Returns the
    /// plain-text bytes taken and whether encrypted bytes still wait for the socket.
    /// `WouldBlock` when earlier encrypted bytes still wait (nothing is taken then).
    pub fn write(&self, stream: &TcpStream, bytes: &[u8]) -> io::Result<(usize, bool)> {
        let mut session = self.lock();
        if !flush(&mut session, stream)? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let taken = session.writer().write(bytes)?;
        if taken == 0 && !bytes.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let flushed = flush(&mut session, stream)?;
        Ok((taken, !flushed))
    }

    /// Writes what waits for the socket; true when nothing is left.
    pub fn flush(&self, stream: &TcpStream) -> io::Result<bool> {
        flush(&mut self.lock(), stream)
    }

    /// True when rustls holds plain text not read yet (the socket may be drained).
    pub fn has_plaintext(&self) -> bool {
        self.lock()
            .process_new_packets()
            .is_ok_and(|state| state.plaintext_bytes_to_read() > 0)
    }

    /// Encrypts `last` (if any) and a close_notify, and writes them as far as the socket
    /// takes them now.
    pub fn close(&self, stream: &TcpStream, last: &[u8]) {
        let mut session = self.lock();
        if !last.is_empty() && !session.is_handshaking() {
            let _ = session.writer().write(last);
        }
        session.send_close_notify();
        let _ = flush(&mut session, stream);
    }
}

/// Writes rustls' encrypted bytes while the socket takes them; true when none are left.
fn flush(session: &mut ServerConnection, stream: &TcpStream) -> io::Result<bool> {
    while session.wants_write() {
        match session.write_tls(&mut Socket::new(stream)) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(error) => return Err(error),
        }
    }
    Ok(true)
}

/// The socket as rustls reads and writes it: non-blocking, and remembering how much a read
/// asked for (a shorter read drained the socket).
struct Socket<'a> {
    stream: &'a TcpStream,
    requested: usize,
}

impl<'a> Socket<'a> {
    fn new(stream: &'a TcpStream) -> Self {
        Self {
            stream,
            requested: 0,
        }
    }
}

impl Read for Socket<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.requested = buf.len();
        let mut socket: &socket2::Socket = &socket2::SockRef::from(self.stream);
        socket.read(buf)
    }
}

impl Write for Socket<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.try_write(buf)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.stream.try_write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
