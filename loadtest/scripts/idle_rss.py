#!/usr/bin/env python3
"""Opens N logged-in idle phone connections to a tern node and reports the node's RSS growth.

Usage: idle_rss.py --server 127.0.0.1:7500 --config loadtest/bench.toml --pid PID -n 10000

Each connection logs in as its own user (idle0, idle1, ...) and waits for its Welcome; the
node's VmRSS is read from /proc before and after. Run the node with MIMALLOC_PURGE_DELAY=0.
A stop-gap until `tern-load idle` exists; kept dependency-free on purpose.
"""
import argparse, base64, hashlib, hmac, resource, socket, struct, time, tomllib


def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field_bytes(num, data):
    return varint(num << 3 | 2) + varint(len(data)) + data


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(key, user, device, expiry):
    body = f"t1.{b64(user.encode())}.{b64(device.encode())}.{expiry}"
    tag = b64(hmac.new(key, body.encode(), hashlib.sha256).digest())
    return f"{body}.{tag}"


def rss(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) * 1024
    raise SystemExit("no VmRSS")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--server", default="127.0.0.1:7500")
    p.add_argument("--config", default="loadtest/bench.toml")
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("-n", type=int, default=10000)
    a = p.parse_args()
    resource.setrlimit(resource.RLIMIT_NOFILE, (a.n + 1000, a.n + 1000))
    key = tomllib.load(open(a.config, "rb"))["auth"]["token_key"].encode()
    host, port = a.server.rsplit(":", 1)
    expiry = int(time.time()) + 3600
    before = rss(a.pid)
    socks = []
    for i in range(a.n):
        login = varint(1 << 3) + varint(1) + field_bytes(2, token(key, f"idle{i}", "d", expiry).encode())
        frame = field_bytes(1, login)
        s = socket.create_connection((host, int(port)))
        s.sendall(struct.pack(">I", len(frame)) + frame)
        socks.append(s)
    welcomed = sum(1 for s in socks if s.recv(4096))
    time.sleep(2)
    after = rss(a.pid)
    print(f"connections={a.n} welcomed={welcomed} rss_before={before} rss_after={after} "
          f"per_connection={(after - before) / a.n:.0f}")


main()
