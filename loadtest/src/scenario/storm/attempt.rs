//! One storm loop: log in, resume, read to QueueDrained, disconnect, again, until Stop.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tern::proto::v1::{DeviceAck, ServerFrame, client_frame, server_frame::Frame};
use tokio::sync::watch;

use crate::bucket::Bucket;
use crate::dial::Dialer;
use crate::error::LoadError;
use crate::latency::{LatencyBuffer, SharedLatency};
use crate::mqtt::Packet;
use crate::parts::Command;
use crate::progress::{Counters, bump};
use crate::scenario::idle::MQTT_KEEP_ALIVE;
use crate::target::Endpoint;

/// How long a login may wait for QueueDrained after Welcome.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed attempt.
const ERROR_PAUSE: Duration = Duration::from_millis(50);
/// Errors printed per process.
const ERRORS_SHOWN: u64 = 10;

/// What the loops of a part share.
#[derive(Debug)]
pub struct Storm {
    /// The server.
    pub endpoint: Endpoint,
    /// User name prefix.
    pub prefix: String,
    /// Loops in the whole run (to rotate source addresses without collisions).
    pub loops: usize,
    /// Logins per second per loop; 0 is unlimited.
    pub rate_per_loop: f64,
    /// Live counters.
    pub counters: Arc<Counters>,
    /// Login latencies.
    pub latency: SharedLatency,
    /// Attempts that timed out.
    pub timeouts: AtomicU64,
    /// Errors printed so far.
    pub errors_shown: AtomicU64,
}

/// Runs loop `index` until Stop.
pub async fn run_loop(index: usize, storm: Arc<Storm>, mut commands: watch::Receiver<Command>) {
    let user = format!("{}{index}", storm.prefix);
    let token = match &storm.endpoint {
        Endpoint::Tern(target) => match target.token(&user, "d") {
            Ok(token) => token,
            Err(error) => {
                storm.show_error(&error.to_string());
                bump(&storm.counters.errors);
                return;
            }
        },
        Endpoint::Mqtt(_) => String::new(),
    };
    let now = Instant::now();
    let stagger = index as f64 / storm.loops.max(1) as f64;
    let mut pacer = Bucket::new(storm.rate_per_loop, 1.0, stagger, now);
    let mut latency = LatencyBuffer::new(index);
    let mut resume_after = 0;
    let mut attempt = 0usize;
    // Every attempt of this loop goes to the same server; only the source address rotates.
    let dialer = storm.endpoint.dialer().only(index);
    loop {
        let next = pacer.next_ready(Instant::now());
        tokio::select! {
            () = tokio::time::sleep_until(next.into()) => {}
            _ = commands.wait_for(|c| *c == Command::Stop) => break,
        }
        pacer.force_take(Instant::now());
        let source = index + attempt * storm.loops;
        attempt += 1;
        let started = Instant::now();
        let result = tokio::select! {
            result = once(&storm, &dialer, source, &user, &token, resume_after) => result,
            _ = commands.wait_for(|c| *c == Command::Stop) => break,
        };
        match result {
            Ok((login_micros, last_seq)) => {
                resume_after = resume_after.max(last_seq);
                bump(&storm.counters.logins);
                latency.record(&storm.latency, login_micros);
            }
            Err(error) => {
                bump(&storm.counters.errors);
                match error {
                    LoadError::Timeout { .. } => {
                        storm.timeouts.fetch_add(1, Ordering::Relaxed);
                    }
                    LoadError::Handshake { .. } => bump(&storm.counters.handshake_failures),
                    _ => {}
                }
                storm.show_error(&format!(
                    "{user}: {error} (after {:.0} ms)",
                    started.elapsed().as_secs_f64() * 1000.0
                ));
                tokio::time::sleep(ERROR_PAUSE).await;
            }
        }
    }
    latency.flush(&storm.latency);
}

impl Storm {
    fn show_error(&self, line: &str) {
        let shown = self.errors_shown.fetch_add(1, Ordering::Relaxed);
        if shown < ERRORS_SHOWN {
            eprintln!("storm: {line}");
        } else if shown == ERRORS_SHOWN {
            eprintln!("storm: (further errors are only counted)");
        }
    }
}

/// One login: returns the login latency (µs) and the last seq seen.
async fn once(
    storm: &Storm,
    dialer: &Dialer,
    source: usize,
    user: &str,
    token: &str,
    resume_after: u64,
) -> Result<(u64, u64), LoadError> {
    let started = Instant::now();
    let micros = |at: Instant| u64::try_from(at.elapsed().as_micros()).unwrap_or(u64::MAX);
    match &storm.endpoint {
        Endpoint::Tern(_) => {
            let (client, welcome) = dialer.login(source, user, token, resume_after).await?;
            let login_micros = micros(started);
            let (mut reader, mut writer) = client.split();
            let mut last_seq = welcome.cursor;
            let drained = async {
                loop {
                    match reader.recv().await? {
                        Some(ServerFrame {
                            frame: Some(Frame::QueueDrained(_)),
                        }) => return Ok(()),
                        Some(ServerFrame {
                            frame: Some(Frame::Deliver(deliver)),
                        }) => {
                            last_seq = last_seq.max(deliver.seq);
                            let ack = DeviceAck {
                                up_to_seq: last_seq,
                            };
                            writer.send(client_frame::Frame::Ack(ack)).await?;
                        }
                        Some(_) => {}
                        None => return Err(LoadError::Client(tern::client::ClientError::Closed)),
                    }
                }
            };
            tokio::time::timeout(DRAIN_TIMEOUT, drained)
                .await
                .unwrap_or_else(|_| {
                    Err(LoadError::Timeout {
                        addr: dialer.server_for(source),
                        user: user.to_owned(),
                        secs: DRAIN_TIMEOUT.as_secs(),
                    })
                })?;
            Ok((login_micros, last_seq))
        }
        Endpoint::Mqtt(_) => {
            let (_reader, mut writer) = dialer.mqtt_connect(source, user, MQTT_KEEP_ALIVE).await?;
            let login_micros = micros(started);
            writer.send(&Packet::Disconnect).await?;
            Ok((login_micros, 0))
        }
    }
}
