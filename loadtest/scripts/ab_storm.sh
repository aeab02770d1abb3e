#!/usr/bin/env bash
# Storm logins against two server binaries in turn, ROUNDS times each, as in docs/benchmarks.md.
# Usage: loadtest/scripts/ab_storm.sh OLD_TERN NEW_TERN [ROUNDS]
# Prints one line per run: binary, logins/s, server CPU per login (µs).
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${3:-3}
data=$(mktemp -d)
run() {
    rm -rf "$data/node"
    MIMALLOC_PURGE_DELAY=0 "$1" serve --config loadtest/bench.toml --data-dir "$data/node" \
        > "$data/server.log" 2>&1 &
    local pid=$!
    sleep 2
    target/release/tern-load storm --server 127.0.0.1:7500 --config loadtest/bench.toml \
        --connections 256 --duration 10 --json --server-pid "$pid" 2>/dev/null | tail -1 |
        python3 -c "import json,sys; r=json.loads(sys.stdin.read()); print('$1', round(r['logins_per_sec']), round(r['server_cpu_pct']*1e4/r['logins_per_sec'],1))"
    kill -9 "$pid"
    wait "$pid" 2>/dev/null || true
}
for _ in $(seq 1 "$rounds"); do
    run "$1"
    run "$2"
done
