#!/usr/bin/env python3
"""Floods a node with each client frame kind in turn and reports what it cost the node.

Usage: loadtest/scripts/flood.py [--bin target/release] [--seconds 10] [--rate 50]
                                  [--kinds send,ack,...] [--half-sent-connections 100]
                                  [--port 7600] [--json]

Runs each measurement on a fresh node of its own (the shipped cluster.toml with its default
rate limits, ports --port to --port+2, data in a temporary directory), so each peak is that
kind's alone:

1. quiet baseline: `tern-load chat` with 2 phones at --rate msgs/s for --seconds (p99, lost,
   duplicates);
2. for each frame kind: the same chat pair runs while one flooder connection sends that kind as
   fast as the socket takes it for --seconds, reconnecting and logging in again whenever the
   node cuts it (a hostile client would; the node refuses those logins with RATE_LIMITED
   until the GoAway's delay passed). The node's VmRSS is sampled every 50 ms; the peak
   (and VmHWM) is reported with the chat's p99, the cuts, what the node answered and the
   node's mailbox cache (stored messages in memory, bounded by mailbox.cache_bytes).

Kinds: send, receipt, ack, typing, presence, ping, group_send, group_request, group_receipt,
empty (zero-length frames), unknown (a case this server does not know), half_sent (a length
prefix near max_frame_bytes and a few bytes, then one byte a second, on
--half-sent-connections connections at once).

Python 3.11 standard library only. Needs `tern` and `tern-load` built in --bin.
"""

import argparse
import json
import os
import re
import shutil
import socket
import struct
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
ERROR_CODES = {
    1: "BAD_FRAME", 2: "FRAME_TOO_LARGE", 6: "PROTOCOL_VIOLATION", 7: "INVALID_ARGUMENT",
    8: "RATE_LIMITED", 9: "OVERLOADED", 11: "TIMEOUT", 14: "NOT_A_MEMBER",
}
GO_AWAY_REASONS = {1: "SHUTDOWN", 2: "SLOW_CONSUMER", 3: "REPLACED", 4: "IDLE", 5: "FLOOD"}
SERVER_CASES = {
    1: "Welcome", 2: "ServerAck", 3: "Deliver", 4: "QueueDrained", 5: "Typing", 6: "Presence",
    7: "Pong", 8: "Error", 9: "GoAway", 10: "GroupResponse",
}


# --- protobuf, by hand ------------------------------------------------------------------------

def varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def f_varint(number, value):
    return varint(number << 3) + varint(value)


def f_bytes(number, value):
    if isinstance(value, str):
        value = value.encode()
    return varint(number << 3 | 2) + varint(len(value)) + value


def frame(case, message):
    """One length-prefixed ClientFrame with `case` set to `message` (encoded fields)."""
    payload = f_bytes(case, message)
    return struct.pack(">I", len(payload)) + payload


def read_varint(data, i):
    shift = value = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i
        shift += 7


def fields(data):
    """(number, wire type, value) of each top-level field."""
    i = 0
    while i < len(data):
        key, i = read_varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = read_varint(data, i)
        elif wire == 2:
            length, i = read_varint(data, i)
            value, i = data[i:i + length], i + length
        elif wire == 1:
            value, i = data[i:i + 8], i + 8
        elif wire == 5:
            value, i = data[i:i + 4], i + 4
        else:
            return
        yield number, wire, value


def label(payload):
    """A short name for one ServerFrame: its case, with the code or reason of Error/GoAway."""
    for number, _, value in fields(payload):
        name = SERVER_CASES.get(number, f"case{number}")
        if number in (8, 9):
            inner = dict((n, v) for n, _, v in fields(value))
            table = ERROR_CODES if number == 8 else GO_AWAY_REASONS
            code = inner.get(1, 0)
            return f"{name}:{table.get(code, code)}"
        return name
    return "empty"


# --- the flooder ------------------------------------------------------------------------------

class Counter:
    def __init__(self):
        self.lock = threading.Lock()
        self.answers = {}
        self.cuts = 0
        self.sent = 0

    def answer(self, name):
        with self.lock:
            self.answers[name] = self.answers.get(name, 0) + 1


def token(bin_dir, config, user, device):
    out = subprocess.run(
        [os.path.join(bin_dir, "tern"), "token", "--config", config, "--user", user,
         "--device", device],
        check=True, capture_output=True, text=True)
    return out.stdout.strip()


def login(addr, tok):
    sock = socket.create_connection(addr, timeout=5)
    # Blocking from here on: the listener waits as long as the node stays silent, and a write
    # to a node that stopped reading ends when the node drops the connection.
    sock.settimeout(None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(frame(1, f_varint(1, 1) + f_bytes(2, tok)))
    return sock


def listen(sock, counter, closed):
    """Reads what the node answers until it closes the connection."""
    buf = bytearray()
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                break
            buf += data
            while len(buf) >= 4:
                (length,) = struct.unpack(">I", buf[:4])
                if len(buf) < 4 + length:
                    break
                counter.answer(label(bytes(buf[4:4 + length])))
                del buf[:4 + length]
    except OSError:
        pass
    closed.set()


def chunk(kind, n):
    """About 64 KiB of frames of one kind; `n` makes ids and values distinct per call."""
    body = b"x" * 100
    frames = []
    size = 0
    i = 0
    while size < 65536:
        k = n * 100000 + i
        if kind == "send":
            f = frame(2, f_bytes(1, f"f{k}") + f_bytes(2, "flood-sink") + f_varint(3, 1)
                      + f_bytes(4, body))
        elif kind == "receipt":
            f = frame(4, f_bytes(1, f"r{k}") + f_bytes(2, "flood-sink") + f_varint(3, 1)
                      + f_varint(4, 1))
        elif kind == "ack":
            f = frame(3, f_varint(1, k + 1))
        elif kind == "typing":
            f = frame(5, f_bytes(1, "flood-sink") + f_varint(2, 1))
        elif kind == "presence":
            f = frame(6, b"".join(f_bytes(1, f"watched{j}") for j in range(64)))
        elif kind == "ping":
            f = frame(7, f_varint(1, k))
        elif kind == "group_send":
            f = frame(9, f_bytes(1, f"g{k}") + f_bytes(2, "gflood") + f_varint(3, 1)
                      + f_bytes(4, body))
        elif kind == "group_request":
            f = frame(8, f_varint(1, k) + f_bytes(9, b""))
        elif kind == "group_receipt":
            f = frame(10, f_bytes(1, "gflood") + f_varint(2, 1) + f_varint(3, k + 1))
        elif kind == "empty":
            f = b"\x00\x00\x00\x00"
        elif kind == "unknown":
            f = b"\x00\x00\x00\x02\x7a\x00"
        else:
            raise ValueError(kind)
        frames.append(f)
        size += len(f)
        i += 1
    return b"".join(frames), len(frames)


def flood(kind, addr, tok, seconds, counter):
    """Sends `kind` as fast as the socket takes it; reconnects whenever the node cuts it."""
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        try:
            sock = login(addr, tok)
        except OSError:
            time.sleep(0.05)
            continue
        closed = threading.Event()
        threading.Thread(target=listen, args=(sock, counter, closed), daemon=True).start()
        try:
            while time.monotonic() < deadline and not closed.is_set():
                data, count = chunk(kind, n)
                n += 1
                sock.sendall(data)
                counter.sent += count
        except OSError:
            pass
        if time.monotonic() < deadline:
            closed.wait(3)
            if closed.is_set():
                counter.cuts += 1
        sock.close()
        # Again at once, as a hostile client would (a device cut for flooding is refused at
        # login until its GoAway's delay passed); the pause only keeps this loop from spinning.
        time.sleep(0.01)


def half_sent(addr, tokens, seconds, counter, max_frame):
    """Each connection announces a frame near the limit, sends a few bytes of it, then one
    byte a second; a connection the node cuts is opened again."""
    deadline = time.monotonic() + seconds
    socks = {}
    events = {}

    def open_one(i):
        sock = login(addr, tokens[i])
        sock.sendall(struct.pack(">I", max_frame - 16) + b"\x3a\x02\x08")
        closed = threading.Event()
        threading.Thread(target=listen, args=(sock, counter, closed), daemon=True).start()
        socks[i], events[i] = sock, closed
        counter.sent += 1

    for i in range(len(tokens)):
        open_one(i)
    while time.monotonic() < deadline:
        time.sleep(1)
        for i, sock in list(socks.items()):
            if events[i].is_set():
                counter.cuts += 1
                sock.close()
                open_one(i)
                continue
            try:
                sock.send(b"\x00")
            except OSError:
                pass
    for sock in socks.values():
        sock.close()


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
    args = parser.parse_args()
    kinds = args.kinds.split(",")
    for kind in kinds:
        if kind not in KINDS:
            sys.exit(f"unknown kind {kind!r}; known: {', '.join(KINDS)}")

    addr = ("127.0.0.1", args.port)
    max_frame = 65536
    rows = []

    def measure(kind, work):
        directory = tempfile.mkdtemp(prefix="tern-flood-")
        config = write_config(directory, args.port)
        node = start_node(args.bin, config, os.path.join(directory, "node.log"))
        try:
            stop, peak = threading.Event(), []
            sampler = threading.Thread(target=sample_peak, args=(node.pid, stop, peak))
            sampler.start()
            pair = chat(args.bin, config, addr, args.seconds, args.rate, f"pair-{kind}-")
            counter = Counter()
            if work:
                work(counter)
            figures = chat_result(pair)
            stop.set()
            sampler.join()
            row = {"kind": kind, "peak_rss_kb": peak[0] if peak else None,
                   "hwm_kb": rss_kb(node.pid, "VmHWM"), "frames_sent": counter.sent,
                   "cuts": counter.cuts, "answers": counter.answers,
                   "mailbox_cache_mb": mailbox_cache_mb(args.port + 1), **figures}
            rows.append(row)
            if args.json:
                print(json.dumps(row), flush=True)
            else:
                answers = ", ".join(f"{k} {v}" for k, v in sorted(counter.answers.items()))
                print(f"{kind:14} peak RSS {row['peak_rss_kb'] / 1024:7.1f} MiB  "
                      f"(mailbox cache {row['mailbox_cache_mb']} MiB)  "
                      f"chat p99 {row['p99_ms']} ms lost {row['lost']} dup {row['duplicates']}  "
                      f"sent {counter.sent} cuts {counter.cuts}  [{answers}]", flush=True)

        finally:
            node.terminate()
            try:
                node.wait(timeout=20)
            except subprocess.TimeoutExpired:
                node.kill()
            shutil.rmtree(directory, ignore_errors=True)

    # Every node's config is a copy of cluster.toml: same token key.
    shipped = os.path.join(ROOT, "cluster.toml")
    measure("quiet", None)
    for kind in kinds:
        if kind == "half_sent":
            tokens = [token(args.bin, shipped, f"flood-half-{i}", "d")
                      for i in range(args.half_sent_connections)]
            measure(kind, lambda c: half_sent(addr, tokens, args.seconds, c, max_frame))
        else:
            tok = token(args.bin, shipped, f"flood-{kind}", "d")
            measure(kind, lambda c, kind=kind, tok=tok: flood(kind, addr, tok, args.seconds, c))
    failed = [r["kind"] for r in rows if r["lost"] or r["duplicates"] or r["p99_ms"] is None]
    if failed:
        print(f"chat failed beside: {', '.join(failed)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
