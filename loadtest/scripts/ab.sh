#!/usr/bin/env bash
# One tern-load scenario against two server binaries in turn, ROUNDS times each, every run on a
# fresh data directory (loadtest/bench.toml, ports 7500-7502), as in docs/benchmarks.md.
# Usage: loadtest/scripts/ab.sh OLD_TERN NEW_TERN ROUNDS SCENARIO [TERN-LOAD ARGS...]
#   e.g. loadtest/scripts/ab.sh /tmp/tern-old target/release/tern 3 chat --connections 200 --duration 10
# Prints one line per run: the binary, then the report's throughput, p50/p99 latency (ms), server
# CPU (%) and server CPU per message or per login (µs).
set -euo pipefail
cd "$(dirname "$0")/../.."
old=$1 new=$2 rounds=$3 scenario=$4
shift 4
data=$(mktemp -d)
run() {
    local bin=$1
    shift
    rm -rf "$data/node"
    MIMALLOC_PURGE_DELAY=0 "$bin" serve --config loadtest/bench.toml --data-dir "$data/node" \
        > "$data/server.log" 2>&1 &
    local pid=$!
    for _ in $(seq 100); do grep -q "tern ready" "$data/server.log" && break; sleep 0.2; done
    target/release/tern-load "$scenario" --server 127.0.0.1:7500 --config loadtest/bench.toml \
        "$@" --json --server-pid "$pid" 2> /dev/null | tail -1 | python3 -c "
import json, sys
r = json.loads(sys.stdin.read())
rate = r['msgs_per_sec'] or r['logins_per_sec']
per = r['server_cpu_us_per_msg'] or round(r['server_cpu_pct'] * 1e4 / rate, 1)
print('$bin', round(rate), r['p50_ms'], r['p99_ms'], r['server_cpu_pct'], per)"
    kill -9 "$pid"
    wait "$pid" 2> /dev/null || true
}
for _ in $(seq 1 "$rounds"); do
    run "$old" "$@"
    run "$new" "$@"
done
rm -rf "$data"
