//! A graceful stop closes the journals and stores itself: when `run_until` returns, every
//! journal has been written, fsynced and closed (its directory lock is free, so a new node can
//! open it at once) and holds every acked message.

mod common;

use common::*;
use tern::journal::{Journal, JournalConfig};
use tern::server::{Listeners, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_run_until_returns_the_journals_are_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = test_config(dir.path());
    let listeners = Listeners::bind(&config).await.expect("bind");
    let server = Server::start(config.clone(), listeners)
        .await
        .expect("start");
    let addr = server.client_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run_until(async {
        let _ = stopped.await;
    }));

    let key = tern::token::TokenKey::new(config.auth.token_key.as_bytes());
    let token = key
        .sign("alice", "phone", tern::clock::now_secs() + 600)
        .expect("token");
    let (client, _) = tern::client::Client::login(addr, &token, 0)
        .await
        .expect("login");
    let (mut reader, mut writer) = client.split();
    for n in 0..20 {
        writer
            .send_text(&format!("m{n}"), "bob", "hello")
            .await
            .expect("send");
        next_ack(&mut reader).await;
    }

    let _ = stop.send(());
    running
        .await
        .expect("server task")
        .expect("server stopped cleanly");
    let (journal, recovery) = Journal::open(JournalConfig::new(dir.path().join("journal-0")))
        .expect("the journal is closed once run_until returns");
    assert!(
        recovery.next_lsn() > 20,
        "the journal lost records: next lsn {}",
        recovery.next_lsn()
    );
    journal.close().expect("close");
}
