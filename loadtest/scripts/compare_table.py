#!/usr/bin/env python3
"""Prints the side-by-side table of a compare.sh run: figure, tern, mosquitto, ratio.

Usage: compare_table.py RESULTS_DIR [--markdown OUT.md]

Reads the JSON lines tern-load wrote into RESULTS_DIR (<scenario>-<tern|mqtt>.json and
chat-<rate|max>-<tern|mqtt>.json). A run that failed or is missing shows as "-". When
RESULTS_DIR/tls/ holds the same runs over TLS (compare.sh with TLS=1), two more tables follow:
every figure plain and over TLS side by side for both servers, and what TLS adds (idle memory
per connection, server CPU per message and per login).
Standard library only.
"""
import argparse
import json
import pathlib

SERVERS = ("tern", "mqtt")


def load(results, name):
    """The last JSON line of RESULTS/NAME.json, or None."""
    path = results / f"{name}.json"
    if not path.exists():
        return None
    lines = [l for l in path.read_text().splitlines() if l.strip().startswith("{")]
    if not lines:
        return None
    try:
        return json.loads(lines[-1])
    except json.JSONDecodeError:
        return None


def fmt(value, unit=""):
    if value is None:
        return "-"
    if isinstance(value, float) and not value.is_integer():
        text = f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
    else:
        text = f"{int(value):,}"
    return text + unit


def ratio(a, b):
    # Only for positive figures: a negative growth (noise from other traffic) has no ratio.
    if a is None or b is None or a < 0 or b <= 0:
        return "-"
    return f"{a / b:.2f}"


def chat_runs(*dirs):
    """Chat run names present in any of DIRS, max first, then by rate."""
    names = set()
    for results in dirs:
        for path in results.glob("chat-*-*.json"):
            names.add(path.stem.rsplit("-", 1)[0])
    def key(name):
        rate = name.split("-", 1)[1]
        return (0, 0) if rate == "max" else (1, float(rate))
    return sorted(names, key=key)


def rows(*dirs):
    """(figure, key, run name, unit) for every figure of the table."""
    out = [
        ("idle: server memory per connection", "rss_per_conn_bytes", "idle", " B"),
        ("idle: kernel TCP memory per connection", "kernel_tcp_mem_per_conn_bytes", "idle", " B"),
        ("idle: connections held", "connected", "idle", ""),
        ("idle: server RSS while holding them", "server_rss_bytes", "idle", " B"),
        ("idle: login p99 while connecting", "p99_ms", "idle", " ms"),
        ("storm: logins/s", "logins_per_sec", "storm", ""),
        ("storm: login p50", "p50_ms", "storm", " ms"),
        ("storm: login p99", "p99_ms", "storm", " ms"),
        ("storm: server CPU per login", "server_cpu_us_per_login", "storm", " µs"),
        ("storm: errors", "errors", "storm", ""),
    ]
    for name in chat_runs(*dirs):
        rate = name.split("-", 1)[1]
        label = "chat max rate" if rate == "max" else f"chat at {int(float(rate)):,}/s"
        out += [
            (f"{label}: delivered msgs/s", "msgs_per_sec", name, ""),
            (f"{label}: p50", "p50_ms", name, " ms"),
            (f"{label}: p99", "p99_ms", name, " ms"),
            (f"{label}: p99.9", "p999_ms", name, " ms"),
            (f"{label}: server CPU", "server_cpu_pct", name, " %"),
            (f"{label}: server CPU per message", "server_cpu_us_per_msg", name, " µs"),
            (f"{label}: lost / duplicates", None, name, ""),
        ]
    return out


def table(results):
    lines = ["| figure | tern | mosquitto | ratio tern/mosquitto |", "|---|---:|---:|---:|"]
    for figure, key, run, unit in rows(results):
        reports = [load(results, f"{run}-{server}") for server in SERVERS]
        if key is None:
            cells = [
                "-" if r is None else f"{fmt(r.get('lost'))} / {fmt(r.get('duplicates'))}"
                for r in reports
            ]
            lines.append(f"| {figure} | {cells[0]} | {cells[1]} | |")
            continue
        values = [None if r is None else r.get(key) for r in reports]
        lines.append(
            f"| {figure} | {fmt(values[0], unit)} | {fmt(values[1], unit)} | {ratio(*values)} |"
        )
    return "\n".join(lines)


def tls_table(results, tls):
    """Every figure plain and over TLS, for both servers."""
    lines = [
        "| figure | tern plain | tern TLS | TLS/plain | mosquitto plain | mosquitto TLS "
        "| TLS/plain | tern/mosquitto over TLS |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for figure, key, run, unit in rows(results, tls):
        cells = []
        for server in SERVERS:
            reports = [load(d, f"{run}-{server}") for d in (results, tls)]
            if key is None:
                cells.append([
                    "-" if r is None else f"{fmt(r.get('lost'))} / {fmt(r.get('duplicates'))}"
                    for r in reports
                ])
            else:
                cells.append([None if r is None else r.get(key) for r in reports])
        if key is None:
            (tp, tt), (mp, mt) = cells
            lines.append(f"| {figure} | {tp} | {tt} | | {mp} | {mt} | | |")
            continue
        (tp, tt), (mp, mt) = cells
        lines.append(
            f"| {figure} | {fmt(tp, unit)} | {fmt(tt, unit)} | {ratio(tt, tp)} "
            f"| {fmt(mp, unit)} | {fmt(mt, unit)} | {ratio(mt, mp)} | {ratio(tt, mt)} |"
        )
    return "\n".join(lines)


def added(plain, over_tls, unit):
    if plain is None or over_tls is None:
        return "-"
    difference = over_tls - plain
    sign = "+" if difference >= 0 else "-"
    return sign + fmt(abs(float(difference)), unit)


def cost_table(results, tls):
    """What TLS adds per connection, per message and per login, for each server."""
    lines = ["| what TLS adds | tern | mosquitto |", "|---|---:|---:|"]
    wanted = [
        ("idle: server memory per connection", "rss_per_conn_bytes", "idle", " B"),
        ("idle: kernel TCP memory per connection", "kernel_tcp_mem_per_conn_bytes", "idle",
         " B"),
        ("idle: login p99 while connecting", "p99_ms", "idle", " ms"),
        ("storm: server CPU per login", "server_cpu_us_per_login", "storm", " µs"),
    ]
    for name in chat_runs(results, tls):
        rate = name.split("-", 1)[1]
        label = "chat max rate" if rate == "max" else f"chat at {int(float(rate)):,}/s"
        wanted += [
            (f"{label}: server CPU per message", "server_cpu_us_per_msg", name, " µs"),
            (f"{label}: p99", "p99_ms", name, " ms"),
        ]
    for figure, key, run, unit in wanted:
        cells = []
        for server in SERVERS:
            values = [load(d, f"{run}-{server}") for d in (results, tls)]
            values = [None if r is None else r.get(key) for r in values]
            cells.append(added(*values, unit))
        lines.append(f"| {figure} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=pathlib.Path)
    parser.add_argument("--markdown", type=pathlib.Path, help="also write the table here")
    args = parser.parse_args()
    text = table(args.results)
    tls = args.results / "tls"
    if tls.is_dir():
        text += "\n\nTLS 1.3 against plain TCP:\n\n" + tls_table(args.results, tls)
        text += "\n\n" + cost_table(args.results, tls)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")


if __name__ == "__main__":
    main()
