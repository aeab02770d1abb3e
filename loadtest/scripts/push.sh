#!/usr/bin/env bash
# Push notifications under load, as in docs/benchmarks.md: a fresh node on loadtest/bench.toml
# with a [push] section pointing at tern-load's stand-in gateway, then `tern-load push`.
# Usage: loadtest/scripts/push.sh [FORMAT] [TERN-LOAD PUSH ARGS...]
#   FORMAT: gorush (default) or matrix; e.g. loadtest/scripts/push.sh gorush --devices 5000
#   --messages 50000 --rate 5000
# Prints tern-load's JSON report (pushes per message, send-to-push p50/p99, duplicates).
# TERN=path picks the server binary (default target/release/tern).
set -euo pipefail
cd "$(dirname "$0")/../.."
format=${1:-gorush}
shift || true
tern=${TERN:-target/release/tern}
[ -n "${SKIP_BUILD:-}" ] || cargo build --release -q -p tern -p tern-load
work=$(mktemp -d)
trap 'kill -9 "${pid:-0}" 2> /dev/null || true; rm -rf "$work"' EXIT
case "$format" in
    gorush) path=/api/push ;;
    matrix) path=/_matrix/push/v1/notify ;;
    *) echo "format must be gorush or matrix" >&2; exit 2 ;;
esac
cp loadtest/bench.toml "$work/node.toml"
printf '\n[push]\ngateway = "%s"\nurl = "http://127.0.0.1:8088%s"\n' "$format" "$path" \
    >> "$work/node.toml"
MIMALLOC_PURGE_DELAY=0 "$tern" serve --config "$work/node.toml" --data-dir "$work/data" \
    > "$work/server.log" 2>&1 &
pid=$!
for _ in $(seq 100); do grep -q "tern ready" "$work/server.log" && break; sleep 0.2; done
target/release/tern-load push --server 127.0.0.1:7500 --config "$work/node.toml" \
    --gateway-listen 127.0.0.1:8088 --format "$format" --server-pid "$pid" "$@"
