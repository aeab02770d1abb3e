#!/usr/bin/env bash
# Coverage-guided fuzzing of the decoders that face phones, peers and disks (cargo-fuzz with
# libFuzzer; targets in loadtest/fuzz/fuzz_targets, seed inputs in loadtest/fuzz/seeds).
#
#   loadtest/scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# Default: 60 s for each of client_frame, token, http_headers, mesh_frame, stored_records. The
# corpus grows under data/fuzz/corpus/TARGET (kept between runs, not in git); a crash is saved
# under loadtest/fuzz/artifacts/TARGET and the script exits 1. Prints, per target, libFuzzer's
# last status line (executions, coverage, corpus). Needs the nightly toolchain (rustup) and
# cargo-fuzz (installed with cargo when missing).
set -euo pipefail
cd "$(dirname "$0")/../.."

seconds=${1:-60}
shift || true
targets=("$@")
if ((${#targets[@]} == 0)); then
    targets=(client_frame token http_headers mesh_frame stored_records)
fi
if ! rustup toolchain list | grep -q '^nightly'; then
    echo "the nightly toolchain is needed: rustup toolchain install nightly" >&2
    exit 64
fi
if ! command -v cargo-fuzz > /dev/null; then
    echo "installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked >&2
fi

failed=0
for target in "${targets[@]}"; do
    corpus=data/fuzz/corpus/$target
    mkdir -p "$corpus"
    log=$(mktemp)
    echo "== $target: ${seconds} s"
    if cargo +nightly fuzz run --fuzz-dir loadtest/fuzz "$target" "$corpus" "loadtest/fuzz/seeds/$target" \
        -- -max_total_time="$seconds" -print_final_stats=1 > "$log" 2>&1; then
        grep -E '^#[0-9]+.*(DONE|pulse|NEW|REDUCE)' "$log" | tail -1 || true
        grep -E 'stat::number_of_executed_units|stat::peak_rss_mb' "$log" || true
    else
        failed=1
        echo "FAILED: $target (its output follows; the input is under loadtest/fuzz/artifacts/$target)"
        tail -40 "$log"
    fi
    rm -f "$log"
done
exit "$failed"
