#!/usr/bin/env bash
# Offline messages across a local three-node cluster (replication 1) with one node SIGKILLed in
# the middle and restarted on its data directory: `tern-load offline-send` to users spread over
# the three nodes' slots, its phones spread over the three nodes; then `offline-drain` from the
# same record, which must say lost 0 and out_of_order 0 (sends to the dead node's users are
# refused while it is down, never acked).
# Usage: loadtest/scripts/cluster_offline_kill.sh [KILL_AFTER_S] [DOWN_FOR_S] [OFFLINE-SEND ARGS...]
#   default: 3 3 --users 300 --messages 300000
set -euo pipefail
cd "$(dirname "$0")/../.."
kill_after=${1:-3} down_for=${2:-3}
shift 2 || true
args=("$@")
((${#args[@]})) || args=(--users 300 --messages 300000)
load=${TERN_LOAD:-${CARGO_TARGET_DIR:-target}/release/tern-load}
work=$(mktemp -d)
export CLUSTER_DIR=$work/cluster
trap 'loadtest/scripts/cluster.sh down > /dev/null 2>&1 || true; rm -rf "$work"' EXIT
servers=127.0.0.1:7610,127.0.0.1:7620,127.0.0.1:7630

BASE_CONFIG=loadtest/bench.toml REPLICATION_FACTOR=1 loadtest/scripts/cluster.sh up 3 > /dev/null
until loadtest/scripts/cluster.sh status > /dev/null 2>&1; do sleep 0.5; done
"$load" offline-send --server "$servers" --config loadtest/bench.toml --record "$work/record" \
    "${args[@]}" > "$work/send.json" 2> "$work/send.log" &
sender=$!
sleep "$kill_after"
loadtest/scripts/cluster.sh kill 2 > /dev/null
echo "node 2 killed after ${kill_after} s" >&2
sleep "$down_for"
loadtest/scripts/cluster.sh start 2 > /dev/null
echo "node 2 restarted after ${down_for} s down" >&2
wait "$sender" || true
echo "send:  $(tail -1 "$work/send.json")"
"$load" offline-drain --server "$servers" --config loadtest/bench.toml --record "$work/record" \
    --json > "$work/drain.json" 2> "$work/drain.log" || true
echo "drain: $(tail -1 "$work/drain.json")"
