#!/usr/bin/env bash
# Heap profile of a node under load, with heaptrack, as in docs/benchmarks.md.
#
# Usage: loadtest/scripts/heap_profile.sh chat [RATE] [SECONDS]
#          allocations per delivered message (chat, 200 phones, RATE msgs/s, default 10000, 5 s)
#        loadtest/scripts/heap_profile.sh idle [CONNECTIONS]
#          heap held per idle logged-in phone at the peak (default 10000 connections)
# Either prints the total and the tern call sites that account for it (innermost tern frame).
#
# heaptrack follows malloc, so the node is built with `--features system-alloc` (the C library's
# allocator instead of mimalloc) into target/heap-profile; counts of allocations do not depend on
# the allocator, bytes held depend on it only through size rounding. Installs heaptrack (Debian)
# when missing. Uses ports 7500-7502 (loadtest/bench.toml).
#
# TLS=1: the node serves its client port under TLS 1.3 (a certificate from `tern certs`, as
# compare.sh does) and tern-load connects with --tls. CARGO_TARGET_DIR is honoured for
# tern-load; HEAP_TARGET_DIR (default target/heap-profile) holds the system-alloc build.
set -euo pipefail
cd "$(dirname "$0")/../.."
mode=${1:?usage: heap_profile.sh chat [RATE] [SECONDS] | idle [CONNECTIONS]}
command -v heaptrack > /dev/null || apt-get install -y heaptrack > /dev/null
heap_target=${HEAP_TARGET_DIR:-target/heap-profile}
cargo build --release -p tern --features system-alloc --target-dir "$heap_target"
cargo build --release -p tern-load
work=$(mktemp -d)
config=loadtest/bench.toml
load=("${CARGO_TARGET_DIR:-target}/release/tern-load")
if [ "${TLS:-0}" = 1 ]; then
    "$heap_target/release/tern" certs --dir "$work/certs" --node tern-1 > /dev/null
    config=$work/bench.toml
    cat loadtest/bench.toml - > "$config" << EOF

[tls]
cert_file = "$work/certs/tern-1.crt"
key_file = "$work/certs/tern-1.key"
EOF
    tls=(--tls --ca-file "$work/certs/ca.crt")
else
    tls=()
fi
heaptrack -o "$work/profile" "$heap_target/release/tern" serve \
    --config "$config" --data-dir "$work/data" > "$work/server.log" 2>&1 &
for _ in $(seq 100); do grep -q "tern ready" "$work/server.log" && break; sleep 0.2; done
pid=$(pgrep -f "^$heap_target/release/tern serve" | head -1)
if [ "$mode" = chat ]; then
    count=$("${load[@]}" chat --server 127.0.0.1:7500 --config "$config" "${tls[@]}" \
        --connections 200 --rate "${2:-10000}" --duration "${3:-5}" --json 2> /dev/null |
        tail -1 | python3 -c "import json,sys; print(json.loads(sys.stdin.read())['delivered'])")
    cost=allocations unit="allocations per delivered message"
else
    count=${2:-10000}
    "${load[@]}" idle --server 127.0.0.1:7500 --config "$config" "${tls[@]}" \
        --connections "$count" --duration 5 --json > /dev/null 2>&1
    cost=peak unit="bytes of heap at the peak per idle connection (the node's fixed heap included)"
fi
kill -INT "$pid"
while kill -0 "$pid" 2> /dev/null; do sleep 0.5; done
sleep 2
heaptrack_print -f "$work"/profile.*zst --flamegraph-cost-type "$cost" -F "$work/stacks.txt" > /dev/null
python3 - "$work/stacks.txt" "$count" "$unit" <<'PY'
import collections, glob, os, re, sys
path, count, unit = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ours = {os.path.basename(p) for p in glob.glob('src/**/*.rs', recursive=True)}
ours -= {'mod.rs', 'lib.rs', 'main.rs', 'error.rs', 'config.rs'}
sites = collections.Counter()
for line in open(path):
    stack, _, cost = line.rstrip().rpartition(' ')
    site = 'outside tern (runtime, sled, metrics, start-up)'
    for frame in reversed(stack.split(';')):
        found = re.search(r'\(([a-z_0-9]+\.rs)\)$', frame)
        if found and found.group(1) in ours:
            site = frame
            break
    sites[site] += int(cost)
print(f'{sum(sites.values()) / count:.2f} {unit} ({count})')
for site, cost in sites.most_common(20):
    print(f'{cost / count:10.2f}  {site[:90]}')
PY
rm -rf "$work"
