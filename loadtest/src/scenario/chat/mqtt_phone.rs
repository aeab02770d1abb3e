//! One phone of the chat scenario speaking MQTT 3.1.1: subscribes to `tl/<user>` with QoS 1,
//! publishes to `tl/<partner>` with QoS 1, at most `--window` PUBLISHes awaiting their PUBACK.
//! The body, the pacing and the loss/duplicate/latency accounting are the tern phone's.
//!
//! A lost connection ends the phone (it is counted; with a clean session the broker keeps
//! nothing for it, so what was in flight to it shows as lost).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use super::phone::{Phase, Phone, Recorder, Shared, count_delivery, enter};
use crate::body::{self, Stamp};
use crate::bucket::Bucket;
use crate::error::LoadError;
use crate::mqtt::{MqttError, MqttReader, MqttWriter, Packet, client};
use crate::poll::now_or_never;
use crate::progress::bump;
use crate::scenario::idle::MQTT_KEEP_ALIVE;

/// Publishes queued before the phone reads again.
const SEND_BATCH: usize = 64;
/// Packets handled before the phone writes again.
const READ_BATCH: usize = 1024;
/// Topic prefix: `tl/<user>`.
const TOPIC_PREFIX: &str = "tl/";

/// Runs one MQTT phone: connects and subscribes, reports on `ready`, then chats until the
/// phase is [`Phase::Stopped`] or the connection is lost.
pub async fn run(
    phone: Phone,
    shared: Arc<Shared>,
    mut phase: watch::Receiver<Phase>,
    ready: mpsc::Sender<Result<(), LoadError>>,
) {
    let first = connect(&phone, &shared).await;
    let Some(((reader, writer), _open)) = enter(first, &shared.counters, &mut phase, ready).await
    else {
        return;
    };
    let mut state = State::new(&phone, &shared);
    if let Err(error) = state.drive(reader, writer, &mut phase).await {
        bump(&shared.counters.disconnects);
        if shared.errors_shown.fetch_add(1, Ordering::Relaxed) < 10 {
            eprintln!("{}: connection lost: {error}", phone.user);
        }
    }
    state.finish();
}

async fn connect(phone: &Phone, shared: &Shared) -> Result<(MqttReader, MqttWriter), LoadError> {
    let _permit = shared.dial_gate.acquire().await.ok();
    let connected = phone
        .dialer
        .mqtt_connect(phone.index, &phone.user, MQTT_KEEP_ALIVE)
        .await;
    if let Err(LoadError::Handshake { .. }) = &connected {
        bump(&shared.counters.handshake_failures);
    }
    let (mut reader, mut writer) = connected?;
    let topic = format!("{TOPIC_PREFIX}{}", phone.user);
    client::subscribe(&mut reader, &mut writer, &topic, 1).await?;
    bump(&shared.counters.logins);
    Ok((reader, writer))
}

/// A phone's state on its connection.
struct State<'a> {
    phone: &'a Phone,
    shared: &'a Shared,
    topic: String,
    /// Packet id → (counter, send time µs) of PUBLISHes awaiting PUBACK.
    in_flight: HashMap<u16, u64>,
    next_counter: u64,
    pacer: Bucket,
    latency: Recorder,
    queued: bool,
    last_write: Instant,
}

impl<'a> State<'a> {
    fn new(phone: &'a Phone, shared: &'a Shared) -> Self {
        let now = Instant::now();
        let stagger = phone.index as f64 / shared.phones.max(1) as f64;
        let rate = shared.rate_per_phone;
        Self {
            phone,
            shared,
            topic: format!("{TOPIC_PREFIX}{}", phone.partner),
            in_flight: HashMap::new(),
            next_counter: 0,
            pacer: Bucket::new(rate, (rate * 0.05).max(1.0), stagger, now),
            latency: Recorder::new(phone.index),
            queued: false,
            last_write: now,
        }
    }

    /// Serves the connection until the run stops (Ok) or the connection fails.
    async fn drive(
        &mut self,
        mut reader: MqttReader,
        mut writer: MqttWriter,
        phase: &mut watch::Receiver<Phase>,
    ) -> Result<(), MqttError> {
        let keep_alive = MQTT_KEEP_ALIVE / 3;
        let sleep = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(sleep);
        loop {
            let current = *phase.borrow_and_update();
            if current == Phase::Stopped {
                let _ = writer.send(&Packet::Disconnect).await;
                return Ok(());
            }
            let now = Instant::now();
            let ping_at = self.last_write + keep_alive;
            if ping_at <= now {
                writer.queue(&Packet::PingReq);
                self.queued = true;
            }
            let wake = self.queue_sends(&mut writer, current, now);
            if std::mem::take(&mut self.queued) {
                writer.flush().await?;
                self.last_write = Instant::now();
            }
            let wake = wake.map_or(ping_at, |at| at.min(ping_at));
            sleep.as_mut().reset(wake.into());
            tokio::select! {
                received = reader.recv() => {
                    let mut received = received;
                    for _ in 0..READ_BATCH {
                        match received? {
                            Some(packet) => self.handle(packet, &mut writer),
                            None => return Err(MqttError::Closed),
                        }
                        match now_or_never(reader.recv()) {
                            Some(next) => received = next,
                            None => break,
                        }
                    }
                }
                () = &mut sleep => {}
                changed = phase.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Queues new PUBLISHes; returns when to look again (`None`: when a packet arrives).
    fn queue_sends(
        &mut self,
        writer: &mut MqttWriter,
        phase: Phase,
        now: Instant,
    ) -> Option<Instant> {
        if phase != Phase::Sending {
            return None;
        }
        let paced = self.shared.rate_per_phone > 0.0;
        for _ in 0..SEND_BATCH {
            let packet_id = (self.next_counter % 65_535) as u16 + 1;
            let room = self.in_flight.len() < self.shared.window
                && !self.in_flight.contains_key(&packet_id);
            if !room {
                return None;
            }
            if !self.pacer.try_take(now) {
                return paced.then(|| self.pacer.next_ready(now));
            }
            let counter = self.next_counter;
            self.next_counter += 1;
            let sent_us = body::now_us();
            let stamp = Stamp {
                run: self.shared.run,
                sender: u32::try_from(self.phone.index).unwrap_or(u32::MAX),
                counter,
                sent_us,
            };
            self.in_flight.insert(packet_id, counter);
            self.phone
                .outgoing
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .sent(counter);
            bump(&self.shared.counters.sent);
            self.shared
                .counters
                .in_flight
                .fetch_add(1, Ordering::Relaxed);
            writer.queue(&Packet::Publish {
                topic: self.topic.clone(),
                qos: 1,
                packet_id: Some(packet_id),
                dup: false,
                retain: false,
                payload: stamp.encode(self.shared.size),
            });
            self.queued = true;
        }
        Some(now)
    }

    fn handle(&mut self, packet: Packet, writer: &mut MqttWriter) {
        let counters = &self.shared.counters;
        match packet {
            Packet::PubAck { packet_id } => {
                let Some(counter) = self.in_flight.remove(&packet_id) else {
                    bump(&counters.unexpected);
                    return;
                };
                counters.in_flight.fetch_sub(1, Ordering::Relaxed);
                let first = self
                    .phone
                    .outgoing
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .acked(counter);
                if first {
                    bump(&counters.acked);
                }
            }
            Packet::Publish {
                packet_id, payload, ..
            } => {
                if let Some(packet_id) = packet_id {
                    writer.queue(&Packet::PubAck { packet_id });
                    self.queued = true;
                }
                self.on_message(&payload);
            }
            Packet::PingResp | Packet::SubAck { .. } => {}
            _ => bump(&counters.unexpected),
        }
    }

    fn on_message(&mut self, payload: &[u8]) {
        let partner = u32::try_from(self.phone.index ^ 1).unwrap_or(u32::MAX);
        let stamp =
            Stamp::decode(payload).filter(|s| s.run == self.shared.run && s.sender == partner);
        count_delivery(self.phone, self.shared, &mut self.latency, stamp);
    }

    /// Hands over the latencies; messages still awaiting PUBACK leave the in-flight count (a
    /// lost connection would otherwise keep the drain waiting).
    fn finish(&mut self) {
        self.latency.flush(self.phone, self.shared);
        let left = i64::try_from(self.in_flight.len()).unwrap_or(i64::MAX);
        self.shared
            .counters
            .in_flight
            .fetch_sub(left, Ordering::Relaxed);
    }
}
