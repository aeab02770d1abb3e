#!/usr/bin/env bash
# Offline sends, kill -9, recovery and drain of a backlog, as in docs/benchmarks.md.
# Usage: loadtest/scripts/offline_recovery.sh CONFIG [MESSAGES] [USERS]
# CONFIG is a node config whose client and admin ports and data_dir are free to use (for
# example loadtest/bench.toml with its own data_dir). Prints the tool's JSON lines and the
# metrics that matter after the sends and after the restart.
set -euo pipefail
cd "$(dirname "$0")/../.."
config=$1
messages=${2:-1000000}
users=${3:-200}
bin=target/release
out=$(mktemp -d)
port=$(sed -n 's/^client_addr = "127.0.0.1:\([0-9]*\)"/\1/p' "$config")
admin=$(sed -n 's/^admin_addr = "127.0.0.1:\([0-9]*\)"/\1/p' "$config")

start() {
    MIMALLOC_PURGE_DELAY=0 "$bin/tern" serve --config "$config" > "$out/$1.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 100); do grep -q "tern ready" "$out/$1.log" && return; sleep 0.2; done
    echo "the node did not start; see $out/$1.log" >&2
    exit 1
}

start first
"$bin/tern-load" offline-send --server "127.0.0.1:$port" --config "$config" --users "$users" \
    --messages "$messages" --record "$out/record.txt" --server-pid "$pid" | tail -1
sleep 30
curl -s "127.0.0.1:$admin/metrics" | grep -E "^tern_mailbox_(cache_bytes|entries|written_back|evict)"
kill -9 "$pid"
sleep 1
start second
curl -s "127.0.0.1:$admin/metrics" | grep -E "^tern_recovery|^tern_mailbox_(cache_bytes|entries) "
grep VmRSS "/proc/$pid/status"
"$bin/tern-load" offline-drain --server "127.0.0.1:$port" --config "$config" \
    --record "$out/record.txt" --json --server-pid "$pid" | tail -1
curl -s "127.0.0.1:$admin/metrics" | grep -E "^tern_mailbox_read_entries"
kill -9 "$pid"
