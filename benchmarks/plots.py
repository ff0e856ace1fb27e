"""SVG charts of a benchmark run: ``python -m benchmarks.plots [RESULTS.json] [--out DIR]``.

Reads what ``make bench`` writes to ``benchmarks/results/latest.json`` and writes, next to it:

- ``first-delta.svg``: enqueue → first delta, p50 / p99 / max per column (the latency phase);
- ``delivery-lag.svg``: Redis → reader lag, p50 / p99 / max per workload, naive vs streamq;
- ``throughput.svg``: end-to-end deltas/s against concurrent streams, one line per column;
- ``worker-cpu.svg``: worker CPU µs per delta per workload, direct vs naive vs streamq.

The JSON shape it reads (every figure optional; missing ones are left out of the charts)::

    {"latency":   {COLUMN: {"p50_ms": float, "p99_ms": float, "max_ms": float}},
     "config":    {"workloads": [{"key": str, "streams": int, ...}]},
     "workloads": {KEY: {COLUMN: {"deltas_per_s": float, "worker_cpu_us": float,
                                  "delivery_p50_ms": float, "delivery_p99_ms": float,
                                  "delivery_p100_ms": float}}}}

with COLUMN one of ``direct``, ``naive``, ``streamq``. Plain SVG written by hand (no plotting
library): a few rectangles, lines and labels per chart, readable on GitHub and in a browser.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from xml.etree import ElementTree
from xml.sax.saxutils import escape

RESULTS = Path(__file__).parent / "results"
COLUMNS = ("direct", "naive", "streamq")
COLORS = {"direct": "#7a869a", "naive": "#d98e04", "streamq": "#2f6fdf"}
SHADES = ("#9ec1f7", "#2f6fdf", "#173a7a")  # p50, p99, max
WIDTH, HEIGHT = 720, 360
LEFT, RIGHT, TOP, BOTTOM = 70, 20, 50, 70
FONT = "font-family='system-ui, sans-serif'"


def _text(
    x: float,
    y: float,
    content: str,
    *,
    anchor: str = "start",
    size: int = 12,
    fill: str = "#1d2330",
    weight: str = "400",
) -> str:
    return (
        f"<text x='{x:.1f}' y='{y:.1f}' text-anchor='{anchor}' {FONT} font-size='{size}' "
        f"fill='{fill}' font-weight='{weight}'>{escape(content)}</text>"
    )


def _number(value: float) -> str:
    if value == int(value):
        return f"{int(value):,}"
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _nice_max(value: float) -> float:
    """A round axis maximum at or above ``value``."""
    if value <= 0:
        return 1.0
    power = float(10 ** math.floor(math.log10(value)))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * power:
            return step * power
    return 10 * power


def _svg(title: str, body: list[str], legend: Sequence[tuple[str, str]]) -> str:
    items = []
    x = LEFT
    for label, color in legend:
        items.append(f"<rect x='{x}' y='30' width='10' height='10' fill='{color}'/>")
        items.append(_text(x + 14, 39, label))
        x += 24 + 7 * len(label)
    return "\n".join([
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{WIDTH}' height='{HEIGHT}' "
        f"viewBox='0 0 {WIDTH} {HEIGHT}' role='img'>",
        f"<title>{escape(title)}</title>",
        f"<rect width='{WIDTH}' height='{HEIGHT}' fill='#ffffff'/>",
        _text(LEFT, 20, title, size=14, weight="600"),
        *items,
        *body,
        "</svg>",
    ]) + "\n"  # fmt: skip


def _y_axis(top: float, unit: str, log: bool = False, bottom: float = 0.0) -> list[str]:
    """Gridlines and labels of the value axis, from ``bottom`` (0, or log's least) to ``top``."""
    height = HEIGHT - TOP - BOTTOM
    parts = [_text(12, TOP - 6, unit)]
    if log:
        ticks = [10**e for e in range(int(math.log10(bottom)), int(math.log10(top)) + 1)]
    else:
        ticks = [top * i / 4 for i in range(5)]
    for tick in ticks:
        y = TOP + height - _scale(tick, top, log, bottom) * height
        parts.append(
            f"<line x1='{LEFT}' x2='{WIDTH - RIGHT}' y1='{y:.1f}' y2='{y:.1f}' stroke='#e3e6ec'/>"
        )
        parts.append(_text(LEFT - 6, y + 4, _number(tick), anchor="end"))
    return parts


def _scale(value: float, top: float, log: bool, bottom: float) -> float:
    if log:
        return (math.log10(value) - math.log10(bottom)) / (math.log10(top) - math.log10(bottom))
    return value / top


def bar_chart(
    title: str,
    unit: str,
    groups: Sequence[tuple[str, Sequence[tuple[str, float | None]]]],
    colors: Sequence[str],
) -> str:
    """Grouped bars: ``groups`` of (label, [(series, value), ...]); ``None`` leaves a gap."""
    values = [v for _, bars in groups for _, v in bars if v is not None]
    top = _nice_max(max(values, default=1.0))
    height = HEIGHT - TOP - BOTTOM
    group_width = (WIDTH - LEFT - RIGHT) / max(1, len(groups))
    body = _y_axis(top, unit)
    names: list[str] = []
    for g, (label, bars) in enumerate(groups):
        bar_width = group_width * 0.8 / max(1, len(bars))
        x0 = LEFT + g * group_width + group_width * 0.1
        for b, (name, value) in enumerate(bars):
            if name not in names:
                names.append(name)
            if value is None:
                continue
            h = value / top * height
            x = x0 + b * bar_width
            color = colors[names.index(name) % len(colors)]
            body.append(
                f"<rect x='{x:.1f}' y='{TOP + height - h:.1f}' width='{bar_width * 0.9:.1f}' "
                f"height='{h:.1f}' fill='{color}'><title>{escape(label)} {escape(name)}: "
                f"{_number(value)} {escape(unit)}</title></rect>"
            )
        for line, words in enumerate(label.split(" ", 1)):  # "burst100 streamq": two lines
            y = HEIGHT - BOTTOM + 18 + 15 * line
            body.append(_text(x0 + group_width * 0.4, y, words, anchor="middle"))
    legend = [(name, colors[i % len(colors)]) for i, name in enumerate(names)]
    return _svg(title, body, legend)


def line_chart(
    title: str,
    unit: str,
    x_label: str,
    series: dict[str, list[tuple[float, float, str]]],
) -> str:
    """Lines over a log x axis: ``series`` maps a name to (x, y, point label) points."""
    points = [p for line in series.values() for p in line]
    xs = sorted({x for x, _, _ in points}) or [1.0]
    top = _nice_max(max((y for _, y, _ in points), default=1.0))
    height = HEIGHT - TOP - BOTTOM
    low, high = math.log10(min(xs)) - 0.3, math.log10(max(xs)) + 0.3

    def px(x: float) -> float:
        return LEFT + (math.log10(x) - low) / (high - low) * (WIDTH - LEFT - RIGHT)

    body = _y_axis(top, unit)
    for x in xs:
        labels = sorted({label for px_, _, label in points if px_ == x})
        body.append(_text(px(x), HEIGHT - BOTTOM + 18, _number(x), anchor="middle"))
        body.append(
            _text(px(x), HEIGHT - BOTTOM + 34, ", ".join(labels), anchor="middle", fill="#667")
        )
    body.append(_text((WIDTH + LEFT) / 2, HEIGHT - 8, x_label, anchor="middle"))
    for name, line in series.items():
        color = COLORS.get(name, "#444")
        coords = [(px(x), TOP + height - y / top * height) for x, y, _ in sorted(line)]
        if len(coords) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
            body.append(
                f"<polyline points='{path}' fill='none' stroke='{color}' stroke-width='2'/>"
            )
        for (x, y), (_, value, label) in zip(coords, sorted(line), strict=True):
            body.append(
                f"<circle cx='{x:.1f}' cy='{y:.1f}' r='4' fill='{color}'><title>{escape(name)} "
                f"{escape(label)}: {_number(value)} {escape(unit)}</title></circle>"
            )
    return _svg(title, body, [(name, COLORS.get(name, "#444")) for name in series])


def _get(figures: dict[str, Any] | None, key: str) -> float | None:
    value = (figures or {}).get(key)
    return None if value is None else float(value)


def first_delta(results: dict[str, Any]) -> str | None:
    latency = results.get("latency")
    if not latency:
        return None
    groups = [
        (column, [(p, _get(latency.get(column), f"{p}_ms")) for p in ("p50", "p99", "max")])
        for column in COLUMNS
        if column in latency
    ]
    return bar_chart("Enqueue → first delta, sequential jobs (ms)", "ms", groups, SHADES)


def delivery_lag(results: dict[str, Any]) -> str | None:
    groups = []
    for key, figures in results.get("workloads", {}).items():
        for column in ("naive", "streamq"):
            values = [(p, _get(figures.get(column), f"delivery_{p}_ms")) for p in ("p50", "p99")]
            values.append(("max", _get(figures.get(column), "delivery_p100_ms")))
            if any(v is not None for _, v in values):
                groups.append((f"{key} {column}", values))
    if not groups:
        return None
    return bar_chart("Delivery lag, Redis → reader (ms)", "ms", groups, SHADES)


def throughput(results: dict[str, Any]) -> str | None:
    streams = {w["key"]: w["streams"] for w in results.get("config", {}).get("workloads", [])}
    series: dict[str, list[tuple[float, float, str]]] = {}
    for key, figures in results.get("workloads", {}).items():
        for column in COLUMNS:
            rate = _get(figures.get(column), "deltas_per_s")
            if rate is not None and key in streams:
                series.setdefault(column, []).append((float(streams[key]), rate, key))
    if not series:
        return None
    return line_chart(
        "End-to-end deltas/s by concurrent streams", "deltas/s", "concurrent streams", series
    )


def worker_cpu(results: dict[str, Any]) -> str | None:
    groups = [
        (key, [(column, _get(figures.get(column), "worker_cpu_us")) for column in COLUMNS])
        for key, figures in results.get("workloads", {}).items()
    ]
    if not groups:
        return None
    colors = [COLORS[column] for column in COLUMNS]
    return bar_chart("Worker CPU per delta: direct vs naive vs streamq (µs)", "µs", groups, colors)


CHARTS = {
    "first-delta.svg": first_delta,
    "delivery-lag.svg": delivery_lag,
    "throughput.svg": throughput,
    "worker-cpu.svg": worker_cpu,
}


def write_plots(results: dict[str, Any], out: Path) -> list[Path]:
    """Write every chart the results have figures for; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, chart in CHARTS.items():
        svg = chart(results)
        if svg is not None:
            ElementTree.fromstring(svg)  # hand-written: never write one a browser cannot parse
            (out / name).write_text(svg, encoding="utf-8")
            written.append(out / name)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.plots", description=__doc__)
    parser.add_argument("results", nargs="?", type=Path, default=RESULTS / "latest.json")
    parser.add_argument("--out", type=Path, help="default: the results file's directory")
    args = parser.parse_args(argv)
    if not args.results.is_file():
        print(f"{args.results}: no such file; run `make bench` first", file=sys.stderr)
        return 2
    results = json.loads(args.results.read_text(encoding="utf-8"))
    for path in write_plots(results, args.out or args.results.parent):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
