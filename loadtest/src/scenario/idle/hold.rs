//! One idle connection: log in (tern Login/Welcome, or MQTT CONNECT/CONNACK), then hold it
//! until Stop, answering what the server sends and pinging within its idle timeout.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tern::client::Client;
use tern::proto::v1::{DeviceAck, Ping, ServerFrame, client_frame, server_frame::Frame};
use tokio::sync::{Semaphore, mpsc, watch};

use crate::error::LoadError;
use crate::latency::SharedLatency;
use crate::mqtt::{MqttReader, MqttWriter, Packet};
use crate::parts::Command;
use crate::progress::{Counters, bump};
use crate::target::Endpoint;

/// MQTT keep-alive announced in CONNECT; PINGREQ goes out at a third of it.
pub const MQTT_KEEP_ALIVE: Duration = Duration::from_secs(300);
/// Ping interval when the server announces no idle timeout.
const DEFAULT_PING: Duration = Duration::from_secs(100);

/// What the connections of a part share.
#[derive(Debug)]
pub struct Holder {
    /// The server.
    pub endpoint: Endpoint,
    /// User name prefix.
    pub prefix: String,
    /// Live counters.
    pub counters: std::sync::Arc<Counters>,
    /// Login latencies.
    pub latency: SharedLatency,
    /// Bounds concurrent connection attempts.
    pub gate: Semaphore,
    /// The first failure, for the Ready report.
    pub first_error: Mutex<Option<String>>,
    /// Connections closed by the server (or lost) during the hold.
    pub dropped: AtomicU64,
}

/// An open, logged-in connection.
enum Held {
    Tern(Client, Duration),
    Mqtt(MqttReader, MqttWriter),
}

/// Opens connection `index`, reports on `ready` (true when logged in), holds it until Stop.
pub async fn run(
    index: usize,
    holder: std::sync::Arc<Holder>,
    ready: mpsc::Sender<bool>,
    mut commands: watch::Receiver<Command>,
) {
    let (opened, started) = {
        let _permit = holder.gate.acquire().await.ok();
        // Timed from the connect, not from the wait for a permit.
        let started = Instant::now();
        (open(index, &holder).await, started)
    };
    let held = match opened {
        Ok(held) => held,
        Err(error) => {
            bump(&holder.counters.errors);
            if matches!(error, LoadError::Handshake { .. }) {
                bump(&holder.counters.handshake_failures);
            }
            holder
                .first_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get_or_insert_with(|| error.to_string());
            let _ = ready.send(false).await;
            return;
        }
    };
    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    holder.latency.record_all(index, &[micros]);
    bump(&holder.counters.logins);
    holder.counters.open.fetch_add(1, Ordering::Relaxed);
    let _ = ready.send(true).await;
    drop(ready);
    let stop = commands.wait_for(|c| *c == Command::Stop);
    let kept = match held {
        Held::Tern(client, ping) => tokio::select! {
            _ = stop => true,
            () = hold_tern(client, ping, &holder.counters) => false,
        },
        Held::Mqtt(reader, writer) => tokio::select! {
            _ = stop => true,
            () = hold_mqtt(reader, writer) => false,
        },
    };
    if !kept {
        holder.dropped.fetch_add(1, Ordering::Relaxed);
        bump(&holder.counters.disconnects);
    }
    holder.counters.open.fetch_sub(1, Ordering::Relaxed);
}

async fn open(index: usize, holder: &Holder) -> Result<Held, LoadError> {
    let user = format!("{}{index}", holder.prefix);
    match &holder.endpoint {
        Endpoint::Tern(target) => {
            let token = target.token(&user, "d")?;
            let (client, welcome) = target.dialer.login(index, &user, &token, 0).await?;
            let ping = match welcome.idle_timeout_secs {
                0 => DEFAULT_PING,
                secs => Duration::from_secs(u64::from(secs)) / 3,
            };
            Ok(Held::Tern(client, ping))
        }
        Endpoint::Mqtt(dialer) => {
            let (reader, writer) = dialer.mqtt_connect(index, &user, MQTT_KEEP_ALIVE).await?;
            Ok(Held::Mqtt(reader, writer))
        }
    }
}

/// Holds a tern connection: acks deliveries, pings; returns when the connection ends.
async fn hold_tern(client: Client, ping: Duration, counters: &Counters) {
    let (mut reader, mut writer) = client.split();
    let mut pinger = tokio::time::interval_at((Instant::now() + ping).into(), ping);
    let mut nonce = 0;
    loop {
        tokio::select! {
            received = reader.recv() => match received {
                Ok(Some(ServerFrame { frame: Some(Frame::Deliver(deliver)) })) => {
                    let ack = client_frame::Frame::Ack(DeviceAck { up_to_seq: deliver.seq });
                    if writer.send(ack).await.is_err() {
                        return;
                    }
                }
                Ok(Some(ServerFrame { frame: Some(Frame::GoAway(_)) })) => {
                    bump(&counters.go_aways);
                    return;
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return,
            },
            _ = pinger.tick() => {
                nonce += 1;
                if writer.send(client_frame::Frame::Ping(Ping { nonce })).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Holds an MQTT connection: acks QoS 1 messages, pings; returns when the connection ends.
async fn hold_mqtt(mut reader: MqttReader, mut writer: MqttWriter) {
    let every = MQTT_KEEP_ALIVE / 3;
    let mut pinger = tokio::time::interval_at((Instant::now() + every).into(), every);
    loop {
        tokio::select! {
            received = reader.recv() => match received {
                Ok(Some(Packet::Publish { packet_id: Some(packet_id), .. })) => {
                    if writer.send(&Packet::PubAck { packet_id }).await.is_err() {
                        return;
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return,
            },
            _ = pinger.tick() => {
                if writer.send(&Packet::PingReq).await.is_err() {
                    return;
                }
            }
        }
    }
}
