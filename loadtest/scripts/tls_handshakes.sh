#!/usr/bin/env bash
# Server CPU per full TLS 1.3 handshake, by key exchange group, for tern and mosquitto serving
# the same certificate (`tern certs`): `openssl s_time -new` opens one connection after the
# other for SECONDS, each a full handshake then a close (no login), once per group; the
# server's CPU time is read from /proc before and after. Phones' TLS stacks (BoringSSL, Apple's)
# offer X25519 first, as tern's own client configuration does (rustls' ring provider lists
# secp384r1 first, and the server follows the client's order).
#
# Usage (as root on Debian, from anywhere): loadtest/scripts/tls_handshakes.sh [SECONDS]
# Needs mosquitto and openssl (installed with apt-get when missing) and target/release/tern
# (CARGO_TARGET_DIR is honoured). Ports: TERN_PORT (17600, admin +1, media +2), MQTT_PORT
# (18840). Prints one line per server and group.
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-10}
TERN=${CARGO_TARGET_DIR:-target}/release/tern
TERN_PORT=${TERN_PORT:-17600}
MQTT_PORT=${MQTT_PORT:-18840}
PATH=$PATH:/usr/sbin:/sbin
for tool in mosquitto openssl; do
    command -v "$tool" > /dev/null || apt-get install -y -qq "$tool" > /dev/null
done
[ -x "$TERN" ] || { echo "tls_handshakes: build $TERN first" >&2; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2> /dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2> /dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

"$TERN" certs --dir "$work/certs" --node tern-1 > /dev/null
if [ "$(id -u)" = 0 ] && id mosquitto > /dev/null 2>&1; then
    # As root, mosquitto reads its key after dropping to the mosquitto user.
    install -m 600 -o mosquitto -g mosquitto "$work/certs/tern-1.key" "$work/mosquitto.key"
    chmod 755 "$work"
else
    install -m 600 "$work/certs/tern-1.key" "$work/mosquitto.key"
fi
sed -e "s/127\.0\.0\.1:7500/127.0.0.1:$TERN_PORT/" \
    -e "s/127\.0\.0\.1:7501/127.0.0.1:$((TERN_PORT + 1))/" \
    -e "s/127\.0\.0\.1:7502/127.0.0.1:$((TERN_PORT + 2))/" loadtest/bench.toml > "$work/tern.toml"
cat >> "$work/tern.toml" << EOF

[tls]
cert_file = "$work/certs/tern-1.crt"
key_file = "$work/certs/tern-1.key"
EOF
cat > "$work/mosquitto.conf" << EOF
listener $MQTT_PORT 127.0.0.1
allow_anonymous true
persistence false
cafile $work/certs/ca.crt
certfile $work/certs/tern-1.crt
keyfile $work/mosquitto.key
tls_version tlsv1.3
log_dest stderr
log_type error
EOF
MIMALLOC_PURGE_DELAY=0 "$TERN" serve --config "$work/tern.toml" --data-dir "$work/data" \
    > "$work/tern.log" 2>&1 &
pids+=($!)
tern_pid=$!
mosquitto -c "$work/mosquitto.conf" > "$work/mosquitto.log" 2>&1 &
pids+=($!)
mqtt_pid=$!
for _ in $(seq 100); do grep -q "^tern ready" "$work/tern.log" && break; sleep 0.2; done
sleep 0.5

# cpu_us PID: user + system CPU time of the process, in microseconds.
cpu_us() {
    awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) * 1e6 / hz }' "/proc/$1/stat"
}

for server in tern mosquitto; do
    if [ "$server" = tern ]; then pid=$tern_pid port=$TERN_PORT; else pid=$mqtt_pid port=$MQTT_PORT; fi
    for group in X25519 P-256 P-384; do
        cat > "$work/openssl-$group.cnf" << EOF
openssl_conf = init
[init]
ssl_conf = ssl
[ssl]
system_default = groups
[groups]
Groups = $group
EOF
        before=$(cpu_us "$pid")
        out=$(OPENSSL_CONF="$work/openssl-$group.cnf" openssl s_time -connect "127.0.0.1:$port" \
            -new -tls1_3 -CAfile "$work/certs/ca.crt" -verify 1 -time "$seconds" 2> /dev/null |
            grep -m1 "real seconds")
        after=$(cpu_us "$pid")
        count=$(echo "$out" | awk '{ print $1 }')
        wall=$(echo "$out" | awk '{ print $4 }')
        python3 - "$server" "$group" "$count" "$wall" "$before" "$after" << 'PY'
import sys
server, group, count, wall, before, after = sys.argv[1:]
count, wall = int(count), float(wall)
cpu = float(after) - float(before)
print(f"{server:9} {group:6} {count:6} handshakes in {wall:.1f} s ({count / wall:7.1f}/s), "
      f"server CPU {cpu / max(count, 1):7.1f} µs per handshake")
PY
    done
done
