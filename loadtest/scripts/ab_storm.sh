#!/usr/bin/env bash
# Storm logins against two server binaries in turn, ROUNDS times each, as in docs/benchmarks.md.
# Usage: loadtest/scripts/ab_storm.sh OLD_TERN NEW_TERN [ROUNDS]
# Prints one line per run (see ab.sh): the last figure is server CPU per login (µs).
exec "$(dirname "$0")/ab.sh" "$1" "$2" "${3:-3}" storm --connections 256 --duration 10
