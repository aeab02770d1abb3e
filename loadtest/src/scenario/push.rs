//! `tern-load push`: devices that are away, and the pushes that wake them.
//!
//! The scenario runs a stand-in push gateway (`--gateway-listen`; the server's `[push] url` must
//! point at it), registers `--devices` devices with a push token each (users `<prefix>r<i>`,
//! device `d`, token `<prefix>tok-<run>-<i>`) and logs them out, then `--senders` phones send
//! `--messages` messages at `--rate` in total, message k to recipient k mod N. Every recipient
//! stays away, so the server owes each one exactly one push (the burst's later messages are
//! collapsed into it) soon after its first message. The report gives pushes per message, the time
//! from the send of a recipient's first message to its push request (p50/p99), duplicates (a
//! second push for a device within the run) and recipients never pushed.

mod gateway;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hashbrown::{HashMap, HashSet};
use tern::client::text_frame;
use tern::proto::v1::{
    ErrorCode, PushPlatform, PushRegister, ServerFrame, push_request::Op, server_frame::Frame,
};
use tokio::sync::{Mutex, Semaphore};
use tokio::task::JoinSet;

use super::Verdict;
use crate::error::LoadError;
use crate::latency::Latency;
use crate::procfs::Watch;
use crate::report::{Report, round1, round3};
use crate::target::{ServerArgs, Target};

pub use gateway::Format;

/// The device every phone logs in as.
const DEVICE: &str = "d";
/// Registrations in flight at once.
const REGISTERING: usize = 64;
/// How long a registration may take.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(20);

/// Arguments of `tern-load push`.
#[derive(Debug, Clone, clap::Args)]
pub struct PushArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Devices that register a token and stay away.
    #[arg(long, default_value_t = 1000)]
    devices: usize,
    /// Messages in total, spread over the devices (message k to device k mod N).
    #[arg(long, default_value_t = 10_000)]
    messages: u64,
    /// Sending phones.
    #[arg(long, default_value_t = 10)]
    senders: usize,
    /// Messages per second in total.
    #[arg(long, default_value_t = 2000.0)]
    rate: f64,
    /// Where the stand-in gateway listens (the server's `[push] url` names it).
    #[arg(long, default_value = "127.0.0.1:8088")]
    gateway_listen: SocketAddr,
    /// The request format the server is configured for.
    #[arg(long, value_enum, default_value_t = Format::Gorush)]
    format: Format,
    /// Seconds to wait for late pushes once every device that got a message was pushed (or,
    /// without that, after the last send).
    #[arg(long, default_value_t = 3.0)]
    settle_secs: f64,
    /// Take the gateway down this many seconds after it started (connections refused and
    /// dropped), for --gateway-down-for seconds.
    #[arg(long)]
    gateway_down_at: Option<f64>,
    /// How long the gateway stays down.
    #[arg(long, default_value_t = 30.0)]
    gateway_down_for: f64,
    /// Prefix of the user names and tokens.
    #[arg(long, default_value = "push-")]
    prefix: String,
    /// The server's process id: its CPU time is read from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
}

/// What the run learned, shared by the senders and the gateway's reader.
#[derive(Default)]
struct Tally {
    /// Per recipient: the send time of its first message not yet covered by a push.
    pending: HashMap<usize, Instant>,
    /// Recipients that got a message.
    messaged: HashSet<usize>,
    /// Pushes per recipient.
    pushes: HashMap<usize, u64>,
    /// Push ids seen.
    ids: HashSet<String>,
    latency: Latency,
    /// The message counts the pushes carried, summed.
    counted: u64,
    duplicates: u64,
    unknown: u64,
    acked: u64,
    refused: u64,
}

/// Runs the scenario: Pass when every recipient was pushed exactly once.
pub async fn run(args: PushArgs) -> Result<Verdict, LoadError> {
    if args.devices == 0 || args.senders == 0 || args.rate.is_nan() || args.rate <= 0.0 {
        return Err(LoadError::Args(
            "--devices, --senders and --rate must be positive".to_owned(),
        ));
    }
    let target = Arc::new(Target::open(&args.server, 3600).await?);
    let watch = Watch::start(args.server_pid)?;
    let run_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let outage = args.gateway_down_at.map(|at| gateway::Outage {
        at: Duration::from_secs_f64(at),
        lasting: Duration::from_secs_f64(args.gateway_down_for),
    });
    let (addr, mut received) = gateway::start(args.gateway_listen, args.format, outage).await?;
    eprintln!(
        "push: gateway ({:?}) on {addr}; registering {} devices via {}",
        args.format,
        args.devices,
        target.dialer.describe()
    );
    let prefix = Arc::new(args.prefix.clone());
    let token_of = |i: usize| format!("{}tok-{run_ms}-{i}", args.prefix);
    let tokens: Arc<HashMap<String, usize>> =
        Arc::new((0..args.devices).map(|i| (token_of(i), i)).collect());
    register_all(&target, &args, &token_of).await?;

    let tally = Arc::new(Mutex::new(Tally::default()));
    let reader = {
        let tally = tally.clone();
        let tokens = tokens.clone();
        tokio::spawn(async move {
            while let Some(push) = received.recv().await {
                let mut tally = tally.lock().await;
                let Some(&device) = tokens.get(&push.token) else {
                    tally.unknown += 1;
                    continue;
                };
                if !tally.ids.insert(push.id.clone()) {
                    tally.duplicates += 1;
                    continue;
                }
                tally.counted += push.count;
                let count = tally.pushes.entry(device).or_insert(0);
                *count += 1;
                if *count > 1 {
                    tally.duplicates += 1;
                }
                if let Some(first) = tally.pending.remove(&device) {
                    let micros = push.at.saturating_duration_since(first).as_micros();
                    tally
                        .latency
                        .record(u64::try_from(micros).unwrap_or(u64::MAX));
                }
            }
        })
    };

    eprintln!(
        "push: {} messages from {} senders at {} msgs/s",
        args.messages, args.senders, args.rate
    );
    let start = Instant::now();
    let cpu_start = match &watch {
        Some(watch) => Some(watch.read()?),
        None => None,
    };
    let mut senders = JoinSet::new();
    for s in 0..args.senders {
        senders.spawn(send(
            s,
            target.clone(),
            args.clone(),
            prefix.clone(),
            tally.clone(),
        ));
    }
    while let Some(joined) = senders.join_next().await {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(error),
            Err(error) => return Err(LoadError::Args(format!("a sender failed: {error}"))),
        }
    }
    let sent_in = start.elapsed();
    // Wait for the pushes: every messaged device pushed, then a little longer for late ones.
    let settle = Duration::from_secs_f64(args.settle_secs);
    let outage_left = outage.map_or(Duration::ZERO, |outage| outage.at + outage.lasting);
    let deadline = Instant::now() + settle * 10 + Duration::from_secs(10) + outage_left;
    loop {
        let all = {
            let tally = tally.lock().await;
            tally.messaged.iter().all(|d| tally.pushes.contains_key(d))
        };
        if all || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(settle).await;
    let wall = start.elapsed();
    let cpu_end = match &watch {
        Some(watch) => Some(watch.read()?),
        None => None,
    };
    reader.abort();

    let tally = tally.lock().await;
    let pushes: u64 = tally.pushes.values().sum();
    let missing = tally
        .messaged
        .iter()
        .filter(|d| !tally.pushes.contains_key(*d))
        .count();
    let summary = tally.latency.summary();
    let mut report = Report::new("push", "tern");
    report.connections = Some(args.devices as u64);
    report.duration_s = Some(round3(wall.as_secs_f64()));
    report.sent = Some(args.messages);
    report.acked = Some(tally.acked);
    report.duplicates = Some(tally.duplicates);
    report.msgs_per_sec = Some(round1(tally.acked as f64 / sent_in.as_secs_f64().max(1e-3)));
    report.set_latency(&summary);
    if let (Some(before), Some(after)) = (cpu_start, cpu_end) {
        let cpu_us = after.cpu_us.saturating_sub(before.cpu_us);
        report.put("server_cpu_s", round3(cpu_us as f64 / 1e6));
    }
    report.put("pushes", pushes);
    report.put(
        "pushes_per_message",
        round3(pushes as f64 / tally.acked.max(1) as f64),
    );
    report.put("messages_counted_in_pushes", tally.counted);
    report.put("devices_messaged", tally.messaged.len());
    report.put("devices_never_pushed", missing);
    report.put("refused_sends", tally.refused);
    report.put("unknown_tokens", tally.unknown);
    report.put(
        "latency_is",
        "first message sent -> push request at the gateway",
    );
    report.print(true);
    Ok(
        if tally.duplicates == 0 && missing == 0 && tally.unknown == 0 {
            Verdict::Pass
        } else {
            Verdict::Fail
        },
    )
}

/// Logs every device in, registers its token, and logs it out.
async fn register_all(
    target: &Arc<Target>,
    args: &PushArgs,
    token_of: &impl Fn(usize) -> String,
) -> Result<(), LoadError> {
    let gate = Arc::new(Semaphore::new(REGISTERING));
    let mut tasks = JoinSet::new();
    for i in 0..args.devices {
        let target = target.clone();
        let gate = gate.clone();
        let user = format!("{}r{i}", args.prefix);
        let push_token = token_of(i);
        tasks.spawn(async move {
            let _permit = gate.acquire().await;
            let token = target.token(&user, DEVICE)?;
            let (client, _) = target.dialer.login(i, &user, &token, 0).await?;
            let (mut reader, mut writer) = client.split();
            let op = Op::Register(PushRegister {
                platform: PushPlatform::Apns.into(),
                token: push_token,
                app_id: "com.example.load".to_owned(),
                preview: false,
            });
            writer.push_request(1, op).await?;
            let answer = tokio::time::timeout(REGISTER_TIMEOUT, async {
                loop {
                    match reader.recv().await? {
                        Some(ServerFrame {
                            frame: Some(Frame::PushResponse(response)),
                        }) => return Ok(response),
                        Some(_) => {}
                        None => return Err(tern::client::ClientError::Closed),
                    }
                }
            })
            .await
            .map_err(|_| LoadError::Args(format!("{user}: no answer to its registration")))??;
            if answer.error() != ErrorCode::Unspecified {
                return Err(LoadError::Args(format!(
                    "{user}: registration refused: {:?} {}",
                    answer.error(),
                    answer.message
                )));
            }
            Ok::<(), LoadError>(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(result) => result?,
            Err(error) => return Err(LoadError::Args(format!("a registration failed: {error}"))),
        }
    }
    Ok(())
}

/// Sender `s`: its share of the messages at its share of the rate; waits for every ack.
async fn send(
    s: usize,
    target: Arc<Target>,
    args: PushArgs,
    prefix: Arc<String>,
    tally: Arc<Mutex<Tally>>,
) -> Result<(), LoadError> {
    let user = format!("{prefix}s{s}");
    let token = target.token(&user, DEVICE)?;
    let (client, _) = target
        .dialer
        .login(args.devices + s, &user, &token, 0)
        .await?;
    let (mut reader, mut writer) = client.split();
    let mine: Vec<u64> = (s as u64..args.messages).step_by(args.senders).collect();
    let expected = mine.len() as u64;
    let acks = {
        let tally = tally.clone();
        tokio::spawn(async move {
            let mut acked = 0;
            while acked < expected {
                match reader.recv().await {
                    Ok(Some(ServerFrame {
                        frame: Some(Frame::ServerAck(_)),
                    })) => {
                        acked += 1;
                        tally.lock().await.acked += 1;
                    }
                    Ok(Some(ServerFrame {
                        frame: Some(Frame::Error(_)),
                    })) => {
                        acked += 1;
                        tally.lock().await.refused += 1;
                    }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
        })
    };
    let interval = Duration::from_secs_f64(args.senders as f64 / args.rate);
    let mut ticker = tokio::time::interval(interval);
    for k in mine {
        ticker.tick().await;
        let device = usize::try_from(k % args.devices as u64).unwrap_or(0);
        let to = format!("{prefix}r{device}");
        {
            let mut tally = tally.lock().await;
            tally.messaged.insert(device);
            tally.pending.entry(device).or_insert_with(Instant::now);
        }
        writer
            .send(text_frame(&format!("p{k}"), &to, b"wake up"))
            .await?;
    }
    let _ = acks.await;
    Ok(())
}
