#!/usr/bin/env bash
# tern against mosquitto on this machine, both measured by tern-load the same way: idle
# connections (server memory per connection), login storms, and 1:1 chat at the maximum rate
# and at fixed rates (throughput, latency, server CPU per message, loss).
#
# Usage (as root on Debian, from anywhere):  loadtest/compare.sh
#         QUICK=1 loadtest/compare.sh        a smoke run of about a minute (after the build)
#         TLS=1 loadtest/compare.sh          the same runs over plain TCP, then over TLS 1.3
#
# Installs what is missing (mosquitto, python3, a C toolchain; Rust must be there already),
# builds tern and tern-load in release, starts tern (loadtest/bench.toml on its own ports) and
# its own mosquitto (generated config, loopback only), runs every scenario against each, then
# prints the table and writes the chart. Nothing is left running. After each tern run the node's
# /metrics goes to RESULTS/NAME-tern.metrics (cumulative since the node started), so that its
# slow journal fsyncs can be told apart from the rest (loadtest/scripts/stalls.py).
#
# Settings (environment):
#   RESULTS            results directory (default loadtest/results/<UTC time>)
#   IDLE_CONNECTIONS   idle connections (15000; QUICK 1000)
#   IDLE_SECONDS       seconds they are held (10; QUICK 2)
#   IDLE_CONCURRENCY   connection attempts in flight while opening them (64: mosquitto listens
#                      with a backlog of 100, beyond which SYNs are dropped and retried 1 s later)
#   STORM_CONNECTIONS  concurrent login loops (256; QUICK 64)
#   STORM_SECONDS      seconds of logins (10; QUICK 3)
#   CHAT_CONNECTIONS   chat phones, half of them pairs' senders (200; QUICK 100)
#   CHAT_SECONDS       seconds per chat run (10; QUICK 3)
#   CHAT_RATES         fixed total rates, msgs/s, besides the maximum ("10000 40000 90000";
#                      QUICK "5000 20000")
#   CHAT_SIZE          message body bytes (100)
#   CHAT_WINDOW        unacked messages per phone, for both servers (32)
#   TERN_PORT          tern's client port (17500; its admin port is TERN_PORT+1)
#   MQTT_PORT          mosquitto's port (18830)
#   SKIP_BUILD=1       use the binaries already built
#   TLS                0: plain TCP only (default); 1: plain TCP, then TLS 1.3 on fresh servers
#                      (results of the TLS runs in RESULTS/tls/); only: TLS only. Over TLS, tern
#                      serves the node certificate `tern certs` writes into RESULTS/certs/ (its
#                      [tls] section), mosquitto serves the same certificate on a TLS listener
#                      (tls_version tlsv1.3), and tern-load trusts RESULTS/certs/ca.crt.
#   SCENARIOS          which runs, in this order ("idle storm chat")
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)

if [ "${QUICK:-0}" = 1 ]; then
    d_idle=1000 d_idle_s=2 d_storm=64 d_storm_s=3 d_chat=100 d_chat_s=3 d_rates="5000 20000"
else
    d_idle=15000 d_idle_s=10 d_storm=256 d_storm_s=10 d_chat=200 d_chat_s=10 d_rates="10000 40000 90000"
fi
IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-$d_idle}
IDLE_SECONDS=${IDLE_SECONDS:-$d_idle_s}
IDLE_CONCURRENCY=${IDLE_CONCURRENCY:-64}
STORM_CONNECTIONS=${STORM_CONNECTIONS:-$d_storm}
STORM_SECONDS=${STORM_SECONDS:-$d_storm_s}
CHAT_CONNECTIONS=${CHAT_CONNECTIONS:-$d_chat}
CHAT_SECONDS=${CHAT_SECONDS:-$d_chat_s}
CHAT_RATES=${CHAT_RATES:-$d_rates}
CHAT_SIZE=${CHAT_SIZE:-100}
CHAT_WINDOW=${CHAT_WINDOW:-32}
TERN_PORT=${TERN_PORT:-17500}
TERN_ADMIN_PORT=$((TERN_PORT + 1))
MQTT_PORT=${MQTT_PORT:-18830}
RESULTS=${RESULTS:-$ROOT/loadtest/results/$(date -u +%Y%m%dT%H%M%SZ)}
TLS=${TLS:-0}
SCENARIOS=${SCENARIOS:-idle storm chat}
case "$TLS" in
    0) MODES="plain" ;;
    1) MODES="plain tls" ;;
    only) MODES="tls" ;;
    *) echo "compare: TLS must be 0, 1 or only, not $TLS" >&2; exit 1 ;;
esac

say() { echo "compare: $*" >&2; }
die() { say "$*"; exit 1; }

# --- what the run needs -------------------------------------------------------------------
apt_updated=
apt_install() {
    [ "$(id -u)" = 0 ] || die "$* missing and not root: install it, or run as root"
    if [ -z "$apt_updated" ]; then
        apt-get update -qq
        apt_updated=1
    fi
    say "installing $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

PATH=$PATH:/usr/sbin:/sbin
if ! command -v mosquitto >/dev/null; then
    apt_install mosquitto
    # The package may start the system service; stop it, this run starts its own broker.
    if command -v systemctl >/dev/null && systemctl is-active --quiet mosquitto 2>/dev/null; then
        systemctl stop mosquitto
        systemctl disable --quiet mosquitto 2>/dev/null || true
    elif command -v service >/dev/null; then
        service mosquitto stop >/dev/null 2>&1 || true
    fi
fi
command -v python3 >/dev/null || apt_install python3
command -v cc >/dev/null || apt_install build-essential
command -v cargo >/dev/null || die "cargo not found: install Rust (rustup) first"

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in "$TERN_PORT" "$TERN_ADMIN_PORT" "$MQTT_PORT"; do
    port_free "$port" || die "port $port on 127.0.0.1 is in use; set TERN_PORT / MQTT_PORT"
done

# Connections are capped by open files; take everything the hard limit allows.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
say "open files per process: $(ulimit -n)"

# --- build ---------------------------------------------------------------------------------
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    say "building tern and tern-load (release)"
    cargo build --release -q -p tern -p tern-load
fi
TERN=$TARGET_DIR/release/tern
LOAD=$TARGET_DIR/release/tern-load
[ -x "$TERN" ] && [ -x "$LOAD" ] || die "binaries not found in $TARGET_DIR/release"

mkdir -p "$RESULTS"
say "results in $RESULTS"
{
    echo "date: $(date -u +%FT%TZ)"
    echo "commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "cpus: $(nproc)"
    echo "memory: $(awk '/MemTotal/ {print $2 " kB"}' /proc/meminfo)"
    echo "kernel: $(uname -r)"
    echo "mosquitto: $(mosquitto -h 2>/dev/null | head -n1)"
    echo "settings: IDLE_CONNECTIONS=$IDLE_CONNECTIONS IDLE_SECONDS=$IDLE_SECONDS" \
        "IDLE_CONCURRENCY=$IDLE_CONCURRENCY" \
        "STORM_CONNECTIONS=$STORM_CONNECTIONS STORM_SECONDS=$STORM_SECONDS" \
        "CHAT_CONNECTIONS=$CHAT_CONNECTIONS CHAT_SECONDS=$CHAT_SECONDS CHAT_RATES=\"$CHAT_RATES\"" \
        "CHAT_SIZE=$CHAT_SIZE CHAT_WINDOW=$CHAT_WINDOW TLS=$TLS SCENARIOS=\"$SCENARIOS\""
} >"$RESULTS/env.txt"

# --- certificates (TLS runs) -----------------------------------------------------------------
CERTS=$RESULTS/certs
if [ "$MODES" != plain ]; then
    # The node certificate names tern-1, localhost and 127.0.0.1; both servers serve it.
    "$TERN" certs --dir "$CERTS" --node tern-1 >"$CERTS.txt" 2>&1 ||
        die "tern certs failed: $(tail -n3 "$CERTS.txt")"
    # mosquitto started as root reads its key after dropping to the mosquitto user.
    if [ "$(id -u)" = 0 ] && id mosquitto >/dev/null 2>&1; then
        install -m 600 -o mosquitto -g mosquitto "$CERTS/tern-1.key" "$CERTS/mosquitto.key"
    else
        install -m 600 "$CERTS/tern-1.key" "$CERTS/mosquitto.key"
    fi
fi

# --- servers -------------------------------------------------------------------------------
TERN_PID=
MQTT_PID=
stop_servers() {
    for pid in $TERN_PID $MQTT_PID; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in $TERN_PID $MQTT_PID; do
        wait "$pid" 2>/dev/null || true
    done
    TERN_PID= MQTT_PID=
}
trap stop_servers EXIT

# start_servers MODE DIR: a fresh tern (data in DIR/tern-data) and a fresh mosquitto, plain or
# TLS, configurations and logs in DIR.
start_servers() {
    local mode=$1 dir=$2
    sed -e "s/127\.0\.0\.1:7500/127.0.0.1:$TERN_PORT/" \
        -e "s/127\.0\.0\.1:7501/127.0.0.1:$TERN_ADMIN_PORT/" \
        "$ROOT/loadtest/bench.toml" >"$dir/tern.toml"
    if [ "$mode" = tls ]; then
        cat >>"$dir/tern.toml" <<EOF

[tls]
# From tern certs (compare.sh): TLS 1.3 on the client and media ports.
cert_file = "$CERTS/tern-1.crt"
key_file = "$CERTS/tern-1.key"
EOF
    fi
    rm -rf "$dir/tern-data"
    MIMALLOC_PURGE_DELAY=0 "$TERN" serve --config "$dir/tern.toml" --data-dir "$dir/tern-data" \
        >"$dir/tern.log" 2>&1 &
    TERN_PID=$!

    cat >"$dir/mosquitto.conf" <<EOF
# Generated by loadtest/compare.sh: loopback only, no auth, no persistence, queues large enough
# that the broker never drops a QoS 1 message of the chat runs, Nagle off as tern has it.
listener $MQTT_PORT 127.0.0.1
allow_anonymous true
set_tcp_nodelay true
max_connections -1
max_inflight_messages 1024
max_queued_messages 100000
persistence false
log_dest stderr
log_type error
log_type warning
EOF
    if [ "$mode" = tls ]; then
        cat >>"$dir/mosquitto.conf" <<EOF
# TLS 1.3 on the listener with tern's certificate (from tern certs).
cafile $CERTS/ca.crt
certfile $CERTS/tern-1.crt
keyfile $CERTS/mosquitto.key
tls_version tlsv1.3
EOF
    fi
    mosquitto -c "$dir/mosquitto.conf" >"$dir/mosquitto.log" 2>&1 &
    MQTT_PID=$!

    for _ in $(seq 100); do
        grep -q "^tern ready" "$dir/tern.log" 2>/dev/null && ! port_free "$MQTT_PORT" && break
        kill -0 "$TERN_PID" 2>/dev/null || die "tern exited: $(tail -n5 "$dir/tern.log")"
        kill -0 "$MQTT_PID" 2>/dev/null || die "mosquitto exited: $(tail -n5 "$dir/mosquitto.log")"
        sleep 0.3
    done
    grep -q "^tern ready" "$dir/tern.log" || die "tern not ready: $(tail -n5 "$dir/tern.log")"
    port_free "$MQTT_PORT" && die "mosquitto not listening: $(tail -n5 "$dir/mosquitto.log")"
    say "$mode: tern pid $TERN_PID on 127.0.0.1:$TERN_PORT," \
        "mosquitto pid $MQTT_PID on 127.0.0.1:$MQTT_PORT"
}

# --- runs ----------------------------------------------------------------------------------
failures=0
# load DIR MODE NAME SERVER SCENARIO ARGS...: one tern-load run; its JSON line goes to
# DIR/NAME-SERVER.json.
load() {
    local dir=$1 mode=$2 name=$3 server=$4 scenario=$5
    shift 5
    local target
    if [ "$server" = tern ]; then
        target=(--target tern --server "127.0.0.1:$TERN_PORT" --config "$dir/tern.toml"
            --server-pid "$TERN_PID")
    else
        target=(--target mqtt --server "127.0.0.1:$MQTT_PORT" --server-pid "$MQTT_PID")
    fi
    if [ "$mode" = tls ]; then
        target+=(--tls --ca-file "$CERTS/ca.crt" --server-name localhost)
    fi
    say "$name on $server ($mode)"
    local status=0
    "$LOAD" "$scenario" "${target[@]}" --json "$@" \
        >"$dir/$name-$server.json" 2>"$dir/$name-$server.log" || status=$?
    if [ "$server" = tern ]; then
        # The node's own histograms (acks, journal fsyncs) so far, to tell its stalls apart.
        curl -s "http://127.0.0.1:$TERN_ADMIN_PORT/metrics" >"$dir/$name-tern.metrics" || true
    fi
    if [ "$status" != 0 ]; then
        failures=$((failures + 1))
        say "  exit status $status; last lines of $dir/$name-$server.log:"
        tail -n3 "$dir/$name-$server.log" >&2
    fi
}

# run_all MODE DIR: the scenarios of SCENARIOS against fresh servers.
run_all() {
    local mode=$1 dir=$2
    mkdir -p "$dir"
    start_servers "$mode" "$dir"
    local server rate scenario
    for scenario in $SCENARIOS; do
        case "$scenario" in
        idle)
            # First, while both servers are fresh, so memory growth is the connections' own.
            for server in tern mqtt; do
                load "$dir" "$mode" idle "$server" idle --connections "$IDLE_CONNECTIONS" \
                    --duration "$IDLE_SECONDS" --connect-concurrency "$IDLE_CONCURRENCY"
            done
            ;;
        storm)
            for server in tern mqtt; do
                load "$dir" "$mode" storm "$server" storm --connections "$STORM_CONNECTIONS" \
                    --duration "$STORM_SECONDS"
            done
            ;;
        chat)
            local chat=(--connections "$CHAT_CONNECTIONS" --duration "$CHAT_SECONDS"
                --size "$CHAT_SIZE" --window "$CHAT_WINDOW")
            for server in tern mqtt; do
                load "$dir" "$mode" chat-max "$server" chat "${chat[@]}"
                for rate in $CHAT_RATES; do
                    load "$dir" "$mode" "chat-$rate" "$server" chat "${chat[@]}" --rate "$rate"
                done
            done
            ;;
        *) die "unknown scenario $scenario in SCENARIOS" ;;
        esac
    done
    stop_servers
}

for mode in $MODES; do
    if [ "$mode" = tls ]; then
        run_all tls "$RESULTS/tls"
    else
        run_all plain "$RESULTS"
    fi
done

# --- report --------------------------------------------------------------------------------
echo
python3 "$ROOT/loadtest/scripts/compare_table.py" "$RESULTS" --markdown "$RESULTS/table.md"
echo
echo "Same machine, loopback, load generator beside the server. tern acks a message after its"
echo "journal fsync; mosquitto (persistence off) acks QoS 1 from memory. Ratios are tern/mosquitto:"
echo "above 1 is better for throughput and logins/s, below 1 for latency, memory and CPU."
for mode in $MODES; do
    dir=$RESULTS
    [ "$mode" = tls ] && dir=$RESULTS/tls
    python3 "$ROOT/loadtest/scripts/latency_chart.py" "$dir" -o "$dir/latency.svg"
done
if [ "$failures" != 0 ]; then
    say "$failures run(s) exited non-zero (lost messages, errors, or could not run): see the logs"
    exit 1
fi
