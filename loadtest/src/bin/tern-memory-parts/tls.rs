//! The TLS part: heap bytes of one phone's rustls session, configured as the node configures
//! it (`tern::tls::phone_config` with a certificate from `tern certs`, the send buffer limit
//! of `PhoneTls`), driven in memory through the handshake and a login-sized exchange each way,
//! for each TLS 1.3 cipher suite a phone may pick. Measured at three moments: the session
//! made at the accept, after the handshake, and idle after the login exchange (what a held
//! phone keeps). Beside it, the record layer's two keys alone (the boxed encrypter and
//! decrypter rustls keeps for the connection's life), for the suites with 32-byte keys.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

use rustls::crypto::cipher::{AeadKey, Iv};
use rustls::crypto::ring::cipher_suite;
use rustls::{
    ClientConfig, ClientConnection, ServerConfig, ServerConnection, SupportedCipherSuite,
};
use tern::certs::{CertsRequest, make};
use tern::tls::{MAX_SEND_BUFFER, phone_config, provider, roots};

/// Bytes of a Login frame as tern-load sends it (token, version, user agent), about.
const LOGIN_BYTES: usize = 200;
/// Bytes of a Welcome frame, about.
const WELCOME_BYTES: usize = 120;
/// Rounds of the handshake loop before giving up (TLS 1.3 needs two and the tickets).
const HANDSHAKE_ROUNDS: usize = 8;

/// The heap per session at the three moments, in bytes.
pub struct SessionBytes {
    /// The cipher suite's name.
    pub suite: String,
    /// `ServerConnection::new`, boxed as the node boxes it.
    pub accepted: f64,
    /// After the handshake (and the session ticket sent).
    pub handshaken: f64,
    /// After a Login in and a Welcome out, with nothing buffered: an idle phone.
    pub idle: f64,
    /// The record layer's encrypter plus decrypter (`None`: not measured for this suite).
    pub record_keys: Option<f64>,
}

/// The size of the session value itself (inside the node's `Box<PhoneTls>`).
pub fn session_size() -> usize {
    std::mem::size_of::<ServerConnection>()
}

/// Measures `count` sessions per cipher suite; `live` reads the heap bytes in use.
pub fn measure(count: usize, live: fn() -> isize) -> Result<Vec<SessionBytes>, String> {
    let dir = std::env::temp_dir().join(format!("tern-memory-parts-{}", std::process::id()));
    let measured = measure_in(&dir, count, live);
    let _ = std::fs::remove_dir_all(&dir);
    measured
}

fn measure_in(dir: &Path, count: usize, live: fn() -> isize) -> Result<Vec<SessionBytes>, String> {
    let made = make(&CertsRequest {
        dir: dir.to_owned(),
        nodes: vec!["tern-1".into()],
        hosts: Vec::new(),
        valid_for: std::time::Duration::from_secs(3600),
        backdate: std::time::Duration::from_secs(60),
    })
    .map_err(|error| error.to_string())?;
    let (_, cert, key) = made
        .nodes
        .first()
        .ok_or("tern certs made no node certificate")?;
    let server = Arc::new(phone_config(cert, key, &[]).map_err(|error| error.to_string())?);
    let suites = [
        cipher_suite::TLS13_AES_256_GCM_SHA384,
        cipher_suite::TLS13_AES_128_GCM_SHA256,
        cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    ];
    suites
        .into_iter()
        .map(|suite| per_suite(&made.ca_cert, suite, &server, count, live))
        .collect()
}

fn per_suite(
    ca: &Path,
    suite: SupportedCipherSuite,
    server: &Arc<ServerConfig>,
    count: usize,
    live: fn() -> isize,
) -> Result<SessionBytes, String> {
    let client = client_config(ca, suite)?;
    // One session first, so that the client's ticket cache and rustls' lazily made statics are
    // in place before counting.
    drop(session(server, &client, Stage::Idle)?);
    let per = |before: isize| (live() - before) as f64 / count as f64;
    let mut held: Vec<Box<ServerConnection>> = Vec::with_capacity(count);
    let mut figures = [0.0; 3];
    for (figure, stage) in figures
        .iter_mut()
        .zip([Stage::Accepted, Stage::Handshaken, Stage::Idle])
    {
        let before = live();
        for _ in 0..count {
            held.push(session(server, &client, stage)?);
        }
        *figure = per(before);
        held.clear();
    }
    let negotiated = session(server, &client, Stage::Handshaken)?
        .negotiated_cipher_suite()
        .map(|negotiated| negotiated.suite());
    if negotiated != Some(suite.suite()) {
        return Err(format!(
            "negotiated {negotiated:?} instead of {:?}",
            suite.suite()
        ));
    }
    Ok(SessionBytes {
        suite: format!("{:?}", suite.suite()),
        accepted: figures[0],
        handshaken: figures[1],
        idle: figures[2],
        record_keys: record_keys(suite, count, live),
    })
}

/// Heap of one connection's encrypter and decrypter, for suites whose key is 32 bytes (the
/// public constructor takes 32; AES-128 keys are 16).
fn record_keys(suite: SupportedCipherSuite, count: usize, live: fn() -> isize) -> Option<f64> {
    let aead = suite.tls13()?.aead_alg;
    if aead.key_len() != 32 {
        return None;
    }
    let before = live();
    let keys: Vec<_> = (0..count)
        .map(|_| {
            let encrypter = aead.encrypter(AeadKey::from([1; 32]), Iv::from([2; 12]));
            let decrypter = aead.decrypter(AeadKey::from([1; 32]), Iv::from([2; 12]));
            (encrypter, decrypter)
        })
        .collect();
    let vec_bytes = (count * std::mem::size_of_val(&keys[0])) as isize;
    Some((live() - before - vec_bytes) as f64 / count as f64)
}

/// How far a session is driven.
#[derive(Clone, Copy)]
enum Stage {
    Accepted,
    Handshaken,
    Idle,
}

/// A client configuration offering only `suite`, trusting `ca`.
fn client_config(ca: &Path, suite: SupportedCipherSuite) -> Result<Arc<ClientConfig>, String> {
    let mut only = (*provider()).clone();
    only.cipher_suites = vec![suite];
    let config = ClientConfig::builder_with_provider(Arc::new(only))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|error| error.to_string())?
        .with_root_certificates(roots(ca).map_err(|error| error.to_string())?)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// One server session driven to `stage` against a client that is dropped before returning.
fn session(
    server: &Arc<ServerConfig>,
    client: &Arc<ClientConfig>,
    stage: Stage,
) -> Result<Box<ServerConnection>, String> {
    let text = |error: rustls::Error| error.to_string();
    let mut session = Box::new(ServerConnection::new(server.clone()).map_err(text)?);
    session.set_buffer_limit(Some(MAX_SEND_BUFFER));
    if matches!(stage, Stage::Accepted) {
        return Ok(session);
    }
    let name = "localhost".try_into().map_err(|_| "server name")?;
    let mut phone = ClientConnection::new(client.clone(), name).map_err(text)?;
    for _ in 0..HANDSHAKE_ROUNDS {
        carry(&mut phone, &mut *session)?;
        carry(&mut *session, &mut phone)?;
        let busy = phone.is_handshaking() || session.is_handshaking();
        if !busy && !phone.wants_write() && !session.wants_write() {
            break;
        }
    }
    if phone.is_handshaking() || session.is_handshaking() {
        return Err("the handshake did not complete".to_owned());
    }
    if matches!(stage, Stage::Idle) {
        phone
            .writer()
            .write_all(&[7; LOGIN_BYTES])
            .map_err(|error| error.to_string())?;
        carry(&mut phone, &mut *session)?;
        drain(session.reader())?;
        session
            .writer()
            .write_all(&[9; WELCOME_BYTES])
            .map_err(|error| error.to_string())?;
        carry(&mut *session, &mut phone)?;
        drain(phone.reader())?;
    }
    Ok(session)
}

/// Moves every record `from` has to write into `to`, and lets `to` process them.
fn carry<A, B, F, T>(from: &mut F, to: &mut T) -> Result<(), String>
where
    F: std::ops::DerefMut<Target = rustls::ConnectionCommon<A>>,
    T: std::ops::DerefMut<Target = rustls::ConnectionCommon<B>>,
{
    let mut wire = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut wire)
            .map_err(|error| error.to_string())?;
    }
    let mut rest = &wire[..];
    while !rest.is_empty() {
        to.read_tls(&mut rest).map_err(|error| error.to_string())?;
        to.process_new_packets()
            .map_err(|error| error.to_string())?;
    }
    Ok(())
}

/// Reads every plain-text byte a session holds.
fn drain(mut reader: rustls::Reader<'_>) -> Result<(), String> {
    let mut buf = [0; 1024];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
            Err(error) => return Err(error.to_string()),
        }
    }
}
