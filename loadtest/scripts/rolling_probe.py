#!/usr/bin/env python3
"""Probes for loadtest/rolling.sh, reading nodes' admin ports.

  rolling_probe.py mesh-in ADMIN             prints the node's mesh bytes received so far.
  rolling_probe.py report FILE LOAD_ERR      prints one JSON line from the runs recorded in FILE
      (one JSON object per line: {"load": tern-load's report} or {"node": ...}), adding to each
      node the peak logins per second tern-load's progress lines (LOAD_ERR, one a second)
      show in the 10 s after the node went down (the phones' reconnects to the other nodes).
"""
import json
import re
import sys
import time
import urllib.request


def metrics(admin):
    try:
        with urllib.request.urlopen(f"http://{admin}/metrics", timeout=1) as r:
            return r.read().decode()
    except OSError:
        return ""


def total(text, name, **labels):
    value = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            value += float(line.rsplit(" ", 1)[1])
    return value


def peak_logins(progress, at_s, seconds=10):
    """The most logins tern-load counted in one second within [at_s, at_s + seconds]."""
    peak = 0
    for second, count in progress:
        if at_s <= second <= at_s + seconds:
            peak = max(peak, count)
    return peak


def progress_of(path):
    """(second, logins that second) from tern-load's progress lines."""
    points = []
    pattern = re.compile(r"^\[\S+\s+(\d+)s .*? logins (\d+)/s")
    with open(path) as f:
        for line in f:
            match = pattern.match(line)
            if match:
                points.append((int(match.group(1)), int(match.group(2))))
    return points


def mesh_in(admin):
    print(int(total(metrics(admin), "tern_mesh_bytes_total", direction="in")))


def report(path, load_err):
    progress = progress_of(load_err)
    load, nodes = {}, []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            entry = json.loads(line)
            if "load" in entry:
                load = entry["load"]
            else:
                entry["peak_logins_per_s"] = peak_logins(progress, entry["at_s"])
                nodes.append(entry)
    keys = ["sent", "acked", "delivered", "lost", "duplicates", "msgs_per_sec", "p50_ms",
            "p99_ms", "ack_wait_max_ms", "ack_pause_max_ms", "go_aways", "reconnects", "reconnect_count",
            "reconnect_p50_ms", "reconnect_p99_ms", "reconnect_max_ms", "refused", "drained"]
    out = {k: load.get(k) for k in keys}
    out["nodes"] = nodes
    print(json.dumps(out))


if __name__ == "__main__":
    command = sys.argv[1]
    if command == "mesh-in":
        mesh_in(sys.argv[2])
    elif command == "report":
        report(sys.argv[2], sys.argv[3])
    else:
        sys.exit(f"unknown command {command}")
