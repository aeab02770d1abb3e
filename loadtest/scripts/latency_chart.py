#!/usr/bin/env python3
"""Draws latency (p50 and p99, log scale) against delivered throughput for tern and mosquitto
from the chat runs of a compare.sh results directory, as a standalone SVG.

Usage: latency_chart.py RESULTS_DIR -o chart.svg

Standard library only (no matplotlib): the SVG is written by hand.
"""
import argparse
import json
import math
import pathlib
from html import escape

WIDTH, HEIGHT = 760, 460
LEFT, RIGHT, TOP, BOTTOM = 80, 190, 50, 60
SERIES = (
    ("tern", "tern", "#1f77b4"),
    ("mqtt", "mosquitto", "#e6550d"),
)


def points(results, server):
    """(delivered msgs/s, p50 ms, p99 ms) per chat run of one server, by throughput."""
    out = []
    for path in sorted(results.glob(f"chat-*-{server}.json")):
        lines = [l for l in path.read_text().splitlines() if l.strip().startswith("{")]
        if not lines:
            continue
        try:
            r = json.loads(lines[-1])
        except json.JSONDecodeError:
            continue
        if r.get("msgs_per_sec") and r.get("p50_ms") and r.get("p99_ms"):
            out.append((r["msgs_per_sec"], r["p50_ms"], r["p99_ms"]))
    return sorted(out)


def nice_step(span, ticks=5):
    raw = span / ticks
    magnitude = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * magnitude:
            return factor * magnitude
    return 10 * magnitude


def label(value):
    if value >= 1000:
        return f"{value / 1000:g}k"
    return f"{value:g}"


def chart(data):
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    xs = [p[0] for series in data.values() for p in series] or [1]
    ys = [v for series in data.values() for p in series for v in p[1:]] or [1]
    x_step = nice_step(max(xs) * 1.05)
    x_max = x_step * math.ceil(max(xs) * 1.05 / x_step)
    y_lo = 10 ** math.floor(math.log10(max(min(ys), 1e-3)))
    y_hi = 10 ** math.ceil(math.log10(max(ys) * 1.01))
    if y_hi <= y_lo:
        y_hi = y_lo * 10

    def sx(x):
        return LEFT + plot_w * x / x_max

    def sy(y):
        y = max(y, y_lo)
        return TOP + plot_h * (1 - (math.log10(y) - math.log10(y_lo)) / (math.log10(y_hi) - math.log10(y_lo)))

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{LEFT + plot_w / 2}" y="24" text-anchor="middle" font-size="15" font-weight="bold">'
        "Chat latency vs delivered throughput (same box, loopback)</text>",
    ]
    # Grid and axes.
    x = 0.0
    while x <= x_max + 1e-9:
        out.append(f'<line x1="{sx(x):.1f}" y1="{TOP}" x2="{sx(x):.1f}" y2="{TOP + plot_h}" stroke="#e5e5e5"/>')
        out.append(f'<text x="{sx(x):.1f}" y="{TOP + plot_h + 18}" text-anchor="middle">{label(x)}</text>')
        x += x_step
    decade = y_lo
    while decade <= y_hi * 1.0001:
        for minor in range(2, 10):
            y = decade * minor
            if y < y_hi:
                out.append(f'<line x1="{LEFT}" y1="{sy(y):.1f}" x2="{LEFT + plot_w}" y2="{sy(y):.1f}" stroke="#f3f3f3"/>')
        out.append(f'<line x1="{LEFT}" y1="{sy(decade):.1f}" x2="{LEFT + plot_w}" y2="{sy(decade):.1f}" stroke="#d0d0d0"/>')
        out.append(f'<text x="{LEFT - 8}" y="{sy(decade) + 4:.1f}" text-anchor="end">{decade:g}</text>')
        decade *= 10
    out.append(f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#444"/>')
    out.append(f'<text x="{LEFT + plot_w / 2}" y="{HEIGHT - 18}" text-anchor="middle">delivered messages per second</text>')
    out.append(
        f'<text x="20" y="{TOP + plot_h / 2}" text-anchor="middle" '
        f'transform="rotate(-90 20 {TOP + plot_h / 2})">end-to-end latency, ms (log scale)</text>'
    )
    # Series: p50 solid with circles, p99 dashed with squares.
    legend_y = TOP + 10
    for server, name, color in SERIES:
        series = data.get(server, [])
        for index, (percentile, dash) in enumerate((("p50", ""), ("p99", ' stroke-dasharray="6 4"'))):
            pts = [(sx(p[0]), sy(p[1 + index])) for p in series]
            if len(pts) > 1:
                path = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
                out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"{dash}/>')
            for x, y in pts:
                if index == 0:
                    out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{color}"/>')
                else:
                    out.append(f'<rect x="{x - 4:.1f}" y="{y - 4:.1f}" width="8" height="8" fill="white" stroke="{color}" stroke-width="2"/>')
            lx = LEFT + plot_w + 20
            out.append(f'<line x1="{lx}" y1="{legend_y}" x2="{lx + 30}" y2="{legend_y}" stroke="{color}" stroke-width="2"{dash}/>')
            out.append(f'<text x="{lx + 38}" y="{legend_y + 4}">{escape(name)} {percentile}</text>')
            legend_y += 22
        if not series:
            out.append(f'<text x="{LEFT + plot_w + 20}" y="{legend_y + 4}" fill="#888">{escape(name)}: no data</text>')
            legend_y += 22
    notes = ("one point per chat run:", "fixed rates, and the", "maximum (rightmost)")
    for line in notes:
        legend_y += 18
        out.append(f'<text x="{LEFT + plot_w + 20}" y="{legend_y}" fill="#666" font-size="11">{line}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=pathlib.Path)
    parser.add_argument("-o", "--output", type=pathlib.Path, required=True)
    args = parser.parse_args()
    data = {server: points(args.results, server) for server, _, _ in SERIES}
    args.output.write_text(chart(data))
    print(f"chart: {args.output}")


if __name__ == "__main__":
    main()
