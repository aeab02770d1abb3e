#!/usr/bin/env bash
# tern-load chat with the node killed (kill -9) in the middle and restarted on the same data
# directory: the phones reconnect, resume and resend what was not acked; the report must say
# lost 0, duplicates 0. loadtest/bench.toml, ports 7500-7502.
# Usage: loadtest/scripts/chat_kill.sh [SECONDS] [KILL_AFTER] [TERN-LOAD CHAT ARGS...]
#   e.g. loadtest/scripts/chat_kill.sh 20 8 --connections 200 --rate 20000
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-20} kill_after=${2:-8}
shift 2 || true
bin=target/release
data=$(mktemp -d)
start() {
    MIMALLOC_PURGE_DELAY=0 "$bin/tern" serve --config loadtest/bench.toml --data-dir "$data/node" \
        > "$data/$1.log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do grep -q "tern ready" "$data/$1.log" && return; sleep 0.1; done
    echo "the node did not start; see $data/$1.log" >&2
    exit 1
}
start first
"$bin/tern-load" chat --server 127.0.0.1:7500 --config loadtest/bench.toml --duration "$seconds" \
    "$@" --json > "$data/report.json" 2> "$data/load.log" &
load=$!
sleep "$kill_after"
kill -9 "$pid"
wait "$pid" 2> /dev/null || true
echo "killed the node after ${kill_after} s" >&2
start second
grep -o 'mailboxes recovered.*' "$data/second.log" | head -1 >&2 || true
wait "$load" || true
tail -1 "$data/report.json"
kill "$pid"
wait "$pid" 2> /dev/null || true
rm -rf "$data"
