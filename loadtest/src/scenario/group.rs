//! `tern-load group`: one member posts to a group of `--members` users, `--online` of whom are
//! logged in; measures the time from each post to its delivery at the first and at the last
//! online member, and fan-out deliveries per second.
//!
//! Setup: the online members log in, the poster creates the group (adding members in batches
//! that fit a frame), and everyone drains the membership events. Then the poster sends
//! `--messages` posts one after another, each once the previous one reached every online
//! member, so each latency is that of one fan-out on an otherwise idle server. Members ack
//! what they receive. Each post's number leads its body, so a member credits a late arrival to
//! the post it belongs to; a post waits at most 30 s for every online member, and whatever has
//! not arrived by the end of the run is lost: lost is always expected (posts × online members)
//! minus delivered (first arrivals of a post at a member).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tern::client::{ClientReader, ClientWriter};
use tern::proto::v1::{
    CreateGroup, GroupMembers, GroupSend, MessageKind, client_frame, deliver, group_request::Op,
    group_response, server_frame::Frame,
};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;

use super::Verdict;
use crate::error::LoadError;
use crate::latency::Latency;
use crate::procfs::Watch;
use crate::report::{Report, round1};
use crate::target::{ServerArgs, Target};

/// Member ids per create or add request (well under the frame limit).
const MEMBERS_PER_REQUEST: usize = 1000;
/// Logins in flight at once during setup.
const LOGIN_CONCURRENCY: usize = 256;
/// Longest wait for one post to reach every online member.
const POST_TIMEOUT: Duration = Duration::from_secs(30);

/// Arguments of `tern-load group`.
#[derive(Debug, Clone, clap::Args)]
pub struct GroupArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Members of the group, the poster included (the server's groups.max_members must allow
    /// it).
    #[arg(long, default_value_t = 100)]
    members: usize,
    /// Members logged in while the posts go out (the poster not counted).
    #[arg(long, default_value_t = 100)]
    online: usize,
    /// Posts, one after another.
    #[arg(long, default_value_t = 20)]
    messages: u64,
    /// Body bytes per post.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Prefix of the user names (`<prefix>poster`, `<prefix>m<i>`).
    #[arg(long, default_value = "grp-")]
    user_prefix: String,
    /// Print the figures as one JSON object (the last line on stdout).
    #[arg(long)]
    json: bool,
    /// The server's process id: its memory and CPU time are read from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
}

/// What the online members saw of the posts.
struct Arrivals {
    /// Online members.
    online: u64,
    /// Per post (by number), who received it and when.
    posts: Vec<PostArrivals>,
    /// Deliveries of a post a member had already received.
    duplicates: AtomicU64,
    /// Woken whenever a post reaches its last online member.
    completed: Notify,
    /// Per online member, the highest group_seq of a membership event it received.
    events_seen: Vec<AtomicU64>,
}

/// One post's arrivals.
struct PostArrivals {
    /// Online members that received it (each counted once).
    count: AtomicU64,
    /// Microseconds from the run's start of the first and the last arrival.
    first_us: AtomicU64,
    last_us: AtomicU64,
}

impl Arrivals {
    fn new(online: usize, posts: u64) -> Self {
        Self {
            online: online as u64,
            posts: (0..posts)
                .map(|_| PostArrivals {
                    count: AtomicU64::new(0),
                    first_us: AtomicU64::new(u64::MAX),
                    last_us: AtomicU64::new(0),
                })
                .collect(),
            duplicates: AtomicU64::new(0),
            completed: Notify::new(),
            events_seen: (0..online).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// A member received post `post` for the first time, `now_us` after the start.
    fn arrived(&self, post: usize, now_us: u64) {
        let Some(arrivals) = self.posts.get(post) else {
            return;
        };
        arrivals.first_us.fetch_min(now_us, Ordering::AcqRel);
        arrivals.last_us.fetch_max(now_us, Ordering::AcqRel);
        if arrivals.count.fetch_add(1, Ordering::AcqRel) + 1 == self.online {
            self.completed.notify_waiters();
        }
    }

    /// Waits until post `post` reached every online member; false when `limit` passed first.
    async fn wait_all(&self, post: usize, limit: Duration) -> bool {
        let Some(arrivals) = self.posts.get(post) else {
            return false;
        };
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            // Registered before the check, so a completion between the two is not missed.
            let completed = self.completed.notified();
            tokio::pin!(completed);
            completed.as_mut().enable();
            if arrivals.count.load(Ordering::Acquire) >= self.online {
                return true;
            }
            if tokio::time::timeout_at(deadline, completed).await.is_err() {
                return false;
            }
        }
    }

    /// (expected, delivered, lost) so far: lost is expected minus delivered by construction.
    fn tally(&self) -> (u64, u64, u64) {
        let expected = self.online * self.posts.len() as u64;
        let delivered: u64 = self
            .posts
            .iter()
            .map(|post| post.count.load(Ordering::Acquire))
            .sum();
        (expected, delivered, expected.saturating_sub(delivered))
    }
}

/// The body of post `n`: its number, a space, then padding up to `size` bytes.
fn post_body(n: u64, size: usize) -> Bytes {
    let mut body = format!("{n} ").into_bytes();
    body.resize(body.len().max(size), b'x');
    Bytes::from(body)
}

/// The post number a body starts with.
fn post_number(body: &[u8]) -> Option<usize> {
    let end = body.iter().position(|&byte| byte == b' ')?;
    std::str::from_utf8(&body[..end]).ok()?.parse().ok()
}

/// Runs the scenario.
pub async fn run(args: GroupArgs) -> Result<Verdict, LoadError> {
    if args.members < 2 || args.online >= args.members || args.messages == 0 {
        return Err(LoadError::Args(
            "need --members >= 2, --online < --members and --messages >= 1".into(),
        ));
    }
    let target = Arc::new(Target::open(&args.server, 3600).await?);
    let dialer = Arc::new(target.dialer.clone());
    let prefix = &args.user_prefix;
    let run_id = crate::body::new_run_id();
    let member = |i: usize| format!("{prefix}{run_id}-m{i}");
    let members: Vec<String> = (0..args.members - 1).map(member).collect();

    let started = Instant::now();
    let arrivals = Arc::new(Arrivals::new(args.online, args.messages));
    // The online members: logged in, then reading until the end.
    let mut readers = JoinSet::new();
    let logins = Arc::new(Semaphore::new(LOGIN_CONCURRENCY));
    let mut pending_logins = JoinSet::new();
    for (index, user) in members.iter().take(args.online).enumerate() {
        let (target, dialer, logins, user) =
            (target.clone(), dialer.clone(), logins.clone(), user.clone());
        pending_logins.spawn(async move {
            let _permit = logins.acquire_owned().await;
            let token = target.token(&user, "d")?;
            let (client, _) = dialer.login(index + 1, &user, &token, 0).await?;
            Ok::<_, LoadError>(client)
        });
    }
    let mut online = Vec::with_capacity(args.online);
    while let Some(joined) = pending_logins.join_next().await {
        match joined {
            Ok(Ok(client)) => online.push(client),
            Ok(Err(error)) => return Err(error),
            Err(error) => return Err(LoadError::Parts(error.to_string())),
        }
    }
    for (index, client) in online.into_iter().enumerate() {
        let (reader, writer) = client.split();
        let (arrivals, started) = (arrivals.clone(), started);
        readers.spawn(read_member(index, reader, writer, arrivals, started));
    }
    eprintln!("group: {} members online", args.online);

    // The poster creates the group.
    let poster = format!("{prefix}{run_id}-poster");
    let token = target.token(&poster, "d")?;
    let (client, _) = dialer.login(0, &poster, &token, 0).await?;
    let (mut reader, mut writer) = client.split();
    let (group, setup_last) = create_group(&mut reader, &mut writer, &members).await?;
    eprintln!("group: {group} created with {} members", args.members);
    // The membership events reach everyone before anything is measured.
    let setup = Instant::now();
    while arrivals
        .events_seen
        .iter()
        .any(|seen| seen.load(Ordering::Acquire) < setup_last)
    {
        if setup.elapsed() > POST_TIMEOUT {
            return Err(LoadError::Args(
                "the membership events never reached everyone".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "group: membership events delivered in {:.1} s",
        setup.elapsed().as_secs_f64()
    );

    let watch = Watch::start(args.server_pid)?;
    let mut to_last = Latency::new();
    let mut to_first = Latency::new();
    let measured = Instant::now();
    for n in 0..args.messages {
        let sent_us = started.elapsed().as_micros() as u64;
        writer.queue(client_frame::Frame::GroupSend(GroupSend {
            client_msg_id: format!("p{n}"),
            group_id: group.clone(),
            kind: MessageKind::Text.into(),
            body: post_body(n, args.size),
        }));
        writer.flush().await?;
        wait_ack(&mut reader).await?;
        let post = n as usize;
        if arrivals.wait_all(post, POST_TIMEOUT).await {
            // Latencies only of posts that reached everyone: a partial one has no last arrival.
            let first = arrivals.posts[post].first_us.load(Ordering::Acquire);
            let last = arrivals.posts[post].last_us.load(Ordering::Acquire);
            to_first.record(first.saturating_sub(sent_us));
            to_last.record(last.saturating_sub(sent_us));
        }
    }
    let elapsed = measured.elapsed().as_secs_f64();
    let watched = watch.map(|w| w.read()).transpose()?;
    readers.abort_all();

    let (expected, delivered, lost) = arrivals.tally();
    let mut report = Report::new("group", "tern");
    report.connections = Some(args.online as u64 + 1);
    report.duration_s = Some(round1(elapsed));
    report.sent = Some(args.messages);
    report.acked = Some(args.messages);
    report.delivered = Some(delivered);
    report.lost = Some(lost);
    report.put("expected", expected);
    report.duplicates = Some(arrivals.duplicates.load(Ordering::Acquire));
    report.msgs_per_sec = Some(round1(delivered as f64 / elapsed.max(1e-3)));
    report.set_latency(&to_last.summary());
    if let Some(watched) = watched {
        report.set_watched(&watched, delivered);
    }
    let first = to_first.summary();
    report.put("members", args.members);
    report.put("online", args.online);
    report.put("first_member_p50_ms", first.p50_ms);
    report.put("first_member_p99_ms", first.p99_ms);
    report.put(
        "latency_measures",
        "post sent to its delivery at the last online member",
    );
    report.print(args.json);
    Ok(if lost == 0 {
        Verdict::Pass
    } else {
        Verdict::Fail
    })
}

/// Creates the group with `members` (in batches); returns its id and the group_seq of the last
/// membership event.
async fn create_group(
    reader: &mut ClientReader,
    writer: &mut ClientWriter,
    members: &[String],
) -> Result<(String, u64), LoadError> {
    let mut batches = members.chunks(MEMBERS_PER_REQUEST);
    let first = batches.next().unwrap_or_default().to_vec();
    let response = request(
        reader,
        writer,
        1,
        Op::Create(CreateGroup {
            subject: "load".into(),
            members: first,
        }),
    )
    .await?;
    let Some(group_response::Result::Info(info)) = response else {
        return Err(LoadError::Args(
            "the server did not answer the create".into(),
        ));
    };
    let mut last_seq = 1;
    for (n, batch) in batches.enumerate() {
        request(
            reader,
            writer,
            n as u64 + 2,
            Op::Add(GroupMembers {
                group_id: info.group_id.clone(),
                users: batch.to_vec(),
            }),
        )
        .await?;
        last_seq += 1;
    }
    Ok((info.group_id, last_seq))
}

/// Sends a group request and waits for its answer (an error answer ends the run).
async fn request(
    reader: &mut ClientReader,
    writer: &mut ClientWriter,
    request_id: u64,
    op: Op,
) -> Result<Option<group_response::Result>, LoadError> {
    writer.group_request(request_id, op).await?;
    loop {
        match reader.recv_frame().await? {
            Frame::GroupResponse(r) if r.request_id == request_id => {
                if r.error != 0 {
                    return Err(LoadError::Args(format!(
                        "group request refused: {} (raise groups.max_members?)",
                        r.message
                    )));
                }
                return Ok(r.result);
            }
            Frame::Deliver(d) => writer.ack(d.seq).await?,
            _ => {}
        }
    }
}

/// Waits for the poster's ServerAck.
async fn wait_ack(reader: &mut ClientReader) -> Result<(), LoadError> {
    loop {
        match reader.recv_frame().await? {
            Frame::ServerAck(_) => return Ok(()),
            Frame::Error(e) => {
                return Err(LoadError::Args(format!("post refused: {}", e.message)));
            }
            _ => {}
        }
    }
}

/// One online member: acks everything and notes when the awaited post arrives.
async fn read_member(
    index: usize,
    mut reader: ClientReader,
    mut writer: ClientWriter,
    arrivals: Arc<Arrivals>,
    started: Instant,
) -> Result<(), LoadError> {
    let mut last_group_seq = 0;
    let total = arrivals.as_ref();
    loop {
        let Frame::Deliver(d) = reader.recv_frame().await? else {
            continue;
        };
        writer.ack(d.seq).await?;
        let m = match d.payload {
            Some(deliver::Payload::GroupMessage(m)) => m,
            Some(deliver::Payload::GroupEvent(e)) => {
                total.events_seen[index].fetch_max(e.group_seq, Ordering::AcqRel);
                continue;
            }
            _ => continue,
        };
        if m.group_seq <= last_group_seq {
            total.duplicates.fetch_add(1, Ordering::AcqRel);
            continue;
        }
        last_group_seq = m.group_seq;
        if let Some(post) = post_number(&m.body) {
            total.arrived(post, started.elapsed().as_micros() as u64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_post_body_carries_its_number() {
        assert_eq!(post_number(&post_body(17, 100)), Some(17));
        assert_eq!(post_body(17, 100).len(), 100);
        assert_eq!(post_number(&post_body(12345, 1)), Some(12345));
        assert_eq!(post_number(b"xxxx"), None);
    }

    /// A post that reached everyone before its wait began must not let the next post's wait
    /// succeed early, and arrivals after a post's wait gave up still count for that post: lost
    /// is expected minus delivered whatever the order.
    #[tokio::test]
    async fn lost_is_expected_minus_delivered_whatever_the_order() {
        let arrivals = Arrivals::new(10, 3);
        for _ in 0..10 {
            arrivals.arrived(0, 1);
        }
        assert!(arrivals.wait_all(0, Duration::from_secs(5)).await);
        for _ in 0..8 {
            arrivals.arrived(1, 2);
        }
        assert!(
            !arrivals.wait_all(1, Duration::from_millis(50)).await,
            "post 1 reached 8 of 10 members"
        );
        // Post 1's last two arrive late, while post 2 is awaited; post 2 reaches half.
        arrivals.arrived(1, 3);
        arrivals.arrived(1, 3);
        for _ in 0..5 {
            arrivals.arrived(2, 4);
        }
        assert!(!arrivals.wait_all(2, Duration::from_millis(50)).await);
        assert_eq!(arrivals.posts[1].count.load(Ordering::Acquire), 10);
        assert_eq!(arrivals.tally(), (30, 25, 5));
    }
}
