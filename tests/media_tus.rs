//! The media server driven by a real third-party tus client: the Python package `tuspy`
//! (pinned below), installed by this test into a virtual environment under the Cargo target
//! directory (reused by later runs; needs `python3` with `venv` and access to PyPI once). It
//! uploads a multi-megabyte file in 1 MiB chunks, stops half-way as if the app were killed,
//! resumes with a new uploader from the server's offset, and uploads the same file again with
//! the asyncio uploader; once over plain HTTP, once over HTTPS (certificates from `tern certs`).

mod common;
mod media_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use media_support::*;

/// The tus client under test.
const TUSPY: &str = "tuspy==1.1.0";

/// Bounds the install and the upload (a hang fails the test).
const PYTHON_WAIT: Duration = Duration::from_secs(600);

const SCRIPT: &str = r#"
import asyncio, os, sys
from tusclient import client

endpoint, token, path = sys.argv[1:4]
size = os.path.getsize(path)
chunk = 1024 * 1024
metadata = {"filename": "holiday.mp4", "filetype": "video/mp4"}
tus = client.TusClient(endpoint, headers={"Authorization": "Bearer " + token})

# The app is killed half-way through.
first = tus.uploader(path, chunk_size=chunk, metadata=metadata)
stop_at = size // 2 + 12345
first.upload(stop_at=stop_at)
assert first.offset == stop_at, first.offset

# It restarts with the stored URL: a new uploader asks the server (HEAD) where to resume.
resumed = tus.uploader(path, chunk_size=chunk, metadata=metadata, url=first.url)
assert resumed.offset == stop_at, resumed.offset
resumed.upload()
assert resumed.offset == size, resumed.offset

# The same file again, with the asyncio uploader.
again = tus.async_uploader(path, chunk_size=2 * chunk, metadata=metadata)
asyncio.run(again.upload())
assert again.offset == size, again.offset

print(first.url)
print(again.url)
"#;

/// Runs `command` to completion within [`PYTHON_WAIT`]; panics with its output on failure.
fn run(command: &mut Command, what: &str) -> String {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {what}: {error}"));
    let deadline = Instant::now() + PYTHON_WAIT;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} did not finish within {PYTHON_WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// A virtual environment with tuspy, created once under the target directory (and once per
/// test process: the tests of this file share it, and the first one in makes it).
fn tuspy_python() -> PathBuf {
    static PYTHON: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PYTHON.get_or_init(make_tuspy_venv).clone()
}

fn make_tuspy_venv() -> PathBuf {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tuspy-1.1.0-venv");
    let python = venv.join("bin").join("python");
    let ready = python.is_file()
        && Command::new(&python)
            .args(["-c", "import tusclient"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
    if !ready {
        run(
            Command::new("python3")
                .args(["-m", "venv", "--clear"])
                .arg(&venv),
            "python3 -m venv",
        );
        run(
            Command::new(&python).args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--timeout",
                "60",
                TUSPY,
            ]),
            "pip install tuspy",
        );
    }
    python
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tuspy_uploads_a_multi_megabyte_file_in_chunks_and_resumes() {
    let server = TestServer::start().await;
    upload_with_tuspy(&server, None).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tuspy_uploads_and_resumes_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let made = tern::certs::make(&tern::certs::CertsRequest {
        dir: dir.path().to_owned(),
        nodes: vec!["tern-1".into()],
        hosts: Vec::new(),
        valid_for: Duration::from_secs(86_400),
        backdate: Duration::from_secs(60),
    })
    .unwrap();
    let (cert, key) = (made.nodes[0].1.clone(), made.nodes[0].2.clone());
    let server = TestServer::start_with(move |config| {
        config.tls.cert_file = Some(cert);
        config.tls.key_file = Some(key);
    })
    .await;
    upload_with_tuspy(&server, Some(&made.ca_cert)).await;
    server.stop().await;
}

/// Runs [`SCRIPT`] against `server` (over HTTPS trusting `ca` when given: requests and aiohttp
/// both take the CA from the environment), then downloads both uploads and checks the bytes
/// and the deduplication of the second.
async fn upload_with_tuspy(server: &TestServer, ca: Option<&Path>) {
    let python = tokio::task::spawn_blocking(tuspy_python).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = content(5 * 1024 * 1024 + 321, 42);
    let file = dir.path().join("holiday.mp4");
    std::fs::write(&file, &data).unwrap();
    let script = dir.path().join("upload.py");
    std::fs::write(&script, SCRIPT).unwrap();
    let scheme = if ca.is_some() { "https" } else { "http" };
    let endpoint = format!("{scheme}://{}/media/", server.media);
    let token = server.token("alice", "phone");
    let saved_before = server
        .metric("tern_media_dedup_saved_bytes_total")
        .await
        .unwrap_or(0.0);
    let ca = ca.map(Path::to_owned);
    let tls = ca
        .as_deref()
        .map(|ca| tern::client::ClientTls::from_ca_file(ca, "127.0.0.1").unwrap());

    let output = tokio::task::spawn_blocking(move || {
        let mut command = Command::new(python);
        command.arg(&script).arg(&endpoint).arg(&token).arg(&file);
        if let Some(ca) = &ca {
            command
                .env("REQUESTS_CA_BUNDLE", ca)
                .env("SSL_CERT_FILE", ca);
        }
        run(&mut command, "the tuspy upload")
    })
    .await
    .unwrap();

    let urls: Vec<&str> = output
        .lines()
        .filter(|line| line.starts_with(scheme))
        .collect();
    assert_eq!(urls.len(), 2, "unexpected output: {output}");
    let mut bob = Tus::new(server.media, &server.token("bob", "phone"));
    bob.tls = tls;
    for url in &urls {
        let path = &url[url.find("/media/").expect("a /media/ URL")..];
        let download = bob.get(path, &[]).await;
        assert_eq!(download.status, 200);
        assert_eq!(download.header("Content-Type"), Some("video/mp4"));
        assert_eq!(download.body.len(), data.len());
        assert!(
            download.body == data,
            "downloaded bytes differ from the file"
        );
    }
    let saved_after = server
        .metric("tern_media_dedup_saved_bytes_total")
        .await
        .unwrap_or(0.0);
    assert!(
        saved_after - saved_before >= data.len() as f64,
        "the second upload of the same file should be deduplicated"
    );
}
