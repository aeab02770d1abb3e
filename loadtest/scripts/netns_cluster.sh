#!/usr/bin/env bash
# Three tern nodes as real processes in three network namespaces joined by a bridge: waits for one
# cluster map on all three, cuts node 3 off with nftables drop rules, shows it marked down by the
# other two (with the time it took), heals the cut and shows the three maps equal again.
# Usage: loadtest/scripts/netns_cluster.sh [cut-node | isolate-leader]
#                                                  (as root; exits 0 with "skipped: ..." where it
#                                                   cannot run: no root, no netns, no nftables)
# isolate-leader: the nodes replicate their slots (cluster.toml's replication 3). Phones on node 3
# (tern-load chat inside its namespace) keep sending while node 3, which leads two slot groups,
# is cut off: no message is acked by node 3 once nodes 1 and 2 lead every group (the run fails
# otherwise); after the heal node 3 follows, gets its groups back, and the three nodes have
# applied the same last entry of every group; tern-load's report says lost 0, duplicates 0.
# Needs: root, iproute2 (`ip netns`, veth, bridge), nftables (installed with apt-get if missing),
# python3, curl. Uses 10.77.0.0/24, namespaces tern-n1..3 and the bridge ternbr0; removes them
# on exit. The release binary is built if missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
mode=${1:-cut-node}
case $mode in
    cut-node | isolate-leader) ;;
    *)
        echo "usage: $0 [cut-node | isolate-leader]" >&2
        exit 64
        ;;
esac
skip() {
    echo "netns_cluster: skipped: $*"
    exit 0
}
[ "$(id -u)" = 0 ] || skip "needs root for ip netns and nft"
command -v ip > /dev/null || skip "no iproute2"
if ! command -v nft > /dev/null; then
    apt-get install -y -q nftables > /dev/null 2>&1 || skip "nftables is missing and apt-get install nftables failed"
fi
ip netns add tern-probe 2> /dev/null || skip "cannot create network namespaces"
ip netns del tern-probe

bin=target/release/tern
load=target/release/tern-load
[ -x "$bin" ] && [ -x "$load" ] || cargo build --release -p tern -p tern-load
state=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill -9 "$pid" 2> /dev/null || true
        wait "$pid" 2> /dev/null || true
    done
    for i in 1 2 3; do
        ip netns del "tern-n$i" 2> /dev/null || true
        ip link del "tn$i-br" 2> /dev/null || true
    done
    ip link del ternbr0 2> /dev/null || true
    rm -rf "$state"
}
trap cleanup EXIT

ip link add ternbr0 type bridge
ip link set ternbr0 up
for i in 1 2 3; do
    ip netns add "tern-n$i"
    ip link add "tn$i" type veth peer name "tn$i-br"
    ip link set "tn$i" netns "tern-n$i"
    ip link set "tn$i-br" master ternbr0 up
    ip -n "tern-n$i" addr add "10.77.0.$i/24" dev "tn$i"
    ip -n "tern-n$i" link set "tn$i" up
    ip -n "tern-n$i" link set lo up
done

head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$state/secret"
# The mesh runs over mutual TLS with certificates from a CA of the test's own; the phone and
# media ports stay plain text, as the [tls] section says.
for i in 1 2 3; do
    "$bin" certs --dir "$state/certs" --node "tern-n$i" --host "10.77.0.$i" > /dev/null
done
for i in 1 2 3; do
    sed -e "s|127.0.0.1:7400|10.77.0.$i:7400|" -e "s|127.0.0.1:7401|10.77.0.$i:7401|" \
        -e "s|127.0.0.1:7402|10.77.0.$i:7402|" -e "s|^data_dir = .*|data_dir = \"$state/n$i\"|" \
        cluster.toml > "$state/n$i.toml"
    cat >> "$state/n$i.toml" << TOML

[cluster]
name = "netns"
node = $i
listen = "10.77.0.$i:7403"
seeds = [
    { node = 1, addr = "10.77.0.1:7403" },
    { node = 2, addr = "10.77.0.2:7403" },
    { node = 3, addr = "10.77.0.3:7403" },
]
secret_file = "$state/secret"

[tls]
ca_file = "$state/certs/ca.crt"
mesh_cert_file = "$state/certs/tern-n$i.crt"
mesh_key_file = "$state/certs/tern-n$i.key"
plain = ["client", "media"]
TOML
    ip netns exec "tern-n$i" "$bin" serve --config "$state/n$i.toml" > "$state/n$i.log" 2>&1 &
    pids+=($!)
done
for i in 1 2 3; do
    for _ in $(seq 100); do grep -q "tern ready" "$state/n$i.log" && break; sleep 0.1; done
    grep -q "tern ready" "$state/n$i.log" || { cat "$state/n$i.log"; echo "node $i did not start"; exit 1; }
done

# Fetches every node's /cluster (from inside its namespace) into $state/view-N.json.
fetch() {
    for i in 1 2 3; do
        ip netns exec "tern-n$i" curl -s -m 2 "http://10.77.0.$i:7401/cluster" > "$state/view-$i.json" || true
    done
}
# Polls until cluster_view.py accepts the check on the given nodes; prints the seconds it took.
until_view() {
    local what=$1 nodes=$2
    shift 2
    local start files
    start=$(date +%s%N)
    for _ in $(seq 300); do
        fetch
        files=()
        for i in $nodes; do files+=("$state/view-$i.json"); done
        if python3 loadtest/scripts/cluster_view.py "$@" "${files[@]}" > "$state/check.txt" 2>&1; then
            cat "$state/check.txt"
            echo "== $what after $((($(date +%s%N) - start) / 1000000)) ms"
            return 0
        fi
        sleep 0.1
    done
    cat "$state/check.txt"
    echo "== $what: not within 30 s"
    exit 1
}

until_view "one map on all three nodes, every slot placed" "1 2 3" --agree --placed \
    --state 1=active --state 2=active --state 3=active
cut_node3() {
    ip netns exec tern-n3 nft -f - << 'NFT'
table inet ternpart {
    chain input { type filter hook input priority 0; ip saddr { 10.77.0.1, 10.77.0.2 } drop; }
    chain output { type filter hook output priority 0; ip daddr { 10.77.0.1, 10.77.0.2 } drop; }
}
NFT
}

# Polls until every slot group in the given node's view is led by one of LEADERS; prints the
# milliseconds it took.
until_groups_led_by() {
    local node=$1 leaders=$2 start
    start=$(date +%s%N)
    for _ in $(seq 600); do
        fetch
        if python3 - "$state/view-$node.json" "$leaders" << 'PY'
import json, sys
view = json.load(open(sys.argv[1]))
leaders = {int(x) for x in sys.argv[2].split(",")}
groups = view.get("slot_groups") or []
sys.exit(0 if groups and all(g["leader"] in leaders for g in groups) else 1)
PY
        then
            echo $((($(date +%s%N) - start) / 1000000))
            return 0
        fi
        sleep 0.1
    done
    echo "never"
    return 1
}

if [[ $mode == cut-node ]]; then
    echo "-- cutting node 3 off (nft drop rules in its namespace)"
    cut_node3
    until_view "node 3 marked down by nodes 1 and 2" "1 2" --agree --state 3=down
    echo "-- healing the cut"
    ip netns exec tern-n3 nft delete table inet ternpart
    until_view "maps equal again, node 3 active" "1 2 3" --agree --placed \
        --state 1=active --state 2=active --state 3=active
    echo "netns_cluster: ok"
    exit 0
fi

# isolate-leader: every group led by its preferred member, the three views agreeing.
for _ in $(seq 300); do
    fetch
    if python3 - "$state/view-1.json" "$state/view-2.json" "$state/view-3.json" << 'PY'
import json, sys
views = [json.load(open(p)) for p in sys.argv[1:]]
leaders = [{g["group"]: g["leader"] for g in v.get("slot_groups") or []} for v in views]
led3 = sum(1 for leader in leaders[2].values() if leader == 3)
ok = leaders[0] and leaders[0] == leaders[1] == leaders[2] and led3 >= 2
sys.exit(0 if ok and all(leader is not None for leader in leaders[0].values()) else 1)
PY
    then
        break
    fi
    sleep 0.1
done
sleep 1
echo "== every slot group has a leader the three nodes agree on; node 3 leads two"
load_start=$(date +%s%N)
ip netns exec tern-n3 "$load" chat --server 10.77.0.3:7400 --config "$state/n3.toml" \
    --connections 20 --rate 400 --duration 30 > "$state/load.txt" 2> "$state/load.err" &
load_pid=$!
pids+=("$load_pid")
sleep 8
echo "-- cutting node 3 off (nft drop rules in its namespace) while its phones send"
cut_at=$(date +%s%N)
cut_node3
took=$(until_groups_led_by 1 "1,2") || { echo "nodes 1 and 2 did not lead every group"; exit 1; }
elected_at=$(date +%s%N)
echo "== nodes 1 and 2 lead every slot group $took ms after the cut"
sleep 8
echo "-- healing the cut"
ip netns exec tern-n3 nft delete table inet ternpart
wait "$load_pid" || true
if ! grep -q '^sent:' "$state/load.txt"; then
    echo "tern-load in node 3's namespace gave no report:"
    tail -5 "$state/load.err"
    exit 1
fi
# Seconds of the load (tern-load's progress lines) that started after the election.
after=$(((elected_at - load_start) / 1000000000 + 1))
cut_s=$(((cut_at - load_start) / 1000000000))
python3 - "$state/load.err" "$cut_s" "$after" << 'PY'
import re, sys
lines = open(sys.argv[1], errors="replace").read().replace("\r", "\n").splitlines()
cut, after = int(sys.argv[2]), int(sys.argv[3])
acked = {}
for line in lines:
    m = re.search(r"\[chat\s+(\d+)s running\].*acked (\d+)/s", line)
    if m:
        acked[int(m.group(1))] = int(m.group(2))
late = {s: n for s, n in acked.items() if s > after and n > 0 and s <= after + 7}
print(f"== acks per second by node 3: before the cut {[acked.get(s) for s in range(max(1, cut - 3), cut + 1)]}, "
      f"after the election (s {after + 1}-{after + 7}) {[acked.get(s) for s in range(after + 1, after + 8)]}")
if late:
    print(f"node 3 acked messages after the election: {late}")
    sys.exit(1)
PY
grep -E '^(sent|acked|delivered|lost|duplicates|refused):' "$state/load.txt" | tr '\n' ' '
echo
grep -q '^lost: 0$' "$state/load.txt" && grep -q '^duplicates: 0$' "$state/load.txt" || {
    echo "the phones on node 3 lost or doubled messages"
    exit 1
}
took=$(until_groups_led_by 3 "1,2,3") || true
for _ in $(seq 600); do
    fetch
    if python3 - "$state/view-1.json" "$state/view-2.json" "$state/view-3.json" << 'PY'
import json, sys
views = [json.load(open(p)) for p in sys.argv[1:]]
applied = [{g["group"]: g["applied"] for g in v.get("slot_groups") or []} for v in views]
led3 = sum(1 for g in views[2].get("slot_groups") or [] if g["leader"] == 3)
sys.exit(0 if applied[0] and applied[0] == applied[1] == applied[2] and led3 >= 2 else 1)
PY
    then
        echo "== after the heal node 3 leads its groups again and all three applied the same last entry of every group (no divergence)"
        echo "netns_cluster: ok"
        exit 0
    fi
    sleep 0.1
done
echo "the three nodes did not converge within 60 s"
exit 1
