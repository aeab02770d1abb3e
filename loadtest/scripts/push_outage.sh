#!/usr/bin/env bash
# Chat while pushes flow, with the push gateway up and then down for 30 s, as in
# docs/benchmarks.md ("Push notifications").
# Usage: loadtest/scripts/push_outage.sh [ROUNDS]
# Each run starts a fresh node on loadtest/bench.toml plus a [push] section (gorush format,
# queue 1000, retries every 2 s at most), then at the same time:
#   tern-load push: 20,000 devices away, one message each at 400/s (50 s), the stand-in gateway
#     up throughout (run "up") or down from second 10 to second 40 (run "down");
#   tern-load chat: 200 phones at 10,000 msgs/s for 40 s, measured with --server-pid.
# Prints per run: the chat figures (msgs/s, p50/p99 ms, server CPU per message incl. the push
# work) and the push figures (pushes, devices never pushed, send-to-push p50/p99, and from the
# node's /metrics: pushes put back while the queue was full, dead letters, retries).
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-1}
tern=${TERN:-target/release/tern}
[ -n "${SKIP_BUILD:-}" ] || cargo build --release -q -p tern -p tern-load
work=$(mktemp -d)
trap 'kill -9 "${pid:-0}" 2> /dev/null || true; rm -rf "$work"' EXIT
cp loadtest/bench.toml "$work/node.toml"
printf '\n[push]\ngateway = "gorush"\nurl = "http://127.0.0.1:8088/api/push"\nqueue = 1000\nretry_max_ms = 2000\n' \
    >> "$work/node.toml"
metric() { curl -s 127.0.0.1:7501/metrics | awk -v m="$1" '$1 == m { print $2 }'; }
run() {
    local kind=$1 outage=()
    [ "$kind" = down ] && outage=(--gateway-down-at 10 --gateway-down-for 30)
    rm -rf "$work/data"
    MIMALLOC_PURGE_DELAY=0 "$tern" serve --config "$work/node.toml" --data-dir "$work/data" \
        > "$work/server.log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do grep -q "tern ready" "$work/server.log" && break; sleep 0.2; done
    target/release/tern-load push --server 127.0.0.1:7500 --config "$work/node.toml" \
        --devices 20000 --messages 20000 --senders 4 --rate 400 --settle-secs 5 \
        "${outage[@]}" > "$work/push.json" 2> "$work/push.err" &
    local push=$!
    # Registration first (about 20,000 logins), then the chat beside the pushes.
    while ! grep -q "messages from" "$work/push.err"; do sleep 0.5; done
    target/release/tern-load chat --server 127.0.0.1:7500 --config "$work/node.toml" \
        --connections 200 --rate 10000 --duration 40 --json --server-pid "$pid" 2> /dev/null \
        | tail -1 > "$work/chat.json"
    wait "$push" || true
    python3 - "$kind" "$work/chat.json" "$work/push.json" \
        "$(metric tern_push_dead_letters_total)" "$(metric tern_push_retries_total)" \
        "$(metric tern_push_deferred_total)" <<'PY'
import json, sys
kind, chat, push, dead, retries, deferred = sys.argv[1:]
c = json.loads(open(chat).read())
p = json.loads(open(push).read().strip().splitlines()[-1])
print(f"{kind:4s} chat {round(c['msgs_per_sec'])} msgs/s p50 {c['p50_ms']} p99 {c['p99_ms']} ms "
      f"{c['server_cpu_us_per_msg']} us/msg lost {c['lost']} | pushes {p['pushes']} "
      f"never pushed {p['devices_never_pushed']} duplicates {p['duplicates']} "
      f"p50 {p['p50_ms']} p99 {p['p99_ms']} ms | put back {deferred} dead letters {dead} "
      f"retries {retries}")
PY
    kill -9 "$pid"
    wait "$pid" 2> /dev/null || true
}
for _ in $(seq 1 "$rounds"); do
    run up
    run down
done
