//! `tern-memory-parts`: heap bytes per part of an idle logged-in phone, measured by building
//! `--count` of each part from tern's own types under a counting allocator.
//!
//! Parts: the session actor (a ractor actor with tern's session message type and a state of the
//! session's size), the connection (`Conn` with its socket, in the connection table), the reader
//! task (a task parked on the socket, as the real reader is while idle), the registry entry,
//! and the mailbox slot (one device's cursor and the account record); and, for a phone on a TLS
//! client port, its rustls session (`tls.rs`). Heap bytes requested are
//! counted, not RSS: allocator rounding and fragmentation come on top, and so do the kernel's
//! socket structures (not in the process's RSS at all). Compare with `tern-load idle`'s RSS
//! growth per connection.

// The counting allocator (a `GlobalAlloc`) is the one place that needs `unsafe`.
#![deny(unsafe_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};

use clap::Parser;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tern::connection::{Conn, ConnTable};
use tern::mailbox::Slot;
use tern::message::Id;
use tern::registry::{DeviceSession, PushBudget, Registry};
use tern::session::SessionMsg;

mod tls;

mod counting {
    //! A global allocator that counts live heap bytes.
    #![allow(unsafe_code)]

    use super::{AtomicIsize, Ordering};
    use std::alloc::{GlobalAlloc, Layout, System};

    pub static LIVE: AtomicIsize = AtomicIsize::new(0);

    pub struct Counting;

    // SAFETY: forwards every call to the system allocator unchanged and only counts sizes.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
            // SAFETY: the caller's contract for `alloc` is passed on as is.
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
            // SAFETY: the caller's contract for `dealloc` is passed on as is.
            unsafe { System.dealloc(ptr, layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            LIVE.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
            // SAFETY: the caller's contract for `realloc` is passed on as is.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }
}

#[global_allocator]
static ALLOCATOR: counting::Counting = counting::Counting;

/// Heap bytes per part of an idle logged-in phone.
#[derive(Debug, Parser)]
#[command(name = "tern-memory-parts", version, about)]
struct Args {
    /// How many of each part to build (each connection needs two sockets; stay well under the
    /// open-file limit).
    #[arg(long, default_value_t = 4000)]
    count: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// An actor like the session actor: tern's message type and a state of the session's size.
struct Idle;

impl Actor for Idle {
    type Msg = SessionMsg;
    type State = Box<[u8; SESSION_STATE_BYTES]>;
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<SessionMsg>,
        _args: (),
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(Box::new([0; SESSION_STATE_BYTES]))
    }
}

/// `size_of::<SessionState>()` (asserted in tern's unit tests to stay small).
const SESSION_STATE_BYTES: usize = 208;

fn live() -> isize {
    counting::LIVE.load(Ordering::Relaxed)
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let n = args.count.max(1);
    let mut parts: Vec<(&str, f64)> = Vec::new();
    let per = |before: isize| (live() - before) as f64 / n as f64;

    // Session actors.
    let before = live();
    let mut actors = Vec::with_capacity(n);
    for _ in 0..n {
        match Actor::spawn(None, Idle, ()).await {
            Ok((actor, _)) => actors.push(actor),
            Err(error) => {
                eprintln!("tern-memory-parts: cannot spawn an actor: {error}");
                std::process::exit(2);
            }
        }
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    parts.push((
        "session actor (ractor, SessionMsg, 208-byte state)",
        per(before),
    ));

    // Connections: the server's side of a socket pair, in the connection table.
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("tern-memory-parts: cannot listen: {error}");
            std::process::exit(2);
        }
    };
    let Ok(addr) = listener.local_addr() else {
        std::process::exit(2);
    };
    let mut clients = Vec::with_capacity(n);
    let mut accepted = Vec::with_capacity(n);
    let before = live();
    for _ in 0..n {
        let (client, server) =
            tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        match (client, server) {
            (Ok(client), Ok((server, _))) => {
                clients.push(client);
                accepted.push(server);
            }
            _ => {
                eprintln!("tern-memory-parts: cannot connect a socket pair");
                std::process::exit(2);
            }
        }
    }
    // Both ends of each pair were registered with the runtime: half of it is one phone's.
    parts.push(("socket registration with the runtime", per(before) / 2.0));
    let table = ConnTable::default();
    let before = live();
    let mut conns = Vec::with_capacity(n);
    for (id, stream) in accepted.into_iter().enumerate() {
        let conn = Arc::new(Conn::new(id as u64, stream));
        table.insert(conn.clone());
        conns.push(conn);
    }
    parts.push(("connection (Conn, table entry)", per(before)));

    // Reader tasks: parked until the socket is readable, as an idle reader is.
    let before = live();
    let mut readers = Vec::with_capacity(n);
    for conn in &conns {
        let conn = conn.clone();
        readers.push(tokio::spawn(async move { conn.readable().await }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    parts.push((
        "a task parked on the socket (header and a small future)",
        per(before),
    ));

    // Registry entries.
    let registry = Registry::default();
    let users: Vec<Id> = (0..n).map(|i| Id::from(format!("user-{i:08}"))).collect();
    let device: Id = Id::from("phone");
    let before = live();
    for (i, (user, conn)) in users.iter().zip(&conns).enumerate() {
        registry.insert(
            user,
            DeviceSession {
                device: device.clone(),
                conn_id: i as u64,
                sink: conn.clone(),
                pushes: Arc::new(PushBudget::default()),
            },
        );
    }
    parts.push(("registry entry (online map, push budget)", per(before)));

    // Mailbox slots: one device's cursor and the account record.
    let before = live();
    let mut slots = hashbrown::HashMap::with_capacity(n);
    for user in &users {
        let mut slot = Slot::default();
        slot.mailbox.login(&device, 0);
        slot.account.login(&device, 1);
        slots.insert(user.clone(), slot);
    }
    parts.push(("mailbox slot (cursor, dedup table, account)", per(before)));

    let total: f64 = parts.iter().map(|(_, bytes)| bytes).sum();
    let sessions = match tls::measure(n, live) {
        Ok(sessions) => sessions,
        Err(error) => {
            eprintln!("tern-memory-parts: cannot measure TLS sessions: {error}");
            std::process::exit(2);
        }
    };
    if args.json {
        let mut fields: Vec<String> = parts
            .iter()
            .map(|(name, bytes)| format!("{:?}:{:.0}", name, bytes))
            .collect();
        for session in &sessions {
            fields.push(format!(
                "\"tls {}\":{{\"accepted\":{:.0},\"handshaken\":{:.0},\"idle\":{:.0},\
                 \"record_keys\":{}}}",
                session.suite,
                session.accepted,
                session.handshaken,
                session.idle,
                session
                    .record_keys
                    .map_or("null".to_owned(), |bytes| format!("{bytes:.0}"))
            ));
        }
        println!(
            "{{\"count\":{n},{},\"total\":{total:.0},\"tls_session_size\":{}}}",
            fields.join(","),
            tls::session_size()
        );
    } else {
        println!("| part | heap bytes per phone |");
        println!("|---|---|");
        for (name, bytes) in &parts {
            println!("| {name} | {bytes:.0} |");
        }
        println!("| **sum** | **{total:.0}** |");
        println!("({n} of each; heap bytes requested, before allocator overhead)");
        println!();
        println!(
            "| a TLS phone's rustls session (ServerConnection, {} bytes, boxed) | at the accept \
             | after the handshake | idle after a login exchange | of which the record keys |",
            tls::session_size()
        );
        println!("|---|---|---|---|---|");
        for session in &sessions {
            println!(
                "| {} | {:.0} | {:.0} | {:.0} | {} |",
                session.suite,
                session.accepted,
                session.handshaken,
                session.idle,
                session
                    .record_keys
                    .map_or("-".to_owned(), |bytes| format!("{bytes:.0}"))
            );
        }
    }
    drop((readers, slots, registry, clients, table));
}
