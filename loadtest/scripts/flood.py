#!/usr/bin/env python3
"""Floods a node with each client frame kind in turn and reports what it cost the node.

Usage: loadtest/scripts/flood.py [--bin target/release] [--seconds 10] [--rate 50]
                                  [--kinds send,ack,...] [--half-sent-connections 100]
                                  [--port 7600] [--json] [--control] [--shared-cpu]

Runs each measurement on a fresh node of its own (the shipped cluster.toml with its default
rate limits, ports --port to --port+2, data in a temporary directory), so each peak is that
kind's alone:

1. quiet baseline: `tern-load chat` with 2 phones at --rate msgs/s for --seconds (p99, lost,
   duplicates);
2. for each frame kind: the same chat pair runs while `tern-load flood` (one connection) sends
   that kind as fast as the socket takes it for --seconds, reconnecting and logging in again
   whenever the node cuts it (a hostile client would; the node refuses those logins with RATE_LIMITED
   until the GoAway's delay passed). The node's VmRSS is sampled every 50 ms; the peak
   (and VmHWM) is reported with the chat's p99, the cuts, what the node answered and the
   node's mailbox cache (stored messages in memory, bounded by mailbox.cache_bytes).

3. with --control, each flood runs a second time aimed at a twin node (a second fresh node on
   --port+10 to --port+12) while the pair chats on its own node: the flooder's and the kernel's
   share of the pair's p99 on this machine, which the pair's node cannot isolate it from. The
   pair's p99 beside a flood of its own node minus the one beside the twin's flood is the
   node's share.

Kinds: send, receipt, ack, typing, presence, ping, group_send, group_request, group_receipt,
empty (zero-length frames), unknown (a case this server does not know), half_sent (a length
prefix near max_frame_bytes and a few bytes, then one byte a second, on
--half-sent-connections connections at once).

The flooder is compiled, and runs under SCHED_IDLE (unless --shared-cpu): a hostile client
spends its own CPU on its own machine, while here it shares the node's two cores. Writing as fast
as the socket takes it, a flooder at normal priority is a CPU-bound process whose wakeups (the
node's answers, refusals and resets) preempt the node's workers and the pair's client: that
raised the pair's p99 3-5x although the node itself used 13 % of one core. Under SCHED_IDLE the
flooder still sends as much (it gets every idle cycle), and all the node's work for the flood is
still there. A Python flooder at normal priority raised the pair's p99 several-fold even against
a ten-line sink on another port, with no node involved.

Python 3.11 standard library only. Needs `tern` and `tern-load` built in --bin.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
KINDS = [
    "send", "receipt", "ack", "typing", "presence", "ping", "group_send", "group_request",
    "group_receipt", "empty", "unknown", "half_sent",
]


# --- the flooder ------------------------------------------------------------------------------

def idle_priority():
    """Runs the calling process under SCHED_IDLE: it gets a core only when nothing else wants
    one, as a hostile client on its own machine would cost the node's machine no CPU."""
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


def flooder(bin_dir, config, addr, kind, seconds, connections, shared_cpu):
    """`tern-load flood` (compiled, so its own footprint on the machine stays small); under
    SCHED_IDLE unless `shared_cpu`."""
    return subprocess.Popen(
        [os.path.join(bin_dir, "tern-load"), "flood", "--server", f"{addr[0]}:{addr[1]}",
         "--config", config, "--kind", kind.replace("_", "-"), "--duration", str(seconds),
         "--connections", str(connections), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=None if shared_cpu else idle_priority)


def flood_result(process):
    out, err = process.communicate(timeout=300)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if not lines:
        sys.exit(f"tern-load flood failed: {err.strip()}")
    return json.loads(lines[-1])


# --- the node and the chat pair ---------------------------------------------------------------

def rss_kb(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def sample_peak(pid, stop, out):
    peak = 0
    while not stop.is_set():
        try:
            peak = max(peak, rss_kb(pid))
        except OSError:
            break
        time.sleep(0.05)
    out.append(peak)


def mailbox_cache_mb(admin):
    """The node's mailbox cache (tern_mailbox_cache_bytes, all workers), in MiB: stored
    messages held in memory, bounded by mailbox.cache_bytes, not by the connection."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return None
    total = sum(float(line.split()[-1]) for line in text.splitlines()
                if line.startswith("tern_mailbox_cache_bytes"))
    return round(total / 1048576, 1)


def write_config(directory, port):
    text = open(os.path.join(ROOT, "cluster.toml")).read()
    text = re.sub(r'(?m)^client_addr = ".*"', f'client_addr = "127.0.0.1:{port}"', text)
    text = re.sub(r'(?m)^admin_addr = ".*"', f'admin_addr = "127.0.0.1:{port + 1}"', text)
    text = re.sub(r'(?m)^listen_addr = ".*"', f'listen_addr = "127.0.0.1:{port + 2}"', text)
    text = re.sub(r'(?m)^data_dir = ".*"', f'data_dir = "{directory}/data"', text)
    path = os.path.join(directory, "flood.toml")
    with open(path, "w") as out:
        out.write(text)
    return path


def start_node(bin_dir, config, log_path):
    log = open(log_path, "w")
    node = subprocess.Popen([os.path.join(bin_dir, "tern"), "serve", "--config", config],
                            stdout=log, stderr=subprocess.STDOUT)
    for _ in range(300):
        if "tern ready" in open(log_path).read():
            return node
        if node.poll() is not None:
            break
        time.sleep(0.1)
    node.kill()
    sys.exit(f"the node did not start; see {log_path}")


def chat(bin_dir, config, addr, seconds, rate, prefix):
    return subprocess.Popen(
        [os.path.join(bin_dir, "tern-load"), "chat", "--server", f"{addr[0]}:{addr[1]}",
         "--config", config, "--connections", "2", "--rate", str(rate), "--duration",
         str(seconds), "--user-prefix", prefix, "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def chat_result(process):
    out, _ = process.communicate(timeout=120)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if not lines:
        return {"p99_ms": None, "lost": None, "duplicates": None, "delivered": None}
    report = json.loads(lines[-1])
    return {key: report.get(key) for key in ("p99_ms", "lost", "duplicates", "delivered")}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bin", default=os.path.join(ROOT, "target", "release"))
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rate", type=float, default=50, help="chat msgs/s in total")
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--half-sent-connections", type=int, default=100)
    parser.add_argument("--port", type=int, default=7600)
    parser.add_argument("--json", action="store_true", help="one JSON line per run")
    parser.add_argument("--shared-cpu", action="store_true",
                        help="run the flooder at normal priority, competing with the node for "
                             "the machine's cores (by default it runs under SCHED_IDLE)")
    parser.add_argument("--control", action="store_true",
                        help="run each flood a second time against a twin node beside the "
                             "pair's (the machine's share of the pair's p99)")
    args = parser.parse_args()
    kinds = args.kinds.split(",")
    for kind in kinds:
        if kind not in KINDS:
            sys.exit(f"unknown kind {kind!r}; known: {', '.join(KINDS)}")

    addr = ("127.0.0.1", args.port)
    # The control's twin node: the same flood on the same machine, aimed at another node.
    twin_addr = ("127.0.0.1", args.port + 10)
    rows = []

    def measure(kind, target):
        """One run: a fresh node with the chat pair; unless `kind` is "quiet", `tern-load flood`
        floods `target` ("node": the pair's node, "twin": a second fresh node beside it)."""
        directory = tempfile.mkdtemp(prefix="tern-flood-")
        config = write_config(directory, args.port)
        node = start_node(args.bin, config, os.path.join(directory, "node.log"))
        twin = None
        flooded = addr
        if target == "twin":
            os.makedirs(os.path.join(directory, "twin"))
            flooded_config = write_config(os.path.join(directory, "twin"), twin_addr[1])
            twin = start_node(args.bin, flooded_config, os.path.join(directory, "twin.log"))
            flooded = twin_addr
        try:
            stop, peak = threading.Event(), []
            sampler = threading.Thread(target=sample_peak, args=(node.pid, stop, peak))
            sampler.start()
            pair = chat(args.bin, config, addr, args.seconds, args.rate, f"pair-{kind}-")
            flood = {}
            if kind != "quiet":
                flood = flood_result(flooder(args.bin, config, flooded, kind, args.seconds,
                                             args.half_sent_connections, args.shared_cpu))
            figures = chat_result(pair)
            stop.set()
            sampler.join()
            row = {"kind": kind, "flooded": target if flood else None,
                   "peak_rss_kb": peak[0] if peak else None,
                   "hwm_kb": rss_kb(node.pid, "VmHWM"),
                   "frames_sent": flood.get("frames_sent", 0), "cuts": flood.get("cuts", 0),
                   "answers": flood.get("answers", {}),
                   "mailbox_cache_mb": mailbox_cache_mb(args.port + 1), **figures}
            rows.append(row)
            if args.json:
                print(json.dumps(row), flush=True)
            else:
                answers = ", ".join(f"{k} {v}" for k, v in sorted(row["answers"].items()))
                where = f" ({target})" if flood else ""
                print(f"{kind + where:20} peak RSS {row['peak_rss_kb'] / 1024:7.1f} MiB  "
                      f"(mailbox cache {row['mailbox_cache_mb']} MiB)  "
                      f"chat p99 {row['p99_ms']} ms lost {row['lost']} dup {row['duplicates']}  "
                      f"sent {row['frames_sent']} cuts {row['cuts']}  [{answers}]", flush=True)
        finally:
            for process in (node, twin):
                if process is None:
                    continue
                process.terminate()
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
            shutil.rmtree(directory, ignore_errors=True)

    measure("quiet", "node")
    for kind in kinds:
        for target in (["node", "twin"] if args.control else ["node"]):
            measure(kind, target)
    failed = [r["kind"] for r in rows if r["lost"] or r["duplicates"] or r["p99_ms"] is None]
    if failed:
        print(f"chat failed beside: {', '.join(failed)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
