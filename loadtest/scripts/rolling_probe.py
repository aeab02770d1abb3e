#!/usr/bin/env python3
"""Probes for loadtest/rolling.sh, reading nodes' admin ports.

  rolling_probe.py logins SECONDS ADMIN...   samples tern_logins_total{result="ok"} summed over
      the given admin ports every 100 ms for SECONDS; prints the peak logins in any 1 s window.
  rolling_probe.py mesh-in ADMIN             prints the node's mesh bytes received so far.
  rolling_probe.py report FILE               prints one JSON line from the runs recorded in FILE
      (one JSON object per line: {"load": tern-load's report} or {"node": ...}).
"""
import json
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


def logins(seconds, admins):
    samples = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        count = sum(total(metrics(a), "tern_logins_total", result="ok") for a in admins)
        samples.append((time.monotonic(), count))
        time.sleep(0.1)
    peak = 0.0
    for i, (t, c) in enumerate(samples):
        for t0, c0 in samples[:i]:
            if t - t0 <= 1.0:
                peak = max(peak, c - c0)
                break
    print(int(peak))


def mesh_in(admin):
    print(int(total(metrics(admin), "tern_mesh_bytes_total", direction="in")))


def report(path):
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
                nodes.append(entry)
    keys = ["sent", "acked", "delivered", "lost", "duplicates", "msgs_per_sec", "p50_ms",
            "p99_ms", "ack_wait_max_ms", "go_aways", "reconnects", "reconnect_count",
            "reconnect_p50_ms", "reconnect_p99_ms", "reconnect_max_ms", "refused", "drained"]
    out = {k: load.get(k) for k in keys}
    out["nodes"] = nodes
    print(json.dumps(out))


if __name__ == "__main__":
    command = sys.argv[1]
    if command == "logins":
        logins(float(sys.argv[2]), sys.argv[3:])
    elif command == "mesh-in":
        mesh_in(sys.argv[2])
    elif command == "report":
        report(sys.argv[2])
    else:
        sys.exit(f"unknown command {command}")
