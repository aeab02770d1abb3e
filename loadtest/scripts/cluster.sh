#!/usr/bin/env bash
# A local cluster of N tern nodes on loopback, each its own process with its own data directory.
# Usage: loadtest/scripts/cluster.sh up N | down | status | kill I | start I | drain I | remove I
#
#   up N     writes node-I/node.toml for I = 1..N (cluster.toml with [cluster] added: ordinal I,
#            ports client 7600+10I, admin +1, media +2, mesh +3, every node a seed), a shared
#            secret in cluster.secret and an admin token in admin.token (each generated once,
#            kept; the token authorizes drain and remove), starts the nodes, waits for each
#            one's ready line and prints its addresses. Builds the release binary if missing.
#   down     stops every node of the state directory (SIGTERM, then waits for it to exit).
#   status   GET /cluster on each node's admin port: one summary line per node (leader, term, map
#            version, node states, islands and their slot counts; loadtest/scripts/cluster_view.py),
#            then whether they all agree and every slot is placed (exit 1 if not).
#   kill I   SIGKILL node I (a crash: no drain, no checkpoint).
#   drain I  `tern drain` of node I: it hands its leaderships over, sends its phones to the
#            others, checkpoints and exits 0 (start I brings it back).
#   remove I takes node I, which must be down (killed, marked down by the cluster), out of the
#            cluster for good: POST /cluster/nodes/I/remove on the first running node. A spare
#            node takes its places in its islands (`up 4` starts one beside an island of three).
#   start I  starts node I again from its configuration and data directory.
#
# Environment: CLUSTER_DIR (state directory, default ./data/cluster), TERN (the binary, default
# $CARGO_TARGET_DIR/release/tern or target/release/tern), REPLICATION_FACTOR (default 3),
# SLOTS (default 512), READY_TIMEOUT (seconds per node, default 60), BASE_CONFIG (the file each
# node's configuration starts from, default cluster.toml; loadtest/bench.toml for benchmarks),
# SLOT_LOG_MAX_LAG (the nodes' slot_log_max_lag, when set).
set -euo pipefail
cd "$(dirname "$0")/../.."

state=${CLUSTER_DIR:-./data/cluster}
tern=${TERN:-${CARGO_TARGET_DIR:-target}/release/tern}
replication=${REPLICATION_FACTOR:-3}
slots=${SLOTS:-512}
ready_timeout=${READY_TIMEOUT:-60}
base_config=${BASE_CONFIG:-cluster.toml}

port() { # port NODE OFFSET
    echo $((7600 + 10 * $1 + $2))
}

alive() { # alive PIDFILE
    [[ -f $1 ]] && kill -0 "$(cat "$1")" 2> /dev/null
}

nodes() { # the node directories of the state directory, in ordinal order
    [[ -d $state ]] || return 0
    find "$state" -maxdepth 1 -name 'node-*' -type d | sort -t- -k2 -n
}

random_file() { # random_file NAME: a file of 32 random bytes in hex, made once and kept
    local file=$state/$1
    if [[ ! -s $file ]]; then
        (umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' > "$file")
    fi
    echo "$file"
}

secret_file() {
    random_file cluster.secret
}

admin_token_file() {
    random_file admin.token
}

write_config() { # write_config NODE COUNT SECRET_FILE
    local node=$1 count=$2 secret=$3 dir=$state/node-$1 seeds="" i
    for i in $(seq 1 "$count"); do
        seeds+="    { node = $i, addr = \"127.0.0.1:$(port "$i" 3)\" },"$'\n'
    done
    mkdir -p "$dir/data"
    sed -e "s|^id = .*|id = \"tern-$node\"|" \
        -e "s|^\[auth\]$|[auth]\nadmin_token_file = \"$(realpath "$(admin_token_file)")\"|" \
        -e "s|^client_addr = .*|client_addr = \"127.0.0.1:$(port "$node" 0)\"|" \
        -e "s|^admin_addr = .*|admin_addr = \"127.0.0.1:$(port "$node" 1)\"|" \
        -e "s|^listen_addr = .*|listen_addr = \"127.0.0.1:$(port "$node" 2)\"|" \
        "$base_config" > "$dir/node.toml"
    cat >> "$dir/node.toml" << TOML

[cluster]
name = "local"
node = $node
listen = "127.0.0.1:$(port "$node" 3)"
seeds = [
$seeds]
replication_factor = $replication
slots = $slots
secret_file = "$(realpath "$secret")"
TOML
    if [[ -n ${SLOT_LOG_MAX_LAG:-} ]]; then
        echo "slot_log_max_lag = $SLOT_LOG_MAX_LAG" >> "$dir/node.toml"
    fi
}

start() { # start NODE
    local dir=$state/node-$1 waited=0
    # setsid: the node outlives this script and a Ctrl-C in its terminal.
    MIMALLOC_PURGE_DELAY=0 setsid "$tern" serve --config "$dir/node.toml" --data-dir "$dir/data" \
        > "$dir/out.log" 2> "$dir/err.log" < /dev/null &
    echo $! > "$dir/pid"
    until grep -q '^tern ready' "$dir/out.log" 2> /dev/null; do
        if ! alive "$dir/pid"; then
            echo "node $1 exited before it was ready:" >&2
            tail -20 "$dir/err.log" >&2
            return 1
        fi
        if ((waited >= ready_timeout * 10)); then
            echo "node $1 was not ready after ${ready_timeout} s; see $dir/err.log" >&2
            return 1
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    echo "node $1: $(grep -m1 '^tern ready' "$dir/out.log" | cut -d' ' -f3-) mesh=127.0.0.1:$(port "$1" 3) (pid $(cat "$dir/pid"))"
}

up() { # up N
    local count=$1 i dir
    if ! [[ $count =~ ^[0-9]+$ ]] || ((count < 1 || count > 99)); then
        echo "up takes a node count between 1 and 99" >&2
        exit 64
    fi
    for dir in $(nodes); do
        if alive "$dir/pid"; then
            echo "$dir is running (pid $(cat "$dir/pid")): run down first" >&2
            exit 1
        fi
    done
    if [[ ! -x $tern ]]; then
        echo "building $tern" >&2
        cargo build --release -p tern --bin tern
    fi
    mkdir -p "$state"
    local secret
    secret=$(secret_file)
    for i in $(seq 1 "$count"); do
        write_config "$i" "$count" "$secret"
    done
    for i in $(seq 1 "$count"); do
        start "$i" || { down; exit 1; }
    done
    echo "state and logs under $state; stop with: $0 down"
}

down() {
    local dir pid waited
    for dir in $(nodes); do
        alive "$dir/pid" || { rm -f "$dir/pid"; continue; }
        pid=$(cat "$dir/pid")
        kill -TERM "$pid"
        waited=0
        # The node drains its connections for up to limits.shutdown_grace_secs (10 s).
        while kill -0 "$pid" 2> /dev/null && ((waited < 600)); do
            sleep 0.1
            waited=$((waited + 1))
        done
        if kill -0 "$pid" 2> /dev/null; then
            echo "${dir##*/} (pid $pid) still running after 60 s" >&2
        else
            echo "${dir##*/} stopped"
            rm -f "$dir/pid"
        fi
    done
}

status() {
    local dir node views=()
    for dir in $(nodes); do
        node=${dir##*node-}
        if ! alive "$dir/pid"; then
            echo "node $node: not running"
            continue
        fi
        views+=("http://127.0.0.1:$(port "$node" 1)/cluster")
    done
    ((${#views[@]} > 0)) || return 0
    python3 loadtest/scripts/cluster_view.py --agree --placed "${views[@]}"
}

remove() { # remove NODE
    local dir node
    for dir in $(nodes); do
        node=${dir##*node-}
        [[ $node == "$1" ]] && continue
        alive "$dir/pid" || continue
        python3 - "http://127.0.0.1:$(port "$node" 1)/cluster/nodes/$1/remove" "$(cat "$(admin_token_file)")" << 'PY'
import sys, urllib.request, urllib.error
try:
    request = urllib.request.Request(sys.argv[1], method="POST",
                                      headers={"Authorization": "Bearer " + sys.argv[2]})
    with urllib.request.urlopen(request, timeout=10) as r:
        print(r.read().decode().strip())
except urllib.error.HTTPError as e:
    print(f"refused ({e.code}): {e.read().decode().strip()}", file=sys.stderr)
    sys.exit(1)
PY
        return
    done
    echo "no running node to ask" >&2
    return 1
}

case ${1:-} in
    up) up "${2:-3}" ;;
    down) down ;;
    status) status ;;
    kill)
        pidfile=$state/node-${2:?node}/pid
        alive "$pidfile" && kill -9 "$(cat "$pidfile")" && rm -f "$pidfile" && echo "node $2 killed"
        ;;
    start) start "${2:?node}" ;;
    remove) remove "${2:?node}" ;;
    drain)
        dir=$state/node-${2:?node}
        "$tern" drain --config "$dir/node.toml" && rm -f "$dir/pid"
        ;;
    *)
        echo "usage: $0 up N | down | status | kill I | start I | drain I | remove I" >&2
        exit 64
        ;;
esac
