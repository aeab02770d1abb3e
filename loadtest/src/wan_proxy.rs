//! `tern-load wan-proxy`: a TCP proxy that holds every byte for a one-way delay (plus jitter)
//! in each direction and can cap each direction's rate, to put a WAN between two network
//! namespaces on a machine without `tc netem`. Bytes keep their order: a chunk is never released
//! before the one read before it, whatever jitter each drew. Each direction of a connection
//! holds at most [`MAX_IN_FLIGHT`] chunks; a reader waits when they are all in flight, as a
//! link's window would.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::error::LoadError;
use crate::scenario::Verdict;

/// Chunks of one direction of one connection held at once.
const MAX_IN_FLIGHT: usize = 4096;
/// Largest read.
const CHUNK: usize = 64 * 1024;

/// What the proxy does.
#[derive(Debug, Clone, clap::Args)]
pub struct WanProxyArgs {
    /// Address to listen on.
    #[arg(long)]
    pub listen: SocketAddr,
    /// Address each accepted connection is forwarded to.
    #[arg(long)]
    pub upstream: SocketAddr,
    /// One-way delay added in each direction, in ms.
    #[arg(long, default_value_t = 40)]
    pub delay_ms: u64,
    /// Up to this many more ms of delay, drawn per chunk (the order of bytes is kept).
    #[arg(long, default_value_t = 0)]
    pub jitter_ms: u64,
    /// Bytes per second each direction of each connection may carry; 0 for no limit.
    #[arg(long, default_value_t = 0)]
    pub rate_bytes: u64,
}

/// Serves until the process is stopped.
pub async fn run(args: WanProxyArgs) -> Result<Verdict, LoadError> {
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|error| LoadError::Args(format!("cannot listen on {}: {error}", args.listen)))?;
    eprintln!(
        "wan-proxy: {} -> {}, {} ms + up to {} ms each way{}",
        args.listen,
        args.upstream,
        args.delay_ms,
        args.jitter_ms,
        if args.rate_bytes > 0 {
            format!(", {} bytes/s each way", args.rate_bytes)
        } else {
            String::new()
        }
    );
    serve(listener, args).await;
    Ok(Verdict::Pass)
}

/// Accepts connections on `listener` and proxies each one as `args` say.
pub async fn serve(listener: TcpListener, args: WanProxyArgs) {
    let mut seed = seed();
    loop {
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(error) => {
                // Out of descriptors, most likely: wait instead of spinning on the error.
                eprintln!("wan-proxy: accept: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let args = args.clone();
        tokio::spawn(async move {
            let Ok(upstream) = TcpStream::connect(args.upstream).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = upstream.set_nodelay(true);
            let (client_read, client_write) = client.into_split();
            let (upstream_read, upstream_write) = upstream.into_split();
            let there = tokio::spawn(direction(client_read, upstream_write, args.clone(), seed));
            let back = tokio::spawn(direction(upstream_read, client_write, args, !seed));
            let _ = tokio::join!(there, back);
        });
    }
}

/// One direction: reads chunks, stamps each with its release time, and writes them in order
/// when due, within the rate.
async fn direction(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, args: WanProxyArgs, seed: u64) {
    let (sender, mut due) = mpsc::channel::<(Instant, Bytes)>(MAX_IN_FLIGHT);
    let reader = tokio::spawn(async move {
        let mut draw = Draw(seed);
        let mut last = Instant::now();
        let mut buffer = vec![0u8; CHUNK];
        loop {
            let read = match from.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(read) => read,
            };
            let jitter = draw.below(args.jitter_ms + 1);
            let at = Instant::now() + Duration::from_millis(args.delay_ms + jitter);
            // Never before the chunk read before it.
            last = last.max(at);
            if sender
                .send((last, Bytes::copy_from_slice(&buffer[..read])))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let budget_from = Instant::now();
    let mut sent_since: u64 = 0;
    while let Some((at, chunk)) = due.recv().await {
        tokio::time::sleep_until(at).await;
        if args.rate_bytes > 0 {
            // The chunk goes out once the bytes sent so far fit the rate.
            sent_since += chunk.len() as u64;
            let earliest =
                budget_from + Duration::from_secs_f64(sent_since as f64 / args.rate_bytes as f64);
            tokio::time::sleep_until(earliest).await;
        }
        if to.write_all(&chunk).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
    reader.abort();
}

/// The seed of the jitter draws: from the clock (the proxy's draws need not repeat).
fn seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |since| since.as_nanos() as u64 | 1)
}

/// SplitMix64.
struct Draw(u64);

impl Draw {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % bound.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server; its address.
    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut read, mut write) = stream.into_split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        addr
    }

    async fn proxy(upstream: SocketAddr, delay_ms: u64, jitter_ms: u64) -> SocketAddr {
        proxy_at_rate(upstream, delay_ms, jitter_ms, 0).await
    }

    async fn proxy_at_rate(
        upstream: SocketAddr,
        delay_ms: u64,
        jitter_ms: u64,
        rate_bytes: u64,
    ) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let args = WanProxyArgs {
            listen: addr,
            upstream,
            delay_ms,
            jitter_ms,
            rate_bytes,
        };
        tokio::spawn(serve(listener, args));
        addr
    }

    #[tokio::test]
    async fn bytes_cross_both_ways_in_order_and_no_sooner_than_the_delay() {
        let addr = proxy(echo().await, 30, 20).await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let sent: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let start = std::time::Instant::now();
        let (mut read, mut write) = stream.split();
        let writer = async {
            for piece in sent.chunks(7_919) {
                write.write_all(piece).await.unwrap();
            }
        };
        let mut got = vec![0u8; sent.len()];
        let reader = read.read_exact(&mut got);
        let (_, read_result) = tokio::join!(writer, reader);
        read_result.unwrap();
        assert!(got == sent, "bytes changed or reordered on the way");
        // There and back: at least twice the one-way delay (a lower bound, never flaky).
        assert!(start.elapsed() >= Duration::from_millis(60));
    }

    #[tokio::test]
    async fn a_rate_cap_holds_bytes_back() {
        let addr = proxy_at_rate(echo().await, 0, 0, 100_000).await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let sent = vec![7u8; 50_000];
        let start = std::time::Instant::now();
        stream.write_all(&sent).await.unwrap();
        let mut got = vec![0u8; sent.len()];
        stream.read_exact(&mut got).await.unwrap();
        assert_eq!(got, sent);
        // 50,000 bytes at 100,000 bytes/s: half a second at least (a lower bound).
        assert!(
            start.elapsed() >= Duration::from_millis(450),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn draws_stay_below_their_bound() {
        let mut draw = Draw(7);
        assert!((0..1000).all(|_| draw.below(5) < 5));
        assert_eq!(draw.below(0), 0);
    }
}
