#!/usr/bin/env bash
# Two linked datacenters, "east" and "west", each a three-node tern cluster (replication factor 3,
# its own cluster name and secret) in network namespaces, their gateways linked through
# `tern-load wan-proxy` (40 ms one way plus up to 2 ms of jitter, in the root namespace), and
# `tern-load chat --wan-config` in the root namespace sending each phone to its home datacenter.
# Usage: loadtest/scripts/netns_wan.sh [steady | cut | kill-gateway | slow]
#                                      (as root; exits 0 with "skipped: ..." where it cannot run:
#                                       no root, no netns, no nftables)
#   steady        chat for STEADY_SECONDS: lost, duplicates, out_of_order, same- and cross-
#                 datacenter p50/p99.
#   cut           chat for CUT_RUN_SECONDS; CUT_AT s into it the gateway link is cut (nft drop
#                 rules on the gateway ports in the two gateways' namespaces; the phones' own
#                 connections are untouched) for CUT_SECONDS. East's gateway (node 1) is sampled
#                 every second while cut (link up, queued records, age of the oldest), then until
#                 its backlog drained after the heal.
#   kill-gateway  cut, and CUT_SECONDS/3 into the cut east's gateway (node 1) is killed (kill -9)
#                 and restarted on its configuration and data directory while the cut still
#                 holds: its queue is reloaded from disk (printed right after the restart); then
#                 the heal.
#   slow          a STEADY_SECONDS baseline, then chat for SLOW_SECONDS with both proxies capped at
#                 SLOW_RATE_BYTES per second and direction: the cross-datacenter queue backs up
#                 (sampled every 2 s) while same-datacenter latency stays at the baseline's. When
#                 the sending ends the proxies are restarted uncapped so that the backlog drains.
# Every mode exits 1 when a chat run lost, doubled or reordered a message (lost, duplicates,
# out_of_order > 0) or gave no report.
#
# Addresses: the bridge ternwbr0 carries 10.78.0.0/16; the root namespace (proxies, tern-load) is
# 10.78.0.254; east's nodes 1-3 are 10.78.1.1-3 in namespaces ternw-1..3, west's nodes 4-6 are
# 10.78.2.4-6 in ternw-4..6. Each node: client 7400, admin 7401, media 7402, cluster mesh 7403;
# the gateways (nodes 1 and 4) listen for the other datacenter on 7404. East reaches west's
# gateway at 10.78.0.254:17404 (proxy to 10.78.2.4:7404), west reaches east's at
# 10.78.0.254:17405 (proxy to 10.78.1.1:7404).
#
# Node configurations, node logs, proxy logs, tern-load's output and /metrics snapshots are kept
# in LOG_DIR (default /tmp/netns_wan_logs/MODE-TIME); data directories are removed on exit unless
# the run failed or KEEP_DATA=1. Environment: CONNECTIONS (200), RATE (msgs/s in total, 2000),
# STEADY_SECONDS (30), CUT_RUN_SECONDS (70), CUT_AT (15), CUT_SECONDS (30), DRAIN_TIMEOUT (180),
# SLOW_SECONDS (30), SLOW_RATE_BYTES (20000), DELAY_MS (40), JITTER_MS (2), TERN and TERN_LOAD (the
# binaries, default target/release/tern and target/release/tern-load).
# Needs: root, iproute2 (`ip netns`, veth, bridge), nftables (installed with apt-get if missing),
# python3, curl. The release binaries are built if missing.
set -Eeuo pipefail
trap 'echo "netns_wan: stopped at line $LINENO: $BASH_COMMAND" >&2' ERR
cd "$(dirname "$0")/../.."
mode=${1:-steady}
case $mode in
    steady | cut | kill-gateway | slow) ;;
    *)
        echo "usage: $0 [steady | cut | kill-gateway | slow]" >&2
        exit 64
        ;;
esac
skip() {
    echo "netns_wan: skipped: $*"
    exit 0
}
[ "$(id -u)" = 0 ] || skip "needs root for ip netns and nft"
command -v ip > /dev/null || skip "no iproute2"
command -v curl > /dev/null || skip "no curl"
if ! command -v nft > /dev/null; then
    apt-get install -y -q nftables > /dev/null 2>&1 || skip "nftables is missing and apt-get install nftables failed"
fi
ip netns add ternw-probe 2> /dev/null || skip "cannot create network namespaces"
ip netns del ternw-probe

connections=${CONNECTIONS:-200}
rate=${RATE:-2000}
steady_seconds=${STEADY_SECONDS:-30}
cut_run_seconds=${CUT_RUN_SECONDS:-70}
cut_at=${CUT_AT:-15}
cut_seconds=${CUT_SECONDS:-30}
drain_timeout=${DRAIN_TIMEOUT:-180}
slow_seconds=${SLOW_SECONDS:-30}
slow_rate_bytes=${SLOW_RATE_BYTES:-20000}
delay_ms=${DELAY_MS:-40}
jitter_ms=${JITTER_MS:-2}

bin=${TERN:-target/release/tern}
load=${TERN_LOAD:-target/release/tern-load}
[ -x "$bin" ] && [ -x "$load" ] || CARGO_INCREMENTAL=0 cargo build --release -p tern -p tern-load
logs=${LOG_DIR:-/tmp/netns_wan_logs/$mode-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$logs"
state=$(mktemp -d)
ok=0
declare -A pid=()
proxy_pids=()
load_pid=
root_ip=10.78.0.254

cleanup() {
    trap - ERR
    set +e
    # The final metrics of every node still running, for the record.
    for i in 1 2 3 4 5 6; do
        [[ -n ${pid[$i]:-} ]] && kill -0 "${pid[$i]}" 2> /dev/null &&
            curl -s -m 2 "http://$(ip_of "$i"):7401/metrics" > "$logs/metrics-n$i-end.txt"
    done
    [[ -n $load_pid ]] && kill -9 "$load_pid" 2> /dev/null
    for p in "${pid[@]}" "${proxy_pids[@]}"; do
        kill -9 "$p" 2> /dev/null
        wait "$p" 2> /dev/null
    done
    for i in 1 2 3 4 5 6; do
        ip netns del "ternw-$i" 2> /dev/null
        ip link del "tw$i-br" 2> /dev/null
    done
    ip link del ternwbr0 2> /dev/null
    if ((ok == 1)) && [[ ${KEEP_DATA:-0} != 1 ]]; then
        rm -rf "$state"
    else
        echo "netns_wan: data directories kept in $state"
    fi
    echo "netns_wan: logs in $logs"
}
trap cleanup EXIT

dc_of() { # dc_of NODE: its datacenter
    if (($1 <= 3)); then echo east; else echo west; fi
}
ip_of() { # ip_of NODE: its address
    if (($1 <= 3)); then echo "10.78.1.$1"; else echo "10.78.2.$1"; fi
}

# --- network: one bridge, one namespace per node --------------------------------------------
ip link add ternwbr0 type bridge
ip addr add "$root_ip/16" dev ternwbr0
ip link set ternwbr0 up
for i in 1 2 3 4 5 6; do
    ip netns add "ternw-$i"
    ip link add "tw$i" type veth peer name "tw$i-br"
    ip link set "tw$i" netns "ternw-$i"
    ip link set "tw$i-br" master ternwbr0 up
    ip -n "ternw-$i" addr add "$(ip_of "$i")/16" dev "tw$i"
    ip -n "ternw-$i" link set "tw$i" up
    ip -n "ternw-$i" link set lo up
done

# --- configurations ---------------------------------------------------------------------------
secret() { # secret FILE: 32 random bytes in hex
    (umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' > "$1")
}
secret "$state/east.secret"
secret "$state/west.secret"
secret "$state/wan.secret"
secret "$state/admin.token"

# gateway_addr FROM_DC DC: where datacenter DC's gateway is reached from FROM_DC's nodes (its own
# listen address at home, the proxy to it from the other datacenter).
gateway_addr() {
    case $1-$2 in
        east-east) echo "10.78.1.1:7404" ;;
        west-west) echo "10.78.2.4:7404" ;;
        east-west) echo "$root_ip:17404" ;;
        west-east) echo "$root_ip:17405" ;;
    esac
}

write_config() { # write_config NODE
    local i=$1 dc ip first seeds="" n file=$logs/n$1.toml
    dc=$(dc_of "$i")
    ip=$(ip_of "$i")
    if [[ $dc == east ]]; then first=1; else first=4; fi
    for n in $first $((first + 1)) $((first + 2)); do
        seeds+="    { node = $n, addr = \"$(ip_of "$n"):7403\" },"$'\n'
    done
    mkdir -p "$state/n$i"
    sed -e "s|^id = .*|id = \"tern-$dc-$i\"|" \
        -e "s|^\[auth\]$|[auth]\nadmin_token_file = \"$state/admin.token\"|" \
        -e "s|127.0.0.1:7400|$ip:7400|" -e "s|127.0.0.1:7401|$ip:7401|" \
        -e "s|127.0.0.1:7402|$ip:7402|" -e "s|^data_dir = .*|data_dir = \"$state/n$i\"|" \
        cluster.toml > "$file"
    cat >> "$file" << TOML

[cluster]
name = "$dc"
node = $i
listen = "$ip:7403"
seeds = [
$seeds]
replication_factor = 3
secret_file = "$state/$dc.secret"

[wan]
datacenter = "$dc"
name = "netns-wan"
listen = "$ip:7404"
secret_file = "$state/wan.secret"

# Every link of this test speaks plain text (the WAN proxy in between stands for the network).
[tls]
plain = ["client", "media", "mesh", "wan"]

[[wan.datacenters]]
name = "east"
clients = ["10.78.1.1:7400", "10.78.1.2:7400", "10.78.1.3:7400"]
gateways = [{ node = 1, addr = "$(gateway_addr "$dc" east)" }]

[[wan.datacenters]]
name = "west"
clients = ["10.78.2.4:7400", "10.78.2.5:7400", "10.78.2.6:7400"]
gateways = [{ node = 4, addr = "$(gateway_addr "$dc" west)" }]
TOML
}
for i in 1 2 3 4 5 6; do write_config "$i"; done

# --- processes ----------------------------------------------------------------------------------
start_node() { # start_node NODE: starts it (again) and waits for its ready line
    local i=$1 before
    before=$(grep -c "tern ready" "$logs/n$i.log" 2> /dev/null || true)
    echo "== $(date +%T) starting node $i ($(dc_of "$i"))" >> "$logs/n$i.log"
    ip netns exec "ternw-$i" env MIMALLOC_PURGE_DELAY=0 "$bin" serve --config "$logs/n$i.toml" \
        >> "$logs/n$i.log" 2>&1 &
    pid[$i]=$!
    for _ in $(seq 600); do
        (($(grep -c "tern ready" "$logs/n$i.log" || true) > ${before:-0})) && return 0
        kill -0 "${pid[$i]}" 2> /dev/null || break
        sleep 0.1
    done
    tail -20 "$logs/n$i.log"
    echo "node $i did not start; see $logs/n$i.log"
    exit 1
}

start_proxies() { # start_proxies [RATE_BYTES]: east->west on 17404, west->east on 17405
    local rate_args=() p
    [[ -n ${1:-} ]] && rate_args=(--rate-bytes "$1")
    for p in "${proxy_pids[@]}"; do
        kill "$p" 2> /dev/null || true
        wait "$p" 2> /dev/null || true
    done
    proxy_pids=()
    "$load" wan-proxy --listen "$root_ip:17404" --upstream 10.78.2.4:7404 \
        --delay-ms "$delay_ms" --jitter-ms "$jitter_ms" "${rate_args[@]}" >> "$logs/proxy-to-west.log" 2>&1 &
    proxy_pids+=($!)
    "$load" wan-proxy --listen "$root_ip:17405" --upstream 10.78.1.1:7404 \
        --delay-ms "$delay_ms" --jitter-ms "$jitter_ms" "${rate_args[@]}" >> "$logs/proxy-to-east.log" 2>&1 &
    proxy_pids+=($!)
    sleep 0.3
}

# metric NODE NAME [DATACENTER]: the value of NAME (with datacenter="DATACENTER") on NODE; empty
# when the node does not answer or has no such series.
metric() {
    local text
    text=$(curl -s -m 2 "http://$(ip_of "$1"):7401/metrics" 2> /dev/null) || return 0
    awk -v name="$2" -v label="datacenter=\"${3:-}\"" '
        !found && ($1 == name || (index($1, name "{") == 1 && index($1, label))) { print $2; found = 1 }' \
        <<< "$text"
}

# Polls until every slot group of the cluster holding NODES has a leader, as all of them see it.
until_cluster_led() {
    local nodes=$1 what=$2 urls=() n start
    for n in $nodes; do urls+=("http://$(ip_of "$n"):7401/cluster"); done
    start=$(date +%s%N)
    for _ in $(seq 600); do
        if python3 loadtest/scripts/cluster_view.py --agree --placed "${urls[@]}" > "$state/view.txt" 2>&1 &&
            python3 - "${urls[@]}" << 'PY'
import json, sys, urllib.request
views = [json.load(urllib.request.urlopen(u, timeout=2)) for u in sys.argv[1:]]
leaders = [{g["group"]: g["leader"] for g in v.get("slot_groups") or []} for v in views]
ok = leaders[0] and all(l == leaders[0] for l in leaders)
sys.exit(0 if ok and all(x is not None for x in leaders[0].values()) else 1)
PY
        then
            sed 's/^/   /' "$state/view.txt"
            echo "== $what: one map, every slot group led, after $((($(date +%s%N) - start) / 1000000)) ms"
            return 0
        fi
        sleep 0.2
    done
    cat "$state/view.txt"
    echo "== $what: not led within 120 s"
    exit 1
}

# Polls until both gateways report their link up; prints how long it took.
until_link_up() {
    local start
    start=$(date +%s%N)
    for _ in $(seq 600); do
        if [[ $(metric 1 tern_wan_link_up west) == 1 && $(metric 4 tern_wan_link_up east) == 1 ]]; then
            echo "== gateway link up both ways after $((($(date +%s%N) - start) / 1000000)) ms"
            return 0
        fi
        sleep 0.2
    done
    echo "== the gateway link did not come up within 120 s:"
    echo "   node 1 tern_wan_link_up{west}=$(metric 1 tern_wan_link_up west), node 4 tern_wan_link_up{east}=$(metric 4 tern_wan_link_up east)"
    grep -h -i "wan" "$logs/n1.log" "$logs/n4.log" | tail -20
    exit 1
}

cut_link() { # drops the gateway link's packets in both gateways' namespaces
    local n
    for n in 1 4; do
        ip netns exec "ternw-$n" nft -f - << 'NFT'
table inet ternwan {
    chain input { type filter hook input priority 0; tcp dport 7404 drop; tcp sport { 17404, 17405 } drop; }
    chain output { type filter hook output priority 0; tcp sport 7404 drop; tcp dport { 17404, 17405 } drop; }
}
NFT
    done
}
heal_link() {
    ip netns exec ternw-1 nft delete table inet ternwan
    ip netns exec ternw-4 nft delete table inet ternwan
}

# chat NAME SECONDS PREFIX: starts tern-load chat in the background (output in $logs/NAME.*) and
# waits until its phones are logged in and sending.
chat() {
    local name=$1 seconds=$2 prefix=$3
    "$load" chat --server 10.78.1.1:7400 --config "$logs/n1.toml" --wan-config "$logs/n1.toml" \
        --connections "$connections" --rate "$rate" --duration "$seconds" \
        --drain-timeout "$drain_timeout" --user-prefix "$prefix" --json \
        > "$logs/$name.out" 2> "$logs/$name.err" &
    load_pid=$!
    for _ in $(seq 1200); do
        grep -q "connected, .* failed" "$logs/$name.err" 2> /dev/null && break
        kill -0 "$load_pid" 2> /dev/null || break
        sleep 0.1
    done
    grep -h "^chat:" "$logs/$name.err" | sed 's/^/   /'
}

# finish NAME: waits for the chat run NAME, prints its figures; returns 1 when it lost, doubled
# or reordered a message, or gave no report.
finish() {
    local name=$1
    wait "$load_pid" || true
    load_pid=
    python3 - "$logs/$name.out" "$logs/$name.err" << 'PY'
import json, sys
lines = [l for l in open(sys.argv[1]).read().splitlines() if l.startswith("{")]
if not lines:
    print("   tern-load gave no report:")
    print("".join("   " + l for l in open(sys.argv[2]).readlines()[-10:]), end="")
    sys.exit(1)
r = json.loads(lines[-1])
def ms(name):
    v = r.get(name)
    return "-" if v is None else f"{v:.1f}"
print(f"   sent {r['sent']} acked {r['acked']} delivered {r['delivered']} "
      f"(queued acks {r.get('queued_acks')}, refused {r.get('refused')}, retries {r.get('retries')}, "
      f"reconnects {r.get('reconnects')}, sent home {r.get('elsewhere')}), drained {r.get('drained')} in {r.get('drain_s')} s")
print(f"   lost {r['lost']}  duplicates {r['duplicates']}  out_of_order {r['out_of_order']}")
print(f"   same-DC  ({r.get('same_dc_pairs')} pairs, {r.get('same_dc_count')} msgs): "
      f"p50 {ms('same_dc_p50_ms')} ms  p99 {ms('same_dc_p99_ms')} ms")
print(f"   cross-DC ({r.get('cross_dc_pairs')} pairs, {r.get('cross_dc_count')} msgs): "
      f"p50 {ms('cross_dc_p50_ms')} ms  p99 {ms('cross_dc_p99_ms')} ms")
bad = r["lost"] > 0 or r["duplicates"] > 0 or r["out_of_order"] > 0
sys.exit(1 if bad else 0)
PY
}

# sample LABEL: one line of east's gateway's view of its link to west (and west's of east).
sample() {
    printf '   %-14s node 1: link_up{west}=%s queue_records=%s queue_oldest_seconds=%s | node 4: link_up{east}=%s queue_records=%s\n' \
        "$1" "$(metric 1 tern_wan_link_up west)" "$(metric 1 tern_wan_queue_records west)" \
        "$(metric 1 tern_wan_queue_oldest_seconds west)" "$(metric 4 tern_wan_link_up east)" \
        "$(metric 4 tern_wan_queue_records east)"
}

# until_drained SINCE BASELINE EVENT: after EVENT (at SINCE, ns), polls both gateways' queues every
# 200 ms; prints when they were back to their usual depth (at most BASELINE records, the oldest
# younger than a second) and when both were empty.
until_drained() {
    local healed_at=$1 baseline=$2 event=$3 east west oldest back="" now
    for _ in $(seq 1500); do
        east=$(metric 1 tern_wan_queue_records west)
        west=$(metric 4 tern_wan_queue_records east)
        oldest=$(metric 1 tern_wan_queue_oldest_seconds west)
        now=$(date +%s%N)
        if [[ -z $back && -n $east && -n $west ]] &&
            python3 -c "import sys; sys.exit(0 if max($east, $west) <= $baseline and ${oldest:-9} < 1 else 1)"; then
            back=$(((now - healed_at) / 1000000))
            echo "== backlog drained in $(python3 -c "print(f'{$back / 1000:.1f}')") s after $event (both queues back to their usual depth, <= $baseline records, oldest < 1 s; now $east and $west)"
        fi
        if [[ $east == 0 && $west == 0 ]]; then
            echo "== both queues empty $(python3 -c "print(f'{($now - $healed_at) / 1e9:.1f}')") s after $event"
            return 0
        fi
        sleep 0.2
    done
    echo "== the queues were not empty within 300 s of $event (node 1: $east, node 4: $west)"
    return 1
}

# --- start ------------------------------------------------------------------------------------
echo "netns_wan: $mode; logs in $logs"
start_proxies
for i in 1 2 3 4 5 6; do start_node "$i"; done
echo "== six nodes ready (east: 1-3, west: 4-6)"
until_cluster_led "1 2 3" "east"
until_cluster_led "4 5 6" "west"
until_link_up

failed=0
case $mode in
    steady)
        echo "-- chat: $connections phones, $rate msgs/s, $steady_seconds s"
        chat steady "$steady_seconds" "steady-"
        finish steady || failed=1
        ;;
    cut | kill-gateway)
        echo "-- chat: $connections phones, $rate msgs/s, $cut_run_seconds s; link cut at $cut_at s for $cut_seconds s"
        chat "$mode" "$cut_run_seconds" "$mode-"
        baseline=0
        for s in $(seq "$cut_at"); do
            sleep 1
            q=$(metric 1 tern_wan_queue_records west)
            q4=$(metric 4 tern_wan_queue_records east)
            baseline=$(python3 -c "print(int(max($baseline, ${q:-0}, ${q4:-0})))")
        done
        baseline=$((baseline < 10 ? 10 : baseline))
        sample "before the cut"
        echo "-- $(date +%T) cutting the gateway link (nft drop on ports 7404/17404/17405 in ternw-1 and ternw-4)"
        cut_link
        cut_start=$(date +%s)
        killed=0
        while :; do
            sleep 1
            s=$(($(date +%s) - cut_start))
            ((s >= cut_seconds)) && break
            if [[ $mode == kill-gateway && $killed == 0 && $s -ge $((cut_seconds / 3)) ]]; then
                sample "cut +${s}s"
                echo "-- $(date +%T) kill -9 of east's gateway (node 1, pid ${pid[1]}), the cut still holding"
                kill -9 "${pid[1]}"
                wait "${pid[1]}" 2> /dev/null || true
                killed=1
                start_node 1
                echo "-- $(date +%T) node 1 restarted on its data directory (cut still in place)"
                echo "   node 1 right after the restart: tern_wan_queue_records{west}=$(metric 1 tern_wan_queue_records west) tern_wan_queue_oldest_seconds{west}=$(metric 1 tern_wan_queue_oldest_seconds west) link_up{west}=$(metric 1 tern_wan_link_up west)"
                # Its WAN lines since this start.
                awk '/^== .* starting node/ { lines = "" } /wan/ { lines = lines $0 "\n" }
                    END { printf "%s", lines }' "$logs/n1.log" | tail -n 5 | sed 's/^/   log: /'
            fi
            sample "cut +${s}s"
        done
        echo "-- $(date +%T) healing the cut"
        heal_link
        healed_at=$(date +%s%N)
        until_drained "$healed_at" "$baseline" "the heal" || failed=1
        sample "after drain"
        finish "$mode" || failed=1
        ;;
    slow)
        echo "-- baseline: chat $connections phones, $rate msgs/s, $steady_seconds s, proxies uncapped"
        chat steady "$steady_seconds" "base-"
        finish steady || failed=1
        echo "-- $(date +%T) proxies capped at $slow_rate_bytes bytes/s each way"
        start_proxies "$slow_rate_bytes"
        until_link_up
        echo "-- chat: $connections phones, $rate msgs/s, $slow_seconds s over the capped link"
        chat slow "$slow_seconds" "slow-"
        slow_start=$(date +%s)
        while (($(date +%s) - slow_start < slow_seconds)); do
            sleep 2
            sample "slow +$(($(date +%s) - slow_start))s"
        done
        echo "-- $(date +%T) sending over: proxies uncapped so that the backlog drains"
        start_proxies
        until_drained "$(date +%s%N)" 10 "uncapping" || failed=1
        finish slow || failed=1
        echo "== same-DC latency, baseline vs capped link (cross-DC backed up):"
        python3 - "$logs/steady.out" "$logs/slow.out" << 'PY'
import json, sys
def report(path):
    lines = [l for l in open(path).read().splitlines() if l.startswith("{")]
    return json.loads(lines[-1]) if lines else {}
base, slow = report(sys.argv[1]), report(sys.argv[2])
for name in ("same_dc_p50_ms", "same_dc_p99_ms", "cross_dc_p50_ms", "cross_dc_p99_ms"):
    print(f"   {name:16} baseline {base.get(name)}  capped {slow.get(name)}")
PY
        ;;
esac
for i in 1 2 3 4 5 6; do
    curl -s -m 2 "http://$(ip_of "$i"):7401/metrics" | grep '^tern_wan_' > "$logs/metrics-n$i-wan.txt" || true
done
# The gateways' link counters (since each one's last start).
for n in 1 4; do
    far=west
    [[ $n == 4 ]] && far=east
    echo "   gateway node $n, link to $far: sent $(metric "$n" tern_wan_sent_total "$far")" \
        "received $(metric "$n" tern_wan_received_total "$far")" \
        "duplicates $(metric "$n" tern_wan_duplicates_total "$far")" \
        "refused $(metric "$n" tern_wan_refused_total "$far")" \
        "resumes (link came up) $(metric "$n" tern_wan_resumes_total "$far")"
done
if ((failed)); then
    echo "netns_wan: $mode FAILED"
    exit 1
fi
ok=1
echo "netns_wan: $mode ok"
