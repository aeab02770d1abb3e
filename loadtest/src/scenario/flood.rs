//! `tern-load flood`: one hostile device floods the server with one frame kind for a while, as
//! fast as the socket takes it, and logs in again at once whenever it is cut (the server refuses
//! those logins until the GoAway's delay passed). `half-sent` instead holds many connections that
//! each announce a frame near the limit, send a few bytes of it, then one byte a second.
//!
//! Reports the frames written, the cuts (connections the server closed) and what the server
//! answered, by case (`Error` and `GoAway` with their code). Compiled, so that the flooder's own
//! footprint on a machine it shares with the server stays small (see
//! `loadtest/scripts/flood.py`, which runs it beside a chatting pair).

mod frames;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use tern::client::CLIENT_MAX_FRAME;
use tern::frame;
use tern::proto::PROTOCOL_VERSION;
use tern::proto::v1::{
    ClientFrame, ErrorCode, GoAwayReason, Login, ServerFrame, client_frame, server_frame,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio::task::JoinSet;

pub use self::frames::Kind;
use super::Verdict;
use crate::error::LoadError;
use crate::report::Report;
use crate::target::{ServerArgs, Target};

/// How long a flooder waits, once it stopped writing, for the server to close the connection
/// (counted as a cut when it does).
const CUT_WAIT: Duration = Duration::from_secs(3);
/// Pause before reconnecting; only keeps the loop from spinning when connecting fails fast.
const RECONNECT_PAUSE: Duration = Duration::from_millis(10);
/// Pause after a failed connect.
const CONNECT_RETRY: Duration = Duration::from_millis(50);
/// Bytes a half-sent frame announces below the frame limit.
const HALF_SENT_SHORTFALL: u32 = 16;

/// Arguments of `tern-load flood`.
#[derive(Debug, Clone, clap::Args)]
pub struct FloodArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// The frame kind to flood with.
    #[arg(long, value_enum)]
    kind: Kind,
    /// Seconds of flooding.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Connections held at once (half-sent only; the other kinds use one).
    #[arg(long, default_value_t = 100)]
    connections: usize,
    /// Prefix of the flooding users' names (`<prefix><kind>`, `<prefix><kind>-<i>`).
    #[arg(long, default_value = "flood-")]
    user_prefix: String,
    /// Print the figures as one JSON object (the last line on stdout).
    #[arg(long)]
    json: bool,
}

/// What the flood saw, shared by its connections.
#[derive(Default)]
struct Tally {
    sent: AtomicU64,
    cuts: AtomicU64,
    connects: AtomicU64,
    answers: Mutex<BTreeMap<String, u64>>,
}

impl Tally {
    fn answer(&self, label: String) {
        if let Ok(mut answers) = self.answers.lock() {
            *answers.entry(label).or_default() += 1;
        }
    }
}

/// Runs the flood; it fails only when it could not run.
pub async fn run(args: FloodArgs) -> Result<Verdict, LoadError> {
    if !(args.duration > 0.0 && args.duration.is_finite()) {
        return Err(LoadError::Args(
            "--duration must be a positive number of seconds".to_owned(),
        ));
    }
    if args.server.tls.tls {
        return Err(LoadError::Args(
            "flood writes raw frames on plain TCP; --tls is not supported".to_owned(),
        ));
    }
    let target = Target::open(&args.server, args.duration as u64 + 3600).await?;
    let tally = Arc::new(Tally::default());
    let deadline = Instant::now() + Duration::from_secs_f64(args.duration);
    let kind_name = clap::ValueEnum::to_possible_value(&args.kind).map_or_else(
        || format!("{:?}", args.kind),
        |value| value.get_name().to_owned(),
    );
    if args.kind == Kind::HalfSent {
        let limit = target.config.limits.max_frame_bytes;
        let mut tasks = JoinSet::new();
        for i in 0..args.connections.max(1) {
            let token = target.token(&format!("{}{kind_name}-{i}", args.user_prefix), "d")?;
            tasks.spawn(half_sent(
                target.dialer.server_for(i),
                token,
                limit,
                deadline,
                tally.clone(),
            ));
        }
        while tasks.join_next().await.is_some() {}
    } else {
        let token = target.token(&format!("{}{kind_name}", args.user_prefix), "d")?;
        flood(
            target.dialer.server_for(0),
            &token,
            args.kind,
            deadline,
            &tally,
        )
        .await;
    }
    let mut report = Report::new("flood", "tern");
    report.duration_s = Some(args.duration);
    report.put("kind", &kind_name);
    report.put("frames_sent", tally.sent.load(Ordering::Relaxed));
    report.put("connects", tally.connects.load(Ordering::Relaxed));
    report.put("cuts", tally.cuts.load(Ordering::Relaxed));
    let answers = tally
        .answers
        .lock()
        .map(|answers| answers.clone())
        .unwrap_or_default();
    report.put("answers", answers);
    report.print(args.json);
    Ok(Verdict::Pass)
}

/// The Login frame for `token`, length-prefixed.
fn login_frame(token: &str) -> BytesMut {
    let mut out = BytesMut::new();
    let login = client_frame::Frame::Login(Login {
        protocol_version: PROTOCOL_VERSION,
        token: token.to_owned(),
        resume_after: 0,
        user_agent: "tern-load-flood".to_owned(),
    });
    frame::encode(&ClientFrame { frame: Some(login) }, &mut out);
    out
}

/// Opens a connection (no delay on small writes); `None` after a pause when it fails.
async fn connect(addr: SocketAddr, tally: &Tally) -> Option<TcpStream> {
    match TcpStream::connect(addr).await {
        Ok(stream) => {
            let _ = stream.set_nodelay(true);
            tally.connects.fetch_add(1, Ordering::Relaxed);
            Some(stream)
        }
        Err(_) => {
            tokio::time::sleep(CONNECT_RETRY).await;
            None
        }
    }
}

/// One device writing `kind` as fast as the socket takes it, reconnecting when cut.
async fn flood(addr: SocketAddr, token: &str, kind: Kind, deadline: Instant, tally: &Arc<Tally>) {
    let login = login_frame(token);
    let mut n = 0u64;
    while Instant::now() < deadline {
        let Some(stream) = connect(addr, tally).await else {
            continue;
        };
        let (read, mut write) = stream.into_split();
        let mut listener = tokio::spawn(listen(read, tally.clone()));
        let writing = async {
            write.write_all(&login).await?;
            while Instant::now() < deadline {
                let (bytes, count) = frames::chunk(kind, n);
                n += 1;
                write.write_all(&bytes).await?;
                tally.sent.fetch_add(count, Ordering::Relaxed);
            }
            Ok::<(), std::io::Error>(())
        };
        let closed = tokio::select! {
            _ = writing => false,
            _ = &mut listener => true,
        };
        if Instant::now() < deadline
            && (closed || tokio::time::timeout(CUT_WAIT, &mut listener).await.is_ok())
        {
            tally.cuts.fetch_add(1, Ordering::Relaxed);
        }
        listener.abort();
        drop(write);
        tokio::time::sleep(RECONNECT_PAUSE).await;
    }
}

/// One connection that announces a frame of nearly `limit` bytes and sends it a byte a second;
/// opened again whenever the server cuts it.
async fn half_sent(
    addr: SocketAddr,
    token: String,
    limit: u32,
    deadline: Instant,
    tally: Arc<Tally>,
) {
    let mut opening = login_frame(&token);
    opening.put_u32(limit.saturating_sub(HALF_SENT_SHORTFALL));
    opening.put_slice(&[0x3a, 0x02, 0x08]);
    while Instant::now() < deadline {
        let Some(stream) = connect(addr, &tally).await else {
            continue;
        };
        let (read, mut write) = stream.into_split();
        let mut listener = tokio::spawn(listen(read, tally.clone()));
        if write.write_all(&opening).await.is_ok() {
            tally.sent.fetch_add(1, Ordering::Relaxed);
        }
        let dribble = async {
            while Instant::now() < deadline {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if write.write_all(&[0]).await.is_err() {
                    return;
                }
            }
        };
        let cut = tokio::select! {
            () = dribble => false,
            _ = &mut listener => true,
        };
        if cut && Instant::now() < deadline {
            tally.cuts.fetch_add(1, Ordering::Relaxed);
        }
        listener.abort();
    }
}

/// Reads what the server answers until it closes the connection, counting each frame.
async fn listen(mut read: OwnedReadHalf, tally: Arc<Tally>) {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        loop {
            match frame::split_frame(&mut buf, CLIENT_MAX_FRAME) {
                Ok(Some(payload)) => match frame::decode::<ServerFrame>(payload) {
                    Ok(server) => tally.answer(label(&server)),
                    Err(_) => tally.answer("undecodable".to_owned()),
                },
                Ok(None) => break,
                Err(_) => return,
            }
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(64 * 1024);
        }
        match read.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// A short name for one server frame: its case, with the code of an Error or GoAway.
fn label(server: &ServerFrame) -> String {
    use server_frame::Frame as F;
    let Some(frame) = &server.frame else {
        return "empty".to_owned();
    };
    let name = match frame {
        F::Welcome(_) => "Welcome",
        F::ServerAck(_) => "ServerAck",
        F::Deliver(_) => "Deliver",
        F::QueueDrained(_) => "QueueDrained",
        F::Typing(_) => "Typing",
        F::Presence(_) => "Presence",
        F::Pong(_) => "Pong",
        F::GroupResponse(_) => "GroupResponse",
        F::PushResponse(_) => "PushResponse",
        F::Error(error) => {
            let code = ErrorCode::try_from(error.code).map_or("?", |code| code.as_str_name());
            return format!("Error:{}", code.trim_start_matches("ERROR_CODE_"));
        }
        F::GoAway(go_away) => {
            let reason =
                GoAwayReason::try_from(go_away.reason).map_or("?", |reason| reason.as_str_name());
            return format!("GoAway:{}", reason.trim_start_matches("GO_AWAY_REASON_"));
        }
    };
    name.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern::proto::v1::{Error, GoAway, Pong};

    #[test]
    fn answers_are_named_by_case_and_code() {
        let error = ServerFrame {
            frame: Some(server_frame::Frame::Error(Error {
                code: ErrorCode::RateLimited as i32,
                ..Default::default()
            })),
        };
        assert_eq!(label(&error), "Error:RATE_LIMITED");
        let go_away = ServerFrame {
            frame: Some(server_frame::Frame::GoAway(GoAway {
                reason: GoAwayReason::Flood as i32,
                ..Default::default()
            })),
        };
        assert_eq!(label(&go_away), "GoAway:FLOOD");
        let pong = ServerFrame {
            frame: Some(server_frame::Frame::Pong(Pong::default())),
        };
        assert_eq!(label(&pong), "Pong");
    }
}
