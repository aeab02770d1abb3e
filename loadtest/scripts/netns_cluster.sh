#!/usr/bin/env bash
# Three tern nodes as real processes in three network namespaces joined by a bridge: waits for one
# cluster map on all three, cuts node 3 off with nftables drop rules, shows it marked down by the
# other two (with the time it took), heals the cut and shows the three maps equal again.
# Usage: loadtest/scripts/netns_cluster.sh        (as root; exits 0 with "skipped: ..." where it
#                                                   cannot run: no root, no netns, no nftables)
# Needs: root, iproute2 (`ip netns`, veth, bridge), nftables (installed with apt-get if missing),
# python3, curl. Uses 10.77.0.0/24, namespaces tern-n1..3 and the bridge ternbr0; removes them
# on exit. The release binary is built if missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
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
[ -x "$bin" ] || cargo build --release -p tern
state=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill -9 "$pid" 2> /dev/null || true
        wait "$pid" 2> /dev/null || true
    done
    for i in 1 2 3; do ip netns del "tern-n$i" 2> /dev/null || true; done
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
echo "-- cutting node 3 off (nft drop rules in its namespace)"
ip netns exec tern-n3 nft -f - << 'NFT'
table inet ternpart {
    chain input { type filter hook input priority 0; ip saddr { 10.77.0.1, 10.77.0.2 } drop; }
    chain output { type filter hook output priority 0; ip daddr { 10.77.0.1, 10.77.0.2 } drop; }
}
NFT
until_view "node 3 marked down by nodes 1 and 2" "1 2" --agree --state 3=down
echo "-- healing the cut"
ip netns exec tern-n3 nft delete table inet ternpart
until_view "maps equal again, node 3 active" "1 2 3" --agree --placed \
    --state 1=active --state 2=active --state 3=active
echo "netns_cluster: ok"
