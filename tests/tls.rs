//! TLS on the client and media ports: phones chat over TLS with certificates from `tern certs`,
//! a plain-text client and an untrusting client are refused and counted, tus uploads and
//! ranged downloads work over HTTPS, and renewed certificate files are served to new
//! connections while established ones carry on.

mod common;
mod media_support;

use std::path::Path;
use std::time::Duration;

use common::{TestServer, WAIT, eventually, metric_value, next_matching};
use media_support::{Tus, content, request_with};
use tern::certs::{CertsMade, CertsRequest, make};
use tern::client::{Client, ClientTls, text_frame};
use tern::proto::v1::server_frame::Frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn certs(dir: &Path) -> CertsMade {
    make(&CertsRequest {
        dir: dir.to_owned(),
        nodes: vec!["tern-1".into()],
        hosts: Vec::new(),
        valid_for: Duration::from_secs(86_400),
        backdate: Duration::from_secs(60),
    })
    .expect("certificates")
}

async fn tls_server(made: &CertsMade, reload_check_secs: u64) -> TestServer {
    let (cert, key) = (made.nodes[0].1.clone(), made.nodes[0].2.clone());
    TestServer::start_with(move |config| {
        config.tls.cert_file = Some(cert);
        config.tls.key_file = Some(key);
        config.tls.reload_check_secs = reload_check_secs;
    })
    .await
}

/// The client_msg_id of the next ServerAck.
async fn acked(reader: &mut tern::client::ClientReader) -> String {
    next_matching(reader, |frame| match frame {
        Frame::ServerAck(ack) => Some(ack.client_msg_id),
        _ => None,
    })
    .await
}

async fn failures(server: &TestServer, listener: &str, failure: &str) -> f64 {
    let series =
        format!("tern_tls_failures_total{{listener=\"{listener}\",failure=\"{failure}\"}}");
    metric_value(&server.metrics().await, &series).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phones_chat_over_tls_and_plain_text_or_untrusting_clients_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let made = certs(&dir.path().join("certs"));
    let server = tls_server(&made, 10).await;
    let tls = ClientTls::from_ca_file(&made.ca_cert, "localhost").unwrap();
    let login = |user: &'static str| {
        let token = server.token(user, "phone");
        let tls = tls.clone();
        let addr = server.addr;
        async move {
            tokio::time::timeout(WAIT, Client::login_with(addr, Some(&tls), &token, 0))
                .await
                .expect("login timed out")
                .expect("login over TLS")
                .0
        }
    };
    let mut alice = login("alice").await;
    let mut bob = login("bob").await;
    // Larger than one TLS record (16 KiB), so a frame spans records both ways.
    let body = vec![b'x'; 16_000];
    for round in 0..3 {
        let id = format!("m{round}");
        alice.send(text_frame(&id, "bob", &body)).await.unwrap();
        let acked = acked(&mut alice.reader).await;
        assert_eq!(acked, id);
        let delivered = next_matching(&mut bob.reader, |frame| match frame {
            Frame::Deliver(deliver) => Some(deliver),
            _ => None,
        })
        .await;
        let Some(tern::proto::v1::deliver::Payload::Message(message)) = delivered.payload else {
            panic!("not a chat message: {delivered:?}");
        };
        assert_eq!(message.body.len(), body.len());
    }

    // A plain-text phone gets a TLS alert and the close, and is counted.
    let mut plain = TcpStream::connect(server.addr).await.unwrap();
    plain.write_all(&[0, 0, 0, 5, 1, 2, 3, 4, 5]).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, plain.read_to_end(&mut answer))
        .await
        .expect("closed")
        .expect("read");
    assert_eq!(
        answer.first(),
        Some(&0x15),
        "a TLS alert record: {answer:?}"
    );
    eventually("the plain-text client is counted", async || {
        failures(&server, "client", "not_tls").await >= 1.0
    })
    .await;

    // A phone that trusts another CA refuses the node's certificate.
    let stranger = certs(&dir.path().join("other"));
    let untrusting = ClientTls::from_ca_file(&stranger.ca_cert, "localhost").unwrap();
    let refused = Client::login_with(server.addr, Some(&untrusting), &server.token("eve", "p"), 0)
        .await
        .err()
        .expect("an unknown issuer is refused");
    assert!(
        refused.to_string().contains("invalid peer certificate"),
        "{refused}"
    );

    // The two phones still talk.
    bob.send(text_frame("late", "alice", b"still here"))
        .await
        .unwrap();
    let acked = acked(&mut bob.reader).await;
    assert_eq!(acked, "late");
    let metrics = server.metrics().await;
    assert!(
        metric_value(&metrics, "tern_tls_handshakes_total{listener=\"client\"}").unwrap_or(0.0)
            >= 2.0
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tus_uploads_and_ranged_downloads_work_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let made = certs(&dir.path().join("certs"));
    let server = tls_server(&made, 10).await;
    let tls = ClientTls::from_ca_file(&made.ca_cert, "127.0.0.1").unwrap();
    let tus = Tus::new(server.media, &server.token("alice", "phone")).with_tls(tls.clone());
    let data = content(300_000, 7);
    let path = tus.upload(&data, "", 64 * 1024).await;
    let whole = tus.get(&path, &[]).await;
    assert_eq!(whole.status, 200);
    assert_eq!(whole.body, data);
    let part = tus.get(&path, &[("Range", "bytes=100000-100099")]).await;
    assert_eq!(part.status, 206);
    assert_eq!(part.body, &data[100_000..100_100]);
    // Plain HTTP on the HTTPS port: an alert, a close, a count.
    let mut plain = TcpStream::connect(server.media).await.unwrap();
    plain
        .write_all(b"GET /media/x HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, plain.read_to_end(&mut answer)).await;
    assert!(!answer.starts_with(b"HTTP/"), "plain HTTP was answered");
    eventually("plain HTTP on the media port is counted", async || {
        failures(&server, "media", "not_tls").await >= 1.0
    })
    .await;
    // And the HTTPS port still answers.
    let head = request_with(server.media, Some(&tls), "OPTIONS", "/media/", &[], b"").await;
    assert_eq!(head.status, 204);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewed_certificates_reach_new_connections_and_spare_established_ones() {
    let dir = tempfile::tempdir().unwrap();
    let made = certs(&dir.path().join("certs"));
    let server = tls_server(&made, 1).await;
    let old_trust = ClientTls::from_ca_file(&made.ca_cert, "localhost").unwrap();
    let (mut phone, _) = Client::login_with(
        server.addr,
        Some(&old_trust),
        &server.token("alice", "phone"),
        0,
    )
    .await
    .unwrap();

    // A renewal under another CA rewrites the files in place.
    let renewed = certs(&dir.path().join("renewed"));
    let new_trust = ClientTls::from_ca_file(&renewed.ca_cert, "localhost").unwrap();
    std::fs::copy(&renewed.nodes[0].2, &made.nodes[0].2).unwrap();
    std::fs::copy(&renewed.nodes[0].1, &made.nodes[0].1).unwrap();
    let token = server.token("bob", "phone");
    eventually("new connections get the renewed certificate", async || {
        Client::login_with(server.addr, Some(&new_trust), &token, 0)
            .await
            .is_ok()
    })
    .await;
    assert!(
        Client::login_with(server.addr, Some(&old_trust), &token, 0)
            .await
            .is_err(),
        "the old certificate is no longer served"
    );
    // The phone connected before the renewal carries on.
    phone
        .send(text_frame("after", "bob", b"renewed"))
        .await
        .unwrap();
    let acked = acked(&mut phone.reader).await;
    assert_eq!(acked, "after");
    let metrics = server.metrics().await;
    assert!(metric_value(&metrics, "tern_tls_reloads_total{outcome=\"ok\"}").unwrap_or(0.0) >= 1.0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_and_a_bad_file_keeps_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let made = certs(&dir.path().join("certs"));
    let (cert, key) = (&made.nodes[0].1, &made.nodes[0].2);
    // Only SIGHUP reloads (no periodic check).
    let section = format!(
        "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nreload_check_secs = 0\n\n[dispatch]\n",
        cert.display(),
        key.display()
    );
    let files = common::ChildFiles::new(&[("[dispatch]\n", section.as_str())]);
    let node = files.start();
    let pid = node.child.id().to_string();
    let hangup = || {
        let status = std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .expect("kill");
        assert!(status.success());
    };
    let reloads = async |outcome: &str| {
        let text = common::http_get(node.admin, "/metrics").await;
        let series = format!("tern_tls_reloads_total{{outcome=\"{outcome}\"}}");
        metric_value(&text, &series).unwrap_or(0.0)
    };
    let token = files
        .key
        .sign("alice", "phone", tern::clock::now_secs() + 600)
        .unwrap();
    let login = async |trust: &ClientTls| {
        Client::login_with(node.client, Some(trust), &token, 0)
            .await
            .is_ok()
    };
    let old_trust = ClientTls::from_ca_file(&made.ca_cert, "localhost").unwrap();
    assert!(login(&old_trust).await);

    // A broken certificate file: the reload fails, the old certificate stays in use.
    std::fs::write(cert, "not a certificate").unwrap();
    hangup();
    eventually("the failed reload is counted", async || {
        reloads("failed").await >= 1.0
    })
    .await;
    assert!(
        login(&old_trust).await,
        "the old certificate is still served"
    );

    // A renewed pair: SIGHUP puts it in use.
    let renewed = certs(&dir.path().join("renewed"));
    std::fs::copy(&renewed.nodes[0].2, key).unwrap();
    std::fs::copy(&renewed.nodes[0].1, cert).unwrap();
    hangup();
    eventually("the reload is counted", async || reloads("ok").await >= 1.0).await;
    let new_trust = ClientTls::from_ca_file(&renewed.ca_cert, "localhost").unwrap();
    assert!(login(&new_trust).await, "the renewed certificate is served");
    assert!(!login(&old_trust).await);
}
