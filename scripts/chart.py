#!/usr/bin/env python3
"""Reads the results of scripts/bench-all.sh, writes OUTDIR/benchmarks.svg
(throughput and latency against raw ZeroMQ and Python fedmsg) and prints the
benchmark table with each row's target, in Markdown.

    python3 scripts/chart.py OUTDIR

Standard library only: the SVG is written by hand.
"""
import json
import math
import pathlib
import sys

out = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target/bench-results")


def load(name):
    path = out / f"{name}.json"
    if not path.exists():
        return None
    reports = json.loads(path.read_text())
    raw = next((r for r in reports if r["name"] == "raw ZeroMQ"), None)
    ours = next((r for r in reports if r["name"] == "fedmsg"), None)
    args = (out / f"{name}.args").read_text().strip() if (out / f"{name}.args").exists() else ""
    return {"raw": raw, "ours": ours, "args": args}


def python_rate():
    path = out / "python.md"
    if not path.exists():
        return None
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) > 3 and cells[1].isdigit():
            try:
                return float(cells[2].split()[0]), float(cells[3].split()[0])
            except ValueError:
                return None
    return None


def side(report, name):
    return next((s for s in report.get("sides", []) if s["name"] == name), None)


def fmt(v, digits=0):
    return "-" if v is None else f"{v:,.{digits}f}"


rows = []


def row(name, title, target, result, met):
    r = load(name)
    if r is None:
        return
    ours, raw = r["ours"], r["raw"]
    lat = ours.get("latency_us")
    raw_lat = raw.get("latency_us") if raw else None
    rows.append(
        "| {title} | `{args}` | {base} | {rate} | {ratio} | {lost} | {lat} | {target} | {result} | {met} |".format(
            title=title,
            args=r["args"],
            base=(
                f"{fmt(raw['msgs_per_sec'])} msg/s"
                + (f", p50/p99 {fmt(raw_lat['p50'])}/{fmt(raw_lat['p99'])} µs" if raw_lat else "")
            )
            if raw
            else "",
            rate=f"{fmt(ours['msgs_per_sec'])} msg/s",
            ratio=fmt(ours.get("ratio"), 2) if ours.get("ratio") is not None else "",
            lost=ours["lost"],
            lat=f"{fmt(lat['p50'])} / {fmt(lat['p99'])}" if lat else "",
            target=target,
            result=result(ours, raw),
            met="yes" if met(ours, raw) else "**no**",
        )
    )


def ratio(ours, raw):
    return ours.get("ratio") or 0.0


row("unsigned-1to1", "unsigned 1→1, flat out", "≥ 0.5 × raw, 0 lost",
    lambda o, r: f"{ratio(o, r):.2f} × raw", lambda o, r: ratio(o, r) >= 0.5 and o["lost"] == 0)
row("ed25519", "ed25519 signed → validated", "≥ 50k msg/s, 0 lost",
    lambda o, r: f"{o['msgs_per_sec']:,.0f} msg/s", lambda o, r: o["msgs_per_sec"] >= 50000 and o["lost"] == 0)
row("x509", "x509 (RSA-2048) signed → validated", "≥ 1k msg/s signing (validation: crypto bench)",
    lambda o, r: f"{o['msgs_per_sec']:,.0f} msg/s", lambda o, r: o["msgs_per_sec"] >= 1000 and o["lost"] == 0)
row("paced-direct", "paced 10k msg/s, direct", "p99 ≤ 150 µs",
    lambda o, r: f"p99 {o['latency_us']['p99']:,.0f} µs", lambda o, r: o["latency_us"]["p99"] <= 150)
row("paced-relay", "paced 10k msg/s, through the relay", "p99 ≤ 300 µs",
    lambda o, r: f"p99 {o['latency_us']['p99']:,.0f} µs", lambda o, r: o["latency_us"]["p99"] <= 300)
row("relay-flat", "relay forwarding flat out (baseline: a bare forwarder)", "≥ 0.8 × raw",
    lambda o, r: f"{ratio(o, r):.2f} × raw", lambda o, r: ratio(o, r) >= 0.8)
row("tail-json", "`fedmsg-tail --json` as the subscriber", "≥ 300k msg/s",
    lambda o, r: f"{o['msgs_per_sec']:,.0f} msg/s", lambda o, r: o["msgs_per_sec"] >= 300000 and o["lost"] == 0)
row("oneshot", "one-shot `echo x \\| fedmsg-logger` → relay → tail", "median ≤ 20 ms, all delivered",
    lambda o, r: f"median {o['latency_us']['p50'] / 1000:.1f} ms, {o['expected'] - o['lost']}/{o['expected']}",
    lambda o, r: o["latency_us"]["p50"] <= 20000 and o["lost"] == 0)


def tail_rss(o):
    s = side(o, "fedmsg-tail 1")
    return s["peak_rss_mib"] if s else float("inf")


row("endpoints-1000", "1 subscriber (fedmsg-tail) following many publisher endpoints", "all connected, RSS ≤ 20 MiB",
    lambda o, r: f"tail peak RSS {tail_rss(o):.1f} MiB, {o['lost']} lost",
    lambda o, r: tail_rss(o) <= 20 and o["lost"] == 0)
row("fanout-20", "1 publisher → 20 subscribers", "≥ 0.5 × raw with 20",
    lambda o, r: f"{ratio(o, r):.2f} × raw", lambda o, r: ratio(o, r) >= 0.5)


def relay_rss(o):
    """The relay's RSS at each tenth of the run, and its peak."""
    s = side(o, "fedmsg-relay")
    if not s or len(s.get("rss_deciles_mib") or []) < 3:
        return None
    return s["rss_deciles_mib"], s["peak_rss_mib"]


def flat(o):
    # Flat after warm-up: from 2/10 of the run to its end, every sample stays
    # within 10 % + 1 MiB of the sample at 1/10.
    rss = relay_rss(o)
    if not rss:
        return False
    deciles = rss[0]
    return max(deciles[1:]) <= deciles[0] * 1.1 + 1


def rss_text(o):
    rss = relay_rss(o)
    if not rss:
        return "-"
    return "relay RSS at each tenth {} MiB, peak {:.1f}".format(" ".join(f"{v:.1f}" for v in rss[0]), rss[1])


row("relay-soak", "relay under many messages, paced 100k msg/s (fedmsg-relay process)", "RSS flat after warm-up",
    lambda o, r: rss_text(o), lambda o, r: flat(o))
row("relay-soak-flat", "relay under many messages, flat out into a slower tail (fedmsg-relay process)", "peak bounded by the high-water mark (≤ 64 MiB)",
    lambda o, r: rss_text(o), lambda o, r: bool(relay_rss(o)) and relay_rss(o)[1] <= 64)

print("| scenario | fedmsg-bench arguments | baseline (same run) | fedmsg | ratio | lost | p50 / p99 µs | target | result | met? |")
print("|---|---|---:|---:|---:|---:|---|---|---|---|")
for line in rows:
    print(line)
py = python_rate()
if py:
    print()
    print(f"Python fedmsg 1.1.7, unsigned 1→1 (scripts/compare.sh): {py[0]:,.0f} msg/s; fedmsg-rs in the same round: {py[1]:,.0f} msg/s ({py[1] / py[0]:.1f}×).")

# The chart: throughput (log scale) and latency.
bars = []  # (group, label, value, colour)
COLOURS = {"raw ZeroMQ": "#9e9e9e", "fedmsg-rs": "#d2691e", "Python fedmsg": "#3572a5"}


def add(group, name, key):
    r = load(name)
    if r is None:
        return
    if r["raw"]:
        bars.append((group, "raw ZeroMQ", r["raw"]["msgs_per_sec"]))
    bars.append((group, "fedmsg-rs", r["ours"]["msgs_per_sec"]))


add("unsigned 1→1", "unsigned-1to1", None)
if py:
    bars.append(("unsigned 1→1 (separate processes)", "Python fedmsg", py[0]))
    bars.append(("unsigned 1→1 (separate processes)", "fedmsg-rs", py[1]))
add("through the relay", "relay-flat", None)
add("1 → 20 subscribers", "fanout-20", None)
add("fedmsg-tail --json", "tail-json", None)
add("ed25519 signed", "ed25519", None)
add("x509 RSA-2048 signed", "x509", None)

latency = []
for group, name in (("paced 10k/s, direct", "paced-direct"), ("paced 10k/s, relay", "paced-relay")):
    r = load(name)
    if r is None:
        continue
    if r["raw"] and r["raw"].get("latency_us"):
        latency.append((group, "raw ZeroMQ", r["raw"]["latency_us"]))
    if r["ours"].get("latency_us"):
        latency.append((group, "fedmsg-rs", r["ours"]["latency_us"]))

width, left, bar_h, gap = 900, 300, 16, 10
height = 60 + len(bars) * (bar_h + 4) + len({b[0] for b in bars}) * gap + 80 + len(latency) * 2 * (bar_h + 4) + 80
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
       f'<rect width="{width}" height="{height}" fill="white"/>',
       '<text x="10" y="22" font-size="16" font-weight="bold">Throughput, messages/s (log scale), same run per group</text>']
y = 40
top = max([b[2] for b in bars] + [1])
lo = 10
scale = lambda v: (math.log10(max(v, lo)) - math.log10(lo)) / (math.log10(top * 1.5) - math.log10(lo)) * (width - left - 120)
previous = None
for group, label, value in bars:
    if group != previous:
        y += gap
        svg.append(f'<text x="10" y="{y + 12}" font-weight="bold">{group}</text>')
        previous = group
    w = max(scale(value), 1)
    svg.append(f'<text x="{left - 8}" y="{y + 12}" text-anchor="end">{label}</text>')
    svg.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{COLOURS[label]}"/>')
    svg.append(f'<text x="{left + w + 6:.1f}" y="{y + 12}">{value:,.0f}</text>')
    y += bar_h + 4
y += 40
svg.append(f'<text x="10" y="{y}" font-size="16" font-weight="bold">Latency at 10,000 msg/s, microseconds (p50 solid, p99 light)</text>')
y += 15
top_lat = max([l[2]["p99"] for l in latency] + [1])
for group, label, lat in latency:
    for q, opacity in (("p50", 1.0), ("p99", 0.45)):
        w = max(lat[q] / (top_lat * 1.2) * (width - left - 120), 1)
        svg.append(f'<text x="{left - 8}" y="{y + 12}" text-anchor="end">{group}, {label} {q}</text>')
        svg.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{COLOURS[label]}" fill-opacity="{opacity}"/>')
        svg.append(f'<text x="{left + w + 6:.1f}" y="{y + 12}">{lat[q]:,.0f}</text>')
        y += bar_h + 4
svg.append("</svg>")
(out / "benchmarks.svg").write_text("\n".join(svg) + "\n")
print()
print(f"chart: {out / 'benchmarks.svg'}")
