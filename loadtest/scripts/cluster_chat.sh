#!/usr/bin/env bash
# tern-load chat against one node, then against a local three-node cluster with its phones
# spread over the three nodes (replication 1: each node owns a third of the users, so most
# messages cross the mesh twice: to the recipient's owner, then to the recipient's node), in
# one run. Prints tern-load's report for each and the server CPU per delivered message, summed
# over every server process from /proc (the three share this machine's cores: compare CPU per
# message, not msgs/s).
# Usage: loadtest/scripts/cluster_chat.sh [TERN-LOAD CHAT ARGS...]
#   default: --connections 300 --duration 30
# REPLICATION_FACTOR=3 runs the three nodes as one island with replicated slots (every message
# acked after a majority of the three has it on disk) instead.
# Besides CPU, each run prints fsyncs and mesh bytes (sent, summed over the nodes) per delivered
# message, from the nodes' /metrics before and after.
# SCENARIO=group runs `tern-load group` instead (a group whose members' mailboxes and phones are
# spread over the three nodes), e.g.
#   SCENARIO=group loadtest/scripts/cluster_chat.sh --members 1000 --online 999 --messages 20
set -euo pipefail
cd "$(dirname "$0")/../.."
tern=${TERN:-${CARGO_TARGET_DIR:-target}/release/tern}
load=${TERN_LOAD:-${CARGO_TARGET_DIR:-target}/release/tern-load}
scenario=${SCENARIO:-chat}
args=("$@")
((${#args[@]})) || args=(--connections 300 --duration 30)
work=$(mktemp -d)
export CLUSTER_DIR=$work/cluster

ticks() { # ticks PID...: user + system CPU clock ticks, summed
    local total=0 pid fields
    for pid in "$@"; do
        read -r -a fields < "/proc/$pid/stat"
        total=$((total + fields[13] + fields[14]))
    done
    echo "$total"
}

scrape() { # scrape ADMIN_PORT...: "fsyncs mesh_bytes_out", summed over the nodes
    local port fsyncs=0 bytes=0 f b
    for port in "$@"; do
        read -r f b < <(curl -s "http://127.0.0.1:$port/metrics" | awk '
            $1 == "tern_journal_fsync_seconds_count" { f += $2 }
            $1 ~ /^tern_mesh_bytes_total\{/ && $1 ~ /direction="out"/ { b += $2 }
            END { printf "%d %d\n", f, b }')
        fsyncs=$((fsyncs + f))
        bytes=$((bytes + b))
    done
    echo "$fsyncs $bytes"
}

report() { # report LABEL REPORT_JSON TICKS FSYNCS MESH_BYTES
    python3 - "$@" << 'PY'
import json, os, sys
label, line, ticks = sys.argv[1], sys.argv[2], int(sys.argv[3])
fsyncs, mesh = int(sys.argv[4]), int(sys.argv[5])
r = json.loads(line)
cpu_s = ticks / os.sysconf("SC_CLK_TCK")
per = cpu_s * 1e6 / r["delivered"] if r["delivered"] else float("nan")
counts = ", ".join(f"{key} {r[key]}" for key in ("sent", "acked", "expected", "delivered",
                                               "lost", "duplicates") if key in r)
delivered = r["delivered"] or 1
print(f"{label}: {r['msgs_per_sec']:.0f} msgs/s, p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, "
      f"{counts}; server CPU {cpu_s:.1f} s = {per:.1f} us per delivered message; "
      f"{fsyncs / delivered:.3f} fsyncs and {mesh / delivered:.0f} mesh bytes per delivered message")
PY
}

cleanup() {
    loadtest/scripts/cluster.sh down > /dev/null 2>&1 || true
    [[ -n ${single:-} ]] && kill -9 "$single" 2> /dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# One node, loadtest/bench.toml (ports 7500-7502).
MIMALLOC_PURGE_DELAY=0 "$tern" serve --config loadtest/bench.toml --data-dir "$work/single" \
    > "$work/single.log" 2>&1 &
single=$!
until grep -q "^tern ready" "$work/single.log" 2> /dev/null; do sleep 0.1; done
before=$(ticks "$single")
read -r fsyncs_before _ < <(scrape 7501)
line=$("$load" "$scenario" --server 127.0.0.1:7500 --config loadtest/bench.toml "${args[@]}" --json \
    2> /dev/null | tail -1)
read -r fsyncs_after _ < <(scrape 7501)
report "one node" "$line" $(($(ticks "$single") - before)) $((fsyncs_after - fsyncs_before)) 0
kill -9 "$single"
wait "$single" 2> /dev/null || true
single=

# Three nodes from the same file, replication 1 (or REPLICATION_FACTOR).
replication=${REPLICATION_FACTOR:-1}
BASE_CONFIG=loadtest/bench.toml REPLICATION_FACTOR=$replication TERN=$tern \
    loadtest/scripts/cluster.sh up 3 > /dev/null
until loadtest/scripts/cluster.sh status > /dev/null 2>&1; do sleep 0.5; done
pids=()
for i in 1 2 3; do pids+=("$(cat "$CLUSTER_DIR/node-$i/pid")"); done
if [[ $replication -gt 1 ]]; then
    # Every slot group led before the run (6 per island, 2 per node).
    led() {
        curl -s "http://127.0.0.1:$1/metrics" | awk '$1 == "tern_slot_groups_led" { print $2 }'
    }
    until [[ "$(led 7611)-$(led 7621)-$(led 7631)" == "2-2-2" ]]; do sleep 0.2; done
fi
servers=127.0.0.1:7610,127.0.0.1:7620,127.0.0.1:7630
before=$(ticks "${pids[@]}")
read -r fsyncs_before mesh_before < <(scrape 7611 7621 7631)
line=$("$load" "$scenario" --server "$servers" --config loadtest/bench.toml "${args[@]}" --json \
    2> /dev/null | tail -1)
read -r fsyncs_after mesh_after < <(scrape 7611 7621 7631)
report "three nodes (replication $replication)" "$line" $(($(ticks "${pids[@]}") - before)) \
    $((fsyncs_after - fsyncs_before)) $((mesh_after - mesh_before))
