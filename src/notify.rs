//! systemd's readiness protocol (`Type=notify`): a datagram of `KEY=value` lines to the unix
//! socket named by `NOTIFY_SOCKET`. Without that variable (not started by systemd) nothing is
//! sent. No library: the protocol is one `sendto(2)`.

use std::os::unix::net::UnixDatagram;

/// Tells systemd `state` (e.g. `READY=1`, `STOPPING=1`, `STATUS=...`), if systemd is listening.
/// Failures are logged once each and otherwise ignored: readiness reporting never stops a node.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = UnixDatagram::unbound().and_then(|socket| {
        let bytes = path.as_encoded_bytes();
        if let Some(name) = bytes.strip_prefix(b"@") {
            // An abstract socket: its name follows the '@'.
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(state.as_bytes(), &addr)
        } else {
            socket.send_to(state.as_bytes(), &path)
        }
    });
    if let Err(error) = sent {
        tracing::warn!(%error, state, "cannot notify systemd");
    }
}
