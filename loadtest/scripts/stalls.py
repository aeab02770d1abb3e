#!/usr/bin/env python3
"""The node's slow acks and slow journal fsyncs between two /metrics snapshots, as quoted in
docs/benchmarks.md.

Usage: loadtest/scripts/stalls.py BEFORE.metrics AFTER.metrics
(e.g. RESULTS/chat-max-tern.metrics and RESULTS/chat-10000-tern.metrics of a compare.sh run:
what the node saw during the run at 10,000 msgs/s).
Prints, from tern_ack_latency_seconds and tern_journal_fsync_seconds, how many acks and fsyncs
took longer than each bucket bound from 2.5 ms up, and the mean fsync.
"""
import re
import sys

BOUNDS = ["0.0025", "0.01", "0.05", "0.1"]


def read(path):
    totals = {}
    for line in open(path):
        found = re.match(r'^(\w+?)(_bucket|_count|_sum)(?:\{(.*)\})? ([0-9.e+-]+)$', line)
        if not found:
            continue
        name, part, labels, value = found.groups()
        le = re.search(r'le="([^"]+)"', labels or "")
        key = (name, part, le.group(1) if le else None)
        totals[key] = totals.get(key, 0.0) + float(value)
    return totals


def main():
    before, after = read(sys.argv[1]), read(sys.argv[2])

    def delta(name, part, le=None):
        return after.get((name, part, le), 0.0) - before.get((name, part, le), 0.0)

    for name in ("tern_ack_latency_seconds", "tern_journal_fsync_seconds"):
        count = delta(name, "_count")
        over = ", ".join(
            f"> {float(bound) * 1000:g} ms: {count - delta(name, '_bucket', bound):.0f}"
            for bound in BOUNDS
        )
        mean = delta(name, "_sum") / count * 1e6 if count else 0.0
        print(f"{name}: {count:.0f}, mean {mean:.0f} us; {over}")


if __name__ == "__main__":
    main()
