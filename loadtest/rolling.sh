#!/usr/bin/env bash
# A rolling restart under load: a local three-node cluster with replication 3
# (loadtest/scripts/cluster.sh, loadtest/bench.toml) and `tern-load chat` with its phones spread
# over the three nodes running throughout; each node in turn is drained (`tern drain`: its
# leaderships handed over, its phones sent to the others with reconnect delays spread over
# limits.reconnect_window_ms, checkpoint, exit 0), restarted, and waited for until it is ready
# (GET /readyz 200) and leads its share of the slot groups again. With KILL=I node I is killed
# with kill -9 instead of drained, for contrast.
#
# Prints one JSON line: tern-load's figures (lost, duplicates after its dedup, p50/p99, the
# longest wait of a message for its ack, the phones' reconnect times from GoAway to the next
# login: p50, p99, max) and per node: how it went down (drain or kill), the drain's exit code
# and duration, the hand-over time and who took the metadata leadership (from the node's log),
# the peak logins per second (tern-load's count) in the 10 s after it went down, the time until
# it was ready and led its share again after its restart, and the mesh bytes it received
# meanwhile against the size of its data directory.
#
# Usage: loadtest/rolling.sh [TERN-LOAD ARGS...]   default: --connections 300 --rate 10000
# Environment: WINDOW_MS (limits.reconnect_window_ms, default 5000), KILL (a node to kill -9
# instead of draining), SETTLE (seconds before the first node goes and after each is back,
# default 10), CLUSTER_DIR (default ./data/rolling), TERN_LOAD (the load generator binary).
set -euo pipefail
cd "$(dirname "$0")/.."

args=("$@")
[[ ${#args[@]} -gt 0 ]] || args=(--connections 300 --rate 10000)
window=${WINDOW_MS:-5000}
kill_node=${KILL:-0}
settle=${SETTLE:-10}

export CLUSTER_DIR=${CLUSTER_DIR:-./data/rolling}
export REPLICATION_FACTOR=3
load=${TERN_LOAD:-${CARGO_TARGET_DIR:-target}/release/tern-load}
[[ -x $load ]] || cargo build --release -p tern-load
probe=loadtest/scripts/rolling_probe.py

loadtest/scripts/cluster.sh down > /dev/null 2>&1 || true
rm -rf "$CLUSTER_DIR"
mkdir -p "$CLUSTER_DIR"
base=$CLUSTER_DIR/base.toml
sed -e "s|^reconnect_window_ms = .*|reconnect_window_ms = $window|" loadtest/bench.toml > "$base"
export BASE_CONFIG=$base
loadtest/scripts/cluster.sh up 3 > /dev/null
trap 'loadtest/scripts/cluster.sh down > /dev/null 2>&1 || true' EXIT

admin() { # admin NODE
    echo "127.0.0.1:$((7600 + 10 * $1 + 1))"
}

led() { # led NODE: slot groups the node leads now (0 when it does not answer)
    { curl -s --max-time 1 "http://$(admin "$1")/metrics" || true; } |
        awk '$1 == "tern_slot_groups_led" { v = $2 } END { print v + 0 }'
}

ready() { # ready NODE: true when GET /readyz answers 200
    [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://$(admin "$1")/readyz") == 200 ]]
}

now() {
    date +%s.%N
}

since() { # since T: seconds since T, 3 decimals
    printf '%.3f' "$(echo "$(now) - $1" | bc)"
}

for _ in $(seq 1 150); do
    [[ "$(led 1)-$(led 2)-$(led 3)" == "2-2-2" ]] && break
    sleep 0.2
done

record=$CLUSTER_DIR/record.jsonl
: > "$record"
per_node=$((settle + 40))
seconds=$((settle + 3 * per_node))
servers=127.0.0.1:7610,127.0.0.1:7620,127.0.0.1:7630
report=$CLUSTER_DIR/load.json
"$load" chat --server "$servers" --config "$base" --duration "$seconds" --json "${args[@]}" \
    > "$report" 2> "$CLUSTER_DIR/load.err" &
load_pid=$!
start=$(now)
sleep "$settle"

for node in 1 2 3; do
    dir=$CLUSTER_DIR/node-$node
    log_lines=$(wc -l < "$dir/err.log")
    went=$(now)
    if [[ $node == "$kill_node" ]]; then
        how=kill
        loadtest/scripts/cluster.sh kill "$node" > /dev/null
        code=null
        took=0
        sleep 3
    else
        how=drain
        set +e
        "${TERN:-${CARGO_TARGET_DIR:-target}/release/tern}" drain --config "$dir/node.toml" > /dev/null 2>&1
        code=$?
        set -e
        took=$(since "$went")
        rm -f "$dir/pid"
    fi
    handover=$(tail -n +"$((log_lines + 1))" "$dir/err.log" |
        grep -m1 'drain: leaderships handed over' |
        sed -e 's/.*took_ms=\([0-9]*\).*meta_to=\([A-Za-z0-9()]*\).*/{"took_ms": \1, "meta_to": "\2"}/' || true)
    [[ -n $handover ]] || handover=null
    data_bytes=$(du -sb "$dir/data" | cut -f1)
    loadtest/scripts/cluster.sh start "$node" > /dev/null
    restarted=$(now)
    mesh_before=$("$probe" mesh-in "$(admin "$node")")
    back=null
    for _ in $(seq 1 1200); do
        if ready "$node" && [[ $(led "$node") -ge 2 ]]; then
            back=$(since "$restarted")
            break
        fi
        sleep 0.1
    done
    mesh_after=$("$probe" mesh-in "$(admin "$node")")
    printf '{"node": %s, "how": "%s", "at_s": %s, "exit_code": %s, "drain_s": %s, "handover": %s, "ready_and_leading_after_restart_s": %s, "mesh_bytes_in_until_then": %s, "data_dir_bytes": %s}\n' \
        "$node" "$how" "$(printf '%.1f' "$(echo "$went - $start" | bc)")" "$code" "$took" \
        "$handover" "$back" "$((mesh_after - mesh_before))" "$data_bytes" >> "$record"
    # Until this node's turn would have ended, so the three turns are spaced alike.
    left=$(echo "$per_node - ($(now) - $went)" | bc)
    [[ $left == -* ]] || sleep "$left"
done

wait "$load_pid" || true
printf '{"load": %s}\n' "$(cat "$report")" >> "$record"
"$probe" report "$record" "$CLUSTER_DIR/load.err"
