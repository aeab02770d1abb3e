#!/usr/bin/env bash
# Flame graph of a node on the paced chat path, as in docs/benchmarks.md.
#
# Usage: loadtest/scripts/flamegraph.sh OUT.svg [RATE] [SECONDS] [TERN]
#   200 chat phones (100 pairs) at RATE msgs/s in total (default 10000) against a fresh node on
#   loadtest/bench.toml (ports 7500-7502); perf samples the node at 1999 Hz for SECONDS (default
#   5) from the middle of the run, on every thread, kernel included, and the SVG goes to OUT.
#   TERN is the node's binary (default: a release build with frame pointers, made into
#   target/frame-pointers, so that the stacks through tokio and tern are whole).
# FOLDED=PATH keeps the collapsed stacks (inferno's folded format) there too.
# Prints the run's report line (msgs/s, p50/p99, server CPU per message) and perf's count of
# context switches per delivered message over the same seconds.
#
# Installs perf (Debian's linux-perf) and inferno (cargo install) when missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:?usage: flamegraph.sh OUT.svg [RATE] [SECONDS] [TERN]}
rate=${2:-10000}
seconds=${3:-5}
command -v perf > /dev/null || apt-get install -y linux-perf > /dev/null
command -v inferno-flamegraph > /dev/null || cargo install --locked inferno
if [ -n "${4:-}" ]; then
    tern=$4
else
    RUSTFLAGS="-C force-frame-pointers=yes" cargo build --release -p tern \
        --target-dir target/frame-pointers
    tern=target/frame-pointers/release/tern
fi
cargo build --release -p tern-load
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
MIMALLOC_PURGE_DELAY=0 "$tern" serve --config loadtest/bench.toml --data-dir "$work/data" \
    > "$work/server.log" 2>&1 &
pid=$!
for _ in $(seq 100); do grep -q "tern ready" "$work/server.log" && break; sleep 0.2; done
target/release/tern-load chat --server 127.0.0.1:7500 --config loadtest/bench.toml \
    --connections 200 --rate "$rate" --duration $((seconds + 4)) --json --server-pid "$pid" \
    2> /dev/null > "$work/report.json" &
load=$!
sleep 2
perf record -F 1999 -g -p "$pid" -o "$work/perf.data" -- sleep "$seconds" 2> /dev/null
perf stat -e context-switches,cpu-migrations -p "$pid" -x, -o "$work/stat.txt" -- sleep 1
wait "$load"
kill -9 "$pid"
wait "$pid" 2> /dev/null || true
perf script -i "$work/perf.data" 2> /dev/null | inferno-collapse-perf > "$work/folded.txt"
inferno-flamegraph --title "tern, chat at $rate msgs/s (200 phones)" --width 1600 \
    < "$work/folded.txt" > "$out"
[ -z "${FOLDED:-}" ] || cp "$work/folded.txt" "$FOLDED"
python3 - "$work/report.json" "$work/stat.txt" << 'PY'
import json, sys
r = json.loads(open(sys.argv[1]).read().splitlines()[-1])
switches = 0
for line in open(sys.argv[2]):
    fields = line.split(',')
    if len(fields) > 2 and fields[2] == 'context-switches':
        switches = float(fields[0])
print(f"{r['msgs_per_sec']:.0f} msgs/s, p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, "
      f"server CPU {r['server_cpu_pct']} %, {r['server_cpu_us_per_msg']} us/msg, "
      f"{switches / max(r['msgs_per_sec'], 1):.2f} context switches per message")
PY
echo "flame graph: $out"
