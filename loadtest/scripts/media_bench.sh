#!/usr/bin/env bash
# Download throughput of one popular media object, and the hot-cache hit ratio.
#
# Builds the release binary, starts a node (ports 7600-7602, data in a temporary directory),
# uploads one object with curl (tus creation-with-upload), runs wrk against GET /media/<id>,
# then prints wrk's figures and the hot-cache counters from /metrics. Installs wrk with apt when
# it is missing (needs root).
#
#   loadtest/scripts/media_bench.sh [SIZE_BYTES] [DURATION_SECS] [CONNECTIONS] [THREADS]
#
# Defaults: a 64 KiB object (a thumbnail-sized photo, inside the hot cache's 1 MiB limit),
# 10 s, 64 connections, 2 threads. Use a SIZE above media.hot_cache_max_object_bytes
# (1048576) to measure the streamed path.
set -euo pipefail
cd "$(dirname "$0")/../.."

size=${1:-65536}
duration=${2:-10}
connections=${3:-64}
threads=${4:-2}
target=${CARGO_TARGET_DIR:-target}
tern="$target/release/tern"

if ! command -v wrk >/dev/null; then
    echo "installing wrk with apt" >&2
    apt-get install -y -qq wrk >/dev/null
fi
cargo build --release -p tern >&2

work=$(mktemp -d)
node_pid=
cleanup() {
    if [ -n "$node_pid" ]; then
        kill "$node_pid" 2>/dev/null || true
        wait "$node_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

sed -e 's/127.0.0.1:7400/127.0.0.1:7600/' \
    -e 's/127.0.0.1:7401/127.0.0.1:7601/' \
    -e 's/127.0.0.1:7402/127.0.0.1:7602/' cluster.toml > "$work/node.toml"
MIMALLOC_PURGE_DELAY=0 "$tern" serve --config "$work/node.toml" --data-dir "$work/data" \
    > "$work/ready" 2> "$work/log" &
node_pid=$!
for _ in $(seq 100); do
    grep -q '^tern ready' "$work/ready" 2>/dev/null && break
    sleep 0.1
done
grep '^tern ready' "$work/ready" >&2

token=$("$tern" token --config "$work/node.toml" --user bench --device wrk)
head -c "$size" /dev/urandom > "$work/object"
location=$(curl -sS -o /dev/null -w '%header{location}' -X POST http://127.0.0.1:7602/media/ \
    -H "Tus-Resumable: 1.0.0" \
    -H "Authorization: Bearer $token" \
    -H "Upload-Length: $size" \
    -H "Upload-Metadata: filetype aW1hZ2UvanBlZw==" \
    -H "Content-Type: application/offset+octet-stream" \
    --data-binary @"$work/object")
url="http://127.0.0.1:7602$location"
curl -sS -o "$work/check" -H "Authorization: Bearer $token" "$url"
cmp -s "$work/object" "$work/check" || { echo "downloaded object differs" >&2; exit 1; }
echo "object: $size bytes at $url" >&2

wrk -t "$threads" -c "$connections" -d "${duration}s" --latency \
    -H "Authorization: Bearer $token" "$url"

metrics=$(curl -sS http://127.0.0.1:7601/metrics)
value() { echo "$metrics" | awk -v series="$1" '$1 == series { print $2 }'; }
hits=$(value 'tern_media_hot_cache_requests_total{result="hit"}')
misses=$(value 'tern_media_hot_cache_requests_total{result="miss"}')
echo
echo "hot cache: hits=${hits:-0} misses=${misses:-0} hit_ratio=$(value tern_media_hot_cache_hit_ratio)"
echo "bytes out: $(value tern_media_bytes_out_total)"
echo "server CPU (user+system ticks): $(awk '{ print $14 + $15 }' /proc/$node_pid/stat)"
