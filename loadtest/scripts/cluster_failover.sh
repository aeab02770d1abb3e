#!/usr/bin/env bash
# kill -9 of the metadata leader of a local three-node cluster (loadtest/scripts/cluster.sh):
# prints how long the other two took to elect a leader and serve the map again, restarts the
# killed node and prints how long it took to rejoin with the same map (and be marked active).
# Usage: loadtest/scripts/cluster_failover.sh   (starts `cluster.sh up 3` when nothing runs)
set -euo pipefail
cd "$(dirname "$0")/../.."
state=${CLUSTER_DIR:-./data/cluster}
admin() { echo "http://127.0.0.1:$((7600 + 10 * $1 + 1))/cluster"; }
field() { # field NODE EXPR: a Python expression over the node's /cluster JSON `v`
    curl -s -m 1 "$(admin "$1")" | python3 -c "import json, sys; v = json.load(sys.stdin); print($2)" 2> /dev/null
}
ms_since() { echo $((($(date +%s%N) - $1) / 1000000)); }

[[ -f $state/node-1/pid ]] || loadtest/scripts/cluster.sh up 3
loadtest/scripts/cluster.sh status > /dev/null || { sleep 3; loadtest/scripts/cluster.sh status; }
leader=$(field 1 "v['leader']")
term=$(field 1 "v['term']")
version=$(field 1 "v['map']['version']")
others=$(echo 1 2 3 | tr ' ' '\n' | grep -vx "$leader" | tr '\n' ' ')
echo "leader $leader in term $term, map v$version; kill -9 of node $leader"
loadtest/scripts/cluster.sh kill "$leader"
start=$(date +%s%N)
while :; do
    views=()
    for node in $others; do views+=("$(admin "$node")"); done
    new=$(field "${others%% *}" "v['leader'] if v['term'] > $term else ''")
    if [[ -n $new && $new != "$leader" ]] &&
        python3 loadtest/scripts/cluster_view.py --agree "${views[@]}" > /dev/null 2>&1; then
        break
    fi
    (($(ms_since "$start") < 30000)) || { echo "no new leader within 30 s"; exit 1; }
    sleep 0.05
done
echo "new leader $new after $(ms_since "$start") ms (both survivors agree on leader, term and map)"
until python3 loadtest/scripts/cluster_view.py --state "$leader=down" "${views[@]}" > /dev/null 2>&1; do
    (($(ms_since "$start") < 30000)) || { echo "node $leader not marked down within 30 s"; exit 1; }
    sleep 0.05
done
echo "node $leader marked down after $(ms_since "$start") ms"
loadtest/scripts/cluster.sh status || true
restart=$(date +%s%N)
loadtest/scripts/cluster.sh start "$leader"
until python3 loadtest/scripts/cluster_view.py --agree --placed --state "$leader=active" \
    "$(admin 1)" "$(admin 2)" "$(admin 3)" > /dev/null 2>&1; do
    (($(ms_since "$restart") < 30000)) || { echo "node $leader did not rejoin within 30 s"; exit 1; }
    sleep 0.05
done
echo "node $leader rejoined, active, with the same map $(ms_since "$restart") ms after its restart"
loadtest/scripts/cluster.sh status
