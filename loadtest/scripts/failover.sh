#!/usr/bin/env bash
# Replicated slots under a crash: a local three-node cluster with replication 3
# (loadtest/scripts/cluster.sh, loadtest/bench.toml), tern-load chat with its phones spread over
# the three nodes, kill -9 of one node during the run and a restart later. Prints tern-load's
# report (lost, duplicates after the client's dedup, ack_wait_max_ms: the longest any message
# waited from its first send to its ack, which includes the phones of the killed node finding
# another node), when the other two led the killed node's slot groups again, and how long the
# restarted node took to catch up (to lead its share of the groups again: leadership goes back
# only to a member holding every entry), and at the end what each node's slot log holds (entries
# not purged yet, purges, snapshots sent and installed).
# With REPLACE=1 a fourth node starts as a spare and the killed node is never restarted: once it
# is marked down it is removed (cluster.sh remove), and the script prints when the spare had
# taken its place (a voter of every slot group, leading its share of them) instead.
# Usage: loadtest/scripts/failover.sh [SECONDS] [KILL_AT] [RESTART_AT] [NODE] [TERN-LOAD ARGS...]
#   default: 60 20 40 2 --connections 300
set -euo pipefail
cd "$(dirname "$0")/../.."

seconds=${1:-60}
kill_at=${2:-20}
restart_at=${3:-40}
victim=${4:-2}
shift $(($# < 4 ? $# : 4))
args=("$@")
[[ ${#args[@]} -gt 0 ]] || args=(--connections 300)

export CLUSTER_DIR=${CLUSTER_DIR:-./data/failover}
export BASE_CONFIG=${BASE_CONFIG:-loadtest/bench.toml}
export REPLICATION_FACTOR=3
load=${TERN_LOAD:-${CARGO_TARGET_DIR:-target}/release/tern-load}
[[ -x $load ]] || cargo build --release -p tern-load

loadtest/scripts/cluster.sh down > /dev/null 2>&1 || true
rm -rf "$CLUSTER_DIR"
nodes=3
[[ -z ${REPLACE:-} ]] || nodes=4
loadtest/scripts/cluster.sh up "$nodes" > /dev/null
trap 'loadtest/scripts/cluster.sh down > /dev/null 2>&1 || true' EXIT

admin() { # admin NODE
    echo $((7600 + 10 * $1 + 1))
}

led() { # led NODE: slot groups the node leads now (empty when it does not answer)
    curl -s --max-time 1 "http://127.0.0.1:$(admin "$1")/metrics" |
        awk '$1 == "tern_slot_groups_led" { print $2 }'
}

share() { # share: slot groups each node leads when every node is up
    echo $((6 / 3))
}

# Every group led by its preferred member before the run starts.
for _ in $(seq 1 100); do
    [[ "$(led 1)-$(led 2)-$(led 3)" == "$(share)-$(share)-$(share)" ]] && break
    sleep 0.2
done
echo "groups led before the run: node 1 $(led 1), node 2 $(led 2), node 3 $(led 3)"

servers=127.0.0.1:7610,127.0.0.1:7620,127.0.0.1:7630
[[ -z ${REPLACE:-} ]] || servers=$servers,127.0.0.1:7640
report=$(mktemp)
"$load" chat --server "$servers" --config loadtest/bench.toml --duration "$seconds" \
    "${args[@]}" > "$report" 2> "$report.err" &
load_pid=$!

start=$(date +%s.%N)
elapsed() {
    echo "$(date +%s.%N) - $start" | bc
}

sleep "$kill_at"
loadtest/scripts/cluster.sh kill "$victim" > /dev/null
killed=$(date +%s.%N)
echo "t=$(elapsed | cut -c1-5) s: node $victim killed (kill -9)"
others=()
for node in $(seq 1 "$nodes"); do
    [[ $node == "$victim" ]] || others+=("$node")
done
while true; do
    total=0
    for node in "${others[@]}"; do
        total=$((total + $(led "$node" || echo 0)))
    done
    if [[ $total -ge 6 ]]; then
        echo "all 6 slot groups led by nodes ${others[*]} $(echo "$(date +%s.%N) - $killed" | bc | cut -c1-5) s after the kill"
        break
    fi
    sleep 0.1
done

if [[ -n ${REPLACE:-} ]]; then
    # The dead node is taken out once the cluster marked it down; the spare (node 4) takes its
    # place in every slot group.
    until loadtest/scripts/cluster.sh remove "$victim" > /dev/null 2>&1; do
        sleep 0.2
    done
    removed=$(date +%s.%N)
    echo "t=$(elapsed | cut -c1-5) s: node $victim removed"
    joined=""
    for _ in $(seq 1 600); do
        if [[ "$(led 4)" == "$(share)" ]]; then
            joined=$(echo "$(date +%s.%N) - $removed" | bc | cut -c1-5)
            break
        fi
        sleep 0.1
    done
    if [[ -n $joined ]]; then
        echo "node 4 is a voter of every group and leads its $(share) $joined s after the removal"
    else
        echo "node 4 did not lead its share within 60 s of the removal (leads $(led 4))"
    fi
else
    wait_s=$(echo "$restart_at - $(elapsed)" | bc)
    [[ $wait_s == -* ]] || sleep "$wait_s"
    loadtest/scripts/cluster.sh start "$victim" > /dev/null
    restarted=$(date +%s.%N)
    echo "t=$(elapsed | cut -c1-5) s: node $victim restarted"
    caught_up=""
    for _ in $(seq 1 600); do
        if [[ "$(led "$victim")" == "$(share)" ]]; then
            caught_up=$(echo "$(date +%s.%N) - $restarted" | bc | cut -c1-5)
            break
        fi
        sleep 0.1
    done
    if [[ -n $caught_up ]]; then
        echo "node $victim caught up and leads its $(share) groups again $caught_up s after its restart"
    else
        echo "node $victim did not lead its share again within 60 s (leads $(led "$victim"))"
    fi
fi

wait "$load_pid" || true
for node in $(seq 1 "$nodes"); do
    { curl -s --max-time 1 "http://127.0.0.1:$(admin "$node")/metrics" || true; } | awk -v node="$node" '
        $1 == "tern_slot_log_entries" { entries = $2 }
        $1 == "tern_slot_log_purges_total" { purges = $2 }
        $1 == "tern_slot_snapshots_sent_total" { sent = $2 }
        $1 == "tern_slot_snapshots_installed_total" { installed = $2 }
        END { printf "node %s slot log: %d entries held, %d purges, snapshots sent %d, installed %d\n",
                     node, entries, purges, sent, installed }'
done
grep -E '^(sent|acked|delivered|lost|duplicates|msgs_per_sec|p50_ms|p99_ms|max_ms|ack_wait_max_ms|reconnects|refused|retries|drained):' "$report"
rm -f "$report" "$report.err"
