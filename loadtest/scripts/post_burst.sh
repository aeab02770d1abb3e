#!/usr/bin/env bash
# Latency at a phone's pace right after a burst, as in docs/benchmarks.md: on a fresh node
# (loadtest/bench.toml, ports 7500-7502), `tern-load chat` at the maximum rate for BURST seconds,
# then at once at RATE msgs/s for SECONDS; two server binaries in turn, ROUNDS times each.
# Usage: loadtest/scripts/post_burst.sh OLD_TERN NEW_TERN ROUNDS [RATE] [SECONDS] [BURST]
#   (defaults: 10000 msgs/s for 20 s after a 10 s burst; 200 phones)
# Prints one line per run: the binary, the paced run's msgs/s, p50 / p99 (ms) and server CPU per
# message (µs); from the node's histograms over the paced run, acks the node sent more than 2.5
# and 10 ms after the message arrived and journal fsyncs over 5 and 50 ms; and the write-back
# steps after the first over both runs (tern_mailbox_writeback_steps_total; "-" for builds
# without it).
# CONFIG=PATH serves another configuration than loadtest/bench.toml (same ports); CLEAN="DIRS"
# are removed before each run (store paths outside the data directory).
set -euo pipefail
cd "$(dirname "$0")/../.."
old=$1 new=$2 rounds=$3 rate=${4:-10000} seconds=${5:-20} burst=${6:-10}
config=${CONFIG:-loadtest/bench.toml}
data=$(mktemp -d)
trap 'rm -rf "$data"' EXIT
chat() {
    target/release/tern-load chat --server 127.0.0.1:7500 --config loadtest/bench.toml \
        --connections 200 --json --server-pid "$1" "${@:2}" 2> /dev/null | tail -1
}
run() {
    local bin=$1
    rm -rf "$data/node" ${CLEAN:-}
    MIMALLOC_PURGE_DELAY=0 "$bin" serve --config "$config" --data-dir "$data/node" \
        > "$data/server.log" 2>&1 &
    local pid=$!
    for _ in $(seq 100); do grep -q "tern ready" "$data/server.log" && break; sleep 0.2; done
    chat "$pid" --duration "$burst" > /dev/null
    curl -s http://127.0.0.1:7501/metrics > "$data/before.txt"
    chat "$pid" --rate "$rate" --duration "$seconds" > "$data/paced.json"
    curl -s http://127.0.0.1:7501/metrics > "$data/metrics.txt"
    kill -9 "$pid"
    wait "$pid" 2> /dev/null || true
    python3 - "$bin" "$data/paced.json" "$data/before.txt" "$data/metrics.txt" << 'PY'
import json, re, sys
r = json.load(open(sys.argv[2]))
before, after = open(sys.argv[3]).read(), open(sys.argv[4]).read()
def value(metrics, pattern):
    found = re.findall(r'^' + pattern + r' ([0-9.e+]+)$', metrics, re.M)
    return sum(map(float, found)) if found else None
def paced(pattern):
    return (value(after, pattern) or 0) - (value(before, pattern) or 0)
def over(name, le):
    return int(paced(name + r'_count(?:\{[^}]*\})?')
               - paced(name + r'_bucket\{[^}]*le="' + le + r'"[^}]*\}'))
steps = value(after, r'tern_mailbox_writeback_steps_total')
print(sys.argv[1], round(r['msgs_per_sec']), r['p50_ms'], r['p99_ms'], r['server_cpu_us_per_msg'],
      'acks>2.5ms', over('tern_ack_latency_seconds', '0.0025'),
      'acks>10ms', over('tern_ack_latency_seconds', '0.01'),
      'fsyncs>5ms', over('tern_journal_fsync_seconds', '0.005'),
      'fsyncs>50ms', over('tern_journal_fsync_seconds', '0.05'),
      'steps', '-' if steps is None else int(steps))
PY
}
for _ in $(seq 1 "$rounds"); do
    run "$old"
    run "$new"
done
