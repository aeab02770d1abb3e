#!/usr/bin/env bash
# Media in a local three-node replicated cluster (loadtest/scripts/cluster.sh up 3, replication
# 3, release binaries), in five demonstrations, each ending in PASS/FAIL lines:
#
#   1. tus-py (tuspy, pip-installed into a venv under the work directory when missing) uploads
#      FILES files of 1-5 MiB of random bytes through node 1; each downloads byte-identical
#      through nodes 2 and 3 with curl, with a range (bytes=1000-5000: 206 and the right slice)
#      and a 304 for its ETag. Prints the upload and download rates.
#   2. A 20 MiB upload is interrupted half-way on node 1 (tuspy with 1 MiB chunks, stop_at
#      10 MiB), resumed on node 2 (a new uploader HEADs node 2 for the offset): it completes and
#      its sha256 through node 3 equals the file's.
#   3. More uploads through node 1, then at once kill -9 of node 1 and its data directory wiped:
#      every object downloads byte-identical from nodes 2 and 3. Then a new machine comes back
#      the way docs/operations.md replaces a node that will not return: node 4 (SPARE_NODE)
#      starts empty as a spare, node 1 is removed once down (cluster.sh remove 1), node 4 takes
#      its place and copies its replicas from its peers. Prints the refill time (from the
#      removal until tern_media_refill_objects_total covers every object), objects and bytes
#      (tern_media_refill_bytes_total), and checks every object downloads byte-identical
#      through node 4 without a remote read (tern_media_remote_reads_total unchanged).
#   4. wrk on one popular object (a 64 KiB photo, inside the hot cache's object limit) through
#      the three live nodes at once: requests/s per node and each node's hot-cache hit ratio
#      over the run (tern_media_hot_cache_requests_total{result="hit"|"miss"}).
#   5. tern drain of node 2 while a 20 MiB upload runs through it (curl at 1 MiB/s) and
#      downloads go through it: every download succeeds (through node 3 when node 2 turns it
#      away), and the upload, finished or cut by the drain, completes through node 3 from the
#      offset node 3 reports, sha256 equal.
#
# Usage: loadtest/scripts/cluster_media.sh [FILES] [WRK_SECONDS] [WRK_CONNECTIONS] [WRK_THREADS]
#   default: 20 10 32 2
# Environment: CLUSTER_MEDIA_DIR (work directory, default ./data/cluster_media: the venv is kept
# there, each run's cluster and files go to a temporary directory under it, removed at the end
# unless KEEP=1), TERN (the binary; default: cargo build --release, then
# $CARGO_TARGET_DIR/release/tern), SPARE_NODE (the replacement's ordinal, default 4). Uses the
# fixed ports of cluster.sh (7600+10I..+3 for node I: 7610-7633 and the spare's). Installs wrk
# with apt-get when missing (needs root). Exits 1 when any check failed.
set -euo pipefail
cd "$(dirname "$0")/../.."

files=${1:-20}
wrk_seconds=${2:-10}
wrk_connections=${3:-32}
wrk_threads=${4:-2}
spare=${SPARE_NODE:-4}

work=${CLUSTER_MEDIA_DIR:-./data/cluster_media}
mkdir -p "$work"
work=$(realpath "$work")
if [[ -z ${TERN:-} ]]; then
    cargo build --release -p tern --bin tern >&2
    TERN=$(realpath "${CARGO_TARGET_DIR:-target}/release/tern")
fi
export TERN
tuspy=tuspy==1.1.0
venv=$work/venv-tuspy-1.1.0
python=$venv/bin/python

run=$(mktemp -d "$work/run.XXXXXX")
export CLUSTER_DIR=$run/cluster
export REPLICATION_FACTOR=3
export BASE_CONFIG=cluster.toml
wrk_pids=()

stop_nodes() { # SIGTERM to every node this run started, SIGKILL to those still there after 20 s
    local file pid waited=0 left
    for file in "$CLUSTER_DIR"/node-*/pid; do
        [[ -f $file ]] && kill -TERM "$(cat "$file")" 2> /dev/null || true
    done
    while ((waited < 200)); do
        left=0
        for file in "$CLUSTER_DIR"/node-*/pid; do
            [[ -f $file ]] && kill -0 "$(cat "$file")" 2> /dev/null && left=$((left + 1))
        done
        ((left > 0)) || break
        sleep 0.1
        waited=$((waited + 1))
    done
    for file in "$CLUSTER_DIR"/node-*/pid; do
        [[ -f $file ]] || continue
        pid=$(cat "$file")
        if kill -0 "$pid" 2> /dev/null; then
            # Seen with both island peers of a node gone: its shutdown does not finish.
            echo "${file%/pid} (pid $pid) still running 20 s after SIGTERM: killed" >&2
            kill -KILL "$pid" 2> /dev/null || true
        fi
        rm -f "$file"
    done
}

cleanup() {
    local pid
    for pid in "${wrk_pids[@]}"; do
        kill "$pid" 2> /dev/null || true
    done
    stop_nodes
    if [[ -n ${KEEP:-} ]]; then
        echo "kept $run" >&2
    else
        rm -rf "$run"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

failures=0
pass() { echo "PASS $*"; }
fail() {
    echo "FAIL $*"
    failures=$((failures + 1))
}

now() { date +%s.%N; }
since() { # since START: seconds from START to now, two decimals
    awk -v start="$1" -v end="$(now)" 'BEGIN { printf "%.2f", end - start }'
}
rate() { # rate BYTES SECONDS: MiB/s
    awk -v bytes="$1" -v seconds="$2" 'BEGIN { printf "%.1f", (seconds > 0 ? bytes / 1048576 / seconds : 0) }'
}
media_port() { echo $((7600 + 10 * $1 + 2)); }
admin_port() { echo $((7600 + 10 * $1 + 1)); }
mesh_port() { echo $((7600 + 10 * $1 + 3)); }

metric() { # metric NODE SERIES: its value on the node's /metrics (0 when absent)
    { curl -s --max-time 5 "http://127.0.0.1:$(admin_port "$1")/metrics" || true; } |
        awk -v series="$2" '$1 == series { value = $2 } END { print value + 0 }'
}

status_of() { # status_of NODE PATH OUT [CURL ARGS...]: GET through NODE into OUT; prints the status
    local node=$1 path=$2 out=$3
    shift 3
    curl -s -o "$out" -w '%{http_code}' --max-time 120 -H "Authorization: Bearer $token" "$@" \
        "http://127.0.0.1:$(media_port "$node")$path" || true
}

fetch() { # fetch NODE PATH OUT [CURL ARGS...]: status_of, asked again for up to 30 s while the
    # node answers 5xx or not at all (a cluster that just lost a node may turn it away a moment)
    local status tries=0
    while true; do
        status=$(status_of "$@")
        [[ $status == 5* || $status == 000 ]] && ((tries < 150)) || break
        tries=$((tries + 1))
        sleep 0.2
    done
    echo "$status"
}

check_object() { # check_object NODE PATH FILE: whole, range and 304 through NODE; 0 when all hold
    local node=$1 path=$2 file=$3 got=$run/got etag status
    status=$(fetch "$node" "$path" "$got")
    if [[ $status != 200 ]] || ! cmp -s "$got" "$file"; then
        echo "  $path through node $node: status $status, bytes $(stat -c %s "$got" 2> /dev/null || echo 0) of $(stat -c %s "$file"), $(cmp -s "$got" "$file" && echo same || echo different)" >&2
        return 1
    fi
    status=$(fetch "$node" "$path" "$got" -r 1000-5000)
    if [[ $status != 206 ]] || ! cmp -s "$got" <(tail -c +1001 "$file" | head -c 4001); then
        echo "  $path bytes=1000-5000 through node $node: status $status, wrong slice" >&2
        return 1
    fi
    etag="\"$(sha256sum "$file" | cut -d' ' -f1)\""
    status=$(fetch "$node" "$path" "$got" -H "If-None-Match: $etag")
    if [[ $status != 304 ]]; then
        echo "  $path If-None-Match through node $node: status $status, not 304" >&2
        return 1
    fi
}

check_all() { # check_all NODE LIST: every "path file" line of LIST checked through NODE
    local node=$1 list=$2 path file bad=0 count=0 bytes=0 start
    start=$(now)
    while read -r path file; do
        count=$((count + 1))
        bytes=$((bytes + $(stat -c %s "$file")))
        check_object "$node" "$path" "$file" || bad=$((bad + 1))
    done < "$list"
    if ((bad == 0)); then
        pass "$count objects download byte-identical through node $node, with ranges and 304 ($(rate "$bytes" "$(since "$start")") MiB/s over the checks)"
    else
        fail "$bad of $count objects do not download intact through node $node"
    fi
}

random_file() { # random_file PATH SIZE
    head -c "$2" /dev/urandom > "$1"
}

random_size() { # random_size MIN MAX
    echo $(($1 + ((RANDOM << 15) | RANDOM) % ($2 - $1 + 1)))
}

# --- tus-py ---------------------------------------------------------------------------------
if ! [[ -x $python ]] || ! "$python" -c 'import tusclient' 2> /dev/null; then
    echo "installing $tuspy into $venv" >&2
    python3 -m venv --clear "$venv"
    "$python" -m pip install --quiet --disable-pip-version-check --timeout 60 "$tuspy" >&2
fi
cat > "$run/upload.py" << 'PY'
# upload.py ENDPOINT TOKEN FILE...: uploads each file in 1 MiB chunks; prints "location file".
import sys
from tusclient import client

endpoint, token, paths = sys.argv[1], sys.argv[2], sys.argv[3:]
tus = client.TusClient(endpoint, headers={"Authorization": "Bearer " + token})
for path in paths:
    uploader = tus.uploader(path, chunk_size=1024 * 1024, metadata={"filetype": "application/octet-stream"})
    uploader.upload()
    location = uploader.url[uploader.url.index("/media/"):]
    print(location, path, flush=True)
PY
cat > "$run/interrupted.py" << 'PY'
# interrupted.py FIRST SECOND TOKEN FILE STOP_AT: uploads FILE through the endpoint FIRST up to
# STOP_AT and stops (the app is killed); a new uploader on SECOND asks it for the offset (HEAD)
# and finishes. Prints the offset the second endpoint reported and the location.
import sys
from tusclient import client

first, second, token, path, stop_at = sys.argv[1:6]
stop_at = int(stop_at)
headers = {"Authorization": "Bearer " + token}
chunk = 1024 * 1024
before = client.TusClient(first, headers=headers).uploader(path, chunk_size=chunk)
before.upload(stop_at=stop_at)
assert before.offset == stop_at, before.offset
location = before.url[before.url.index("/media/"):]
resumed = client.TusClient(second, headers=headers).uploader(
    path, chunk_size=chunk, url=second.rstrip("/").rsplit("/media", 1)[0] + location)
print("resumed_at", resumed.offset, flush=True)
resumed.upload()
print("finished_at", resumed.offset, flush=True)
print("location", location, flush=True)
PY

# --- the cluster ----------------------------------------------------------------------------
loadtest/scripts/cluster.sh up 3 > "$run/up.log" || {
    fail "the cluster did not start (see above)"
    exit 1
}
deadline=$(($(date +%s) + 120))
ready() {
    local node led=0
    loadtest/scripts/cluster.sh status > /dev/null 2>&1 || return 1
    for node in "$@"; do
        [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$(admin_port "$node")/readyz") == 200 ]] || return 1
        led=$((led + $(metric "$node" tern_slot_groups_led | cut -d. -f1)))
    done
    ((led >= 6)) # every slot group of the island has a leader
}
until ready 1 2 3; do
    if (($(date +%s) > deadline)); then
        fail "the cluster did not settle in 120 s (logs kept under $CLUSTER_DIR)"
        KEEP=1
        exit 1
    fi
    sleep 0.5
done
echo "three nodes up (replication 3), state under $CLUSTER_DIR"
token=$("$TERN" token --config "$CLUSTER_DIR/node-1/node.toml" --user alice --device phone)
objects=$run/objects # "location file" per uploaded object
: > "$objects"

# --- 1. uploads through node 1, downloads through nodes 2 and 3 -------------------------------
echo
echo "== 1. $files files of 1-5 MiB uploaded with tus-py through node 1, downloaded through nodes 2 and 3"
mkdir -p "$run/files"
batch=()
bytes=0
for i in $(seq 1 "$files"); do
    size=$(random_size 1048576 5242880)
    random_file "$run/files/one-$i" "$size"
    batch+=("$run/files/one-$i")
    bytes=$((bytes + size))
done
start=$(now)
if "$python" "$run/upload.py" "http://127.0.0.1:$(media_port 1)/media/" "$token" "${batch[@]}" \
    > "$run/one.list" 2> "$run/one.err"; then
    seconds=$(since "$start")
    pass "$files uploads ($((bytes / 1048576)) MiB) through node 1 in $seconds s ($(rate "$bytes" "$seconds") MiB/s)"
else
    fail "tus-py upload through node 1: $(tail -3 "$run/one.err")"
fi
cat "$run/one.list" >> "$objects"
check_all 2 "$run/one.list"
check_all 3 "$run/one.list"

# --- 2. interrupted on node 1, resumed on node 2 ---------------------------------------------
echo
echo "== 2. a 20 MiB upload interrupted half-way on node 1, resumed on node 2"
big=$run/files/big
random_file "$big" $((20 * 1048576))
half=$((10 * 1048576))
if "$python" "$run/interrupted.py" "http://127.0.0.1:$(media_port 1)/media/" \
    "http://127.0.0.1:$(media_port 2)/media/" "$token" "$big" "$half" \
    > "$run/two.out" 2> "$run/two.err"; then
    resumed_at=$(awk '$1 == "resumed_at" { print $2 }' "$run/two.out")
    finished_at=$(awk '$1 == "finished_at" { print $2 }' "$run/two.out")
    location=$(awk '$1 == "location" { print $2 }' "$run/two.out")
    if [[ $resumed_at == "$half" ]]; then
        pass "node 2 reported offset $resumed_at, what node 1 had acked"
    else
        fail "node 2 reported offset $resumed_at; node 1 had acked $half"
    fi
    if [[ $finished_at == $((20 * 1048576)) ]]; then
        pass "the upload completed on node 2 at $finished_at bytes"
    else
        fail "the upload ended at $finished_at bytes"
    fi
    echo "$location $big" >> "$objects"
    status=$(fetch 3 "$location" "$run/got")
    want=$(sha256sum "$big" | cut -d' ' -f1)
    got=$(sha256sum "$run/got" | cut -d' ' -f1)
    if [[ $status == 200 && $got == "$want" ]]; then
        pass "sha256 through node 3 equals the file's ($want)"
    else
        fail "through node 3: status $status, sha256 $got, expected $want"
    fi
else
    fail "the interrupted upload: $(tail -3 "$run/two.err")"
fi

# --- 3. kill -9, disk lost, every object from the others; the replacement refills -------------
echo
echo "== 3. kill -9 of node 1 right after uploads, its data directory wiped; node $spare replaces it"
batch=()
for i in $(seq 1 8); do
    random_file "$run/files/three-$i" "$(random_size 65536 4194304)"
    batch+=("$run/files/three-$i")
done
if "$python" "$run/upload.py" "http://127.0.0.1:$(media_port 1)/media/" "$token" "${batch[@]}" \
    > "$run/three.list" 2> "$run/three.err"; then
    pass "${#batch[@]} more uploads acked through node 1"
else
    fail "tus-py upload through node 1: $(tail -3 "$run/three.err")"
fi
loadtest/scripts/cluster.sh kill 1 > /dev/null
rm -rf "$CLUSTER_DIR/node-1/data"
echo "node 1 killed (kill -9) and its data directory wiped"
cat "$run/three.list" >> "$objects"
count=$(wc -l < "$objects")
total_bytes=0
while read -r _ file; do
    total_bytes=$((total_bytes + $(stat -c %s "$file")))
done < "$objects"
check_all 2 "$objects"
check_all 3 "$objects"

# The new node: node 3's configuration with its own id, ordinal and ports (cluster.sh's scheme),
# itself among the seeds (the others' seeds do not name it: it announces itself).
mkdir -p "$CLUSTER_DIR/node-$spare/data"
sed -e "s|^id = .*|id = \"tern-$spare\"|" \
    -e "s|^client_addr = .*|client_addr = \"127.0.0.1:$((7600 + 10 * spare))\"|" \
    -e "s|^admin_addr = .*|admin_addr = \"127.0.0.1:$(admin_port "$spare")\"|" \
    -e "s|^listen_addr = .*|listen_addr = \"127.0.0.1:$(media_port "$spare")\"|" \
    -e "s|^node = .*|node = $spare|" \
    -e "s|^listen = .*|listen = \"127.0.0.1:$(mesh_port "$spare")\"|" \
    -e "s|^seeds = \\[\$|seeds = [\\n    { node = $spare, addr = \"127.0.0.1:$(mesh_port "$spare")\" },|" \
    "$CLUSTER_DIR/node-3/node.toml" > "$CLUSTER_DIR/node-$spare/node.toml"
loadtest/scripts/cluster.sh start "$spare" || {
    fail "node $spare did not start (see above)"
    exit 1
}
deadline=$(($(date +%s) + 120))
until loadtest/scripts/cluster.sh remove 1 > /dev/null 2>&1; do
    if (($(date +%s) > deadline)); then
        fail "node 1 could not be removed within 120 s (never marked down?)"
        break
    fi
    sleep 0.2
done
removed=$(now)
echo "node 1 removed; node $spare takes its place"
refill_seconds=""
deadline=$(($(date +%s) + 600))
while (($(date +%s) <= deadline)); do
    if (($(metric "$spare" tern_media_refill_objects_total | cut -d. -f1) >= count)); then
        refill_seconds=$(since "$removed")
        break
    fi
    sleep 0.2
done
refilled_objects=$(metric "$spare" tern_media_refill_objects_total)
refilled_bytes=$(metric "$spare" tern_media_refill_bytes_total)
if [[ -n $refill_seconds ]]; then
    pass "node $spare refilled $refilled_objects objects, $(awk -v b="$refilled_bytes" 'BEGIN { printf "%.1f", b / 1048576 }') MiB ($total_bytes bytes uploaded) in $refill_seconds s after the removal ($(rate "$refilled_bytes" "$refill_seconds") MiB/s)"
else
    fail "node $spare refilled $refilled_objects of $count objects within 600 s of the removal"
fi
if awk -v got="$refilled_bytes" -v want="$total_bytes" 'BEGIN { exit !(got >= want) }'; then
    pass "tern_media_refill_bytes_total $refilled_bytes covers the $total_bytes bytes uploaded"
else
    fail "tern_media_refill_bytes_total $refilled_bytes is short of the $total_bytes bytes uploaded"
fi
remote_before=$(metric "$spare" tern_media_remote_reads_total)
check_all "$spare" "$objects"
remote_after=$(metric "$spare" tern_media_remote_reads_total)
if [[ $remote_after == "$remote_before" ]]; then
    pass "node $spare served them from its own disk (tern_media_remote_reads_total stayed $remote_after)"
else
    fail "node $spare read from its peers while serving them (tern_media_remote_reads_total $remote_before -> $remote_after)"
fi
failed_refills=$(metric "$spare" tern_media_refill_failures_total)
echo "node $spare: refill failures $failed_refills"

# --- 4. wrk on one popular object through the three live nodes ---------------------------------
echo
echo "== 4. wrk on one popular 64 KiB object through nodes 2, 3 and $spare at once (${wrk_seconds} s, $wrk_connections connections each)"
if ! command -v wrk > /dev/null; then
    echo "installing wrk with apt" >&2
    apt-get install -y -qq wrk > /dev/null
fi
random_file "$run/files/popular" 65536
"$python" "$run/upload.py" "http://127.0.0.1:$(media_port 2)/media/" "$token" "$run/files/popular" \
    > "$run/popular.list" 2> "$run/popular.err" || true
read -r popular _ < "$run/popular.list" || popular=""
live=(2 3 "$spare")
if [[ -z $popular ]]; then
    fail "the popular object could not be uploaded: $(tail -3 "$run/popular.err")"
else
    declare -A hits_before misses_before
    for node in "${live[@]}"; do
        # One download each first, so every run measures a warm node.
        check_object "$node" "$popular" "$run/files/popular" ||
            fail "the popular object does not download through node $node"
        hits_before[$node]=$(metric "$node" 'tern_media_hot_cache_requests_total{result="hit"}')
        misses_before[$node]=$(metric "$node" 'tern_media_hot_cache_requests_total{result="miss"}')
    done
    for node in "${live[@]}"; do
        wrk -t "$wrk_threads" -c "$wrk_connections" -d "${wrk_seconds}s" \
            -H "Authorization: Bearer $token" "http://127.0.0.1:$(media_port "$node")$popular" \
            > "$run/wrk-$node" 2>&1 &
        wrk_pids+=($!)
    done
    for pid in "${wrk_pids[@]}"; do
        wait "$pid" || true
    done
    wrk_pids=()
    total=0
    for node in "${live[@]}"; do
        per_second=$(awk '$1 == "Requests/sec:" { print $2 }' "$run/wrk-$node")
        bad=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$run/wrk-$node")
        errors=$(awk '/Socket errors:/ { print }' "$run/wrk-$node")
        hits=$(awk -v a="$(metric "$node" 'tern_media_hot_cache_requests_total{result="hit"}')" -v b="${hits_before[$node]}" 'BEGIN { print a - b }')
        misses=$(awk -v a="$(metric "$node" 'tern_media_hot_cache_requests_total{result="miss"}')" -v b="${misses_before[$node]}" 'BEGIN { print a - b }')
        ratio=$(awk -v h="$hits" -v m="$misses" 'BEGIN { printf "%.4f", (h + m > 0 ? h / (h + m) : 0) }')
        echo "node $node: ${per_second:-0} requests/s, hot cache over the run: hits $hits, misses $misses, hit ratio $ratio (since start: $(metric "$node" tern_media_hot_cache_hit_ratio))${errors:+, $errors}"
        if [[ -n $per_second && -z $bad ]]; then
            pass "node $node served the popular object (no non-2xx answer)"
        else
            fail "node $node: ${bad:-0} non-2xx answers, $(tail -5 "$run/wrk-$node")"
        fi
        total=$(awk -v a="$total" -v b="${per_second:-0}" 'BEGIN { print a + b }')
    done
    echo "all three nodes: $total requests/s"
fi

# --- 5. a drain under an upload and downloads ---------------------------------------------------
echo
echo "== 5. tern drain of node 2 while a 20 MiB upload runs through it and downloads go through it"
random_file "$run/files/drained" $((20 * 1024 * 1024))
location=$(curl -sS -o /dev/null -w '%header{location}' -X POST "http://127.0.0.1:$(media_port 2)/media/" \
    -H "Tus-Resumable: 1.0.0" -H "Authorization: Bearer $token" -H "Upload-Length: $((20 * 1024 * 1024))")
if [[ -z $location ]]; then
    fail "the upload to be drained could not be created"
else
    # About 20 s at 1 MiB/s: the drain (its connections get limits.shutdown_grace_secs) cuts it.
    curl -sS -o /dev/null -w '%{http_code}' -X PATCH "http://127.0.0.1:$(media_port 2)$location" \
        -H "Tus-Resumable: 1.0.0" -H "Authorization: Bearer $token" -H "Upload-Offset: 0" \
        -H "Content-Type: application/offset+octet-stream" --limit-rate 1M \
        --data-binary @"$run/files/drained" > "$run/drain.status" 2> /dev/null &
    patch_pid=$!
    downloads=0 retried=0 lost=0
    (
        # Downloads through node 2 all along; one that fails is retried through node 3.
        while [[ ! -e $run/drain.done ]]; do
            read -r path file < <(shuf -n 1 "$objects")
            status=$(status_of 2 "$path" "$run/drain.got")
            if [[ $status == 200 ]] && cmp -s "$run/drain.got" "$file"; then
                echo ok
            else
                status=$(status_of 3 "$path" "$run/drain.got")
                if [[ $status == 200 ]] && cmp -s "$run/drain.got" "$file"; then
                    echo retried
                else
                    echo lost
                fi
            fi
            sleep 0.05
        done
    ) > "$run/drain.downloads" &
    downloads_pid=$!
    sleep 3
    drain_start=$(now)
    loadtest/scripts/cluster.sh drain 2 > "$run/drain.out" 2>&1 || true
    echo "node 2 drained in $(since "$drain_start") s: $(tail -1 "$run/drain.out")"
    wait "$patch_pid" || true
    touch "$run/drain.done"
    wait "$downloads_pid" || true
    downloads=$(grep -c . "$run/drain.downloads" || true)
    retried=$(grep -c '^retried' "$run/drain.downloads" || true)
    lost=$(grep -c '^lost' "$run/drain.downloads" || true)
    if ((lost == 0 && downloads > 0)); then
        pass "$downloads downloads during the drain: $retried failed over to node 3 and succeeded there, none lost"
    else
        fail "$lost of $downloads downloads failed through node 2 and through node 3"
    fi
    offset=$(curl -sS -I "http://127.0.0.1:$(media_port 3)$location" -H "Tus-Resumable: 1.0.0" \
        -H "Authorization: Bearer $token" | tr -d '\r' | awk 'tolower($1) == "upload-offset:" { print $2 }')
    echo "the upload's PATCH through node 2 ended with status $(cat "$run/drain.status"); node 3 says offset ${offset:-?} of $((20 * 1024 * 1024))"
    if [[ -n $offset && $offset -lt $((20 * 1024 * 1024)) ]]; then
        tail -c +$((offset + 1)) "$run/files/drained" > "$run/drained.rest"
        curl -sS -o /dev/null -X PATCH "http://127.0.0.1:$(media_port 3)$location" \
            -H "Tus-Resumable: 1.0.0" -H "Authorization: Bearer $token" -H "Upload-Offset: $offset" \
            -H "Content-Type: application/offset+octet-stream" --data-binary @"$run/drained.rest"
    fi
    status=$(fetch 3 "$location" "$run/drain.got")
    if [[ $status == 200 ]] && cmp -s "$run/drain.got" "$run/files/drained"; then
        pass "the upload cut by the drain at offset ${offset:-?} finished through node 3: sha256 equal"
    else
        fail "the drained upload does not download intact through node 3 (status $status)"
    fi
    loadtest/scripts/cluster.sh start 2 > /dev/null && echo "node 2 back"
fi

echo
if ((failures > 0)); then
    echo "$failures check(s) FAILED; logs: rerun with KEEP=1 to keep $run"
    exit 1
fi
echo "every check passed"
