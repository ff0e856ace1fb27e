"""The results as one table (figures by column, ratios, targets) and target checks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from benchmarks.workloads import COLUMNS, WORKLOADS

SIMULATOR_FLOOR = 30_000  # chunks/s: well above the ~10k deltas/s one SDK process can read


@dataclass(frozen=True)
class Target:
    """The issue's target for one figure of the streamq column."""

    text: str
    check: Callable[[float], bool]
    ratio: bool = False  # compare streamq ÷ direct rather than the figure itself


def at_most(limit: float, ratio: bool = False) -> Target:
    return Target(f"≤ {limit:g}{'x direct' if ratio else ''}", lambda v: v <= limit, ratio)


def at_least(limit: float, ratio: bool = False) -> Target:
    return Target(f"≥ {limit:g}{'x direct' if ratio else ''}", lambda v: v >= limit, ratio)


@dataclass(frozen=True)
class Row:
    """One figure: where it is in a column's results, how to show it, its target if any."""

    label: str
    key: str
    digits: int = 1
    scale: float = 1.0
    ratio: bool = False  # show naive ÷ direct and streamq ÷ direct
    target: Target | None = None
    columns: tuple[str, ...] = COLUMNS


QUEUED = COLUMNS[1:]  # the columns that go through Redis
TARGETS = {
    ("burst100", "deltas_per_s"): at_least(1.2, ratio=True),
    ("burst100", "worker_cpu_us"): at_most(0.3, ratio=True),
    ("burst100", "reader_cpu_us"): at_most(15),
    ("burst100", "stream_bytes_per_delta"): at_most(40),
    ("slow1000", "publish_p99_ms"): at_most(50),
    ("slow1000", "delivery_p99_ms"): at_most(50),
    ("slow1000", "worker_cpu_us"): at_most(0.6, ratio=True),
    ("slow1000", "redis_commands_per_delta"): at_most(1.5),
    ("slow1000", "worker_rss_per_stream"): at_most(64),
    ("slow1000", "reader_connections"): at_most(4),
    ("aimock-burst100", "worker_cpu_us"): at_most(0.3, ratio=True),
    ("aimock-starts1000", "publish_p99_ms"): at_most(50),
    ("aimock-starts1000", "worker_cpu_us"): at_most(0.6, ratio=True),
    ("aimock-starts1000", "redis_commands_per_delta"): at_most(1.5),
    ("aimock-starts1000", "starts_per_s"): at_least(500),
    ("aimock-starts1000", "start_p99_ms"): at_most(1.0, ratio=True),
}
# Added first-delta latency (streamq's minus direct's time to first delta), by upstream.
LATENCY_TARGETS = {"latency": (3.0, 15.0), "aimock_latency": (3.0, 10.0)}
LATENCY_TITLES = {
    "latency": "first delta: sequential single jobs of 4 deltas, ms",
    "aimock_latency": "aimock: first delta, sequential single jobs of 4 deltas, ms",
}


def workload_rows(key: str) -> list[Row]:
    """The rows shown for a workload, with the issue's targets where it sets one."""
    rows = [
        Row("end-to-end deltas/s", "deltas_per_s", 0, ratio=True),
        Row("worker CPU µs/delta", "worker_cpu_us", ratio=True),
        Row("worker process busy, cores (1 = saturated)", "worker_cores", 2),
        Row("reader CPU µs/delta", "reader_cpu_us", columns=QUEUED),
        Row("Redis server CPU µs/delta", "redis_cpu_us", columns=QUEUED),
        Row("upstream server CPU µs/delta", "simulator_cpu_us"),
        Row("Redis commands/delta", "redis_commands_per_delta", 2, columns=QUEUED),
    ]
    if key == "burst100":
        rows.append(Row("Redis memory B/stored delta", "stream_bytes_per_delta", columns=QUEUED))
    if key != "single":
        rows.append(Row("p99 start delay ms (job due → first delta seen)", "start_p99_ms", 0,
                        ratio=key == "aimock-starts1000"))  # fmt: skip
    if key == "aimock-starts1000":
        rows.append(Row("jobs started per second (to the last first delta)", "starts_per_s", 0))
    if key in ("paced300", "slow1000", "aimock-starts1000", "aimock-realistic"):
        rows += [
            Row("p99 publish lag ms (upstream → Redis)", "publish_p99_ms", columns=QUEUED),
            Row("p99 delivery lag ms (Redis → reader)", "delivery_p99_ms", columns=QUEUED),
            Row("p99 end-to-end lag ms (upstream → reader)", "e2e_p99_ms"),
        ]
    if key in ("slow1000", "aimock-starts1000"):
        rows += [
            Row("peak live streams (first → last delta seen)", "peak_live_streams", 0),
            Row("worker RSS KB per concurrent stream", "worker_rss_per_stream", 1, 1 / 1024),
            Row("Redis connections of the reader process", "reader_connections", 0,
                columns=QUEUED),
        ]  # fmt: skip
    rows.append(Row("other processes on the machine, cores", "other_processes_cores", 2))
    return [replace(row, target=TARGETS.get((key, row.key))) for row in rows]


def _value(figures: dict[str, Any], row: Row) -> float | None:
    value = figures.get(row.key)
    return None if value is None else float(value) * row.scale


def _fmt(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _met(target: Target | None, value: float | None) -> str:
    if target is None:
        return ""
    if value is None:
        return "n/a"
    return "yes" if target.check(value) else "**NO**"


def _row(label: str, values: dict[str, float | None], row: Row, direct: float | None) -> list[str]:
    cells = [label] + [_fmt(values.get(c), row.digits) for c in COLUMNS]
    ratios = ""
    streamq = values.get("streamq")
    if row.ratio and direct:
        naive = values.get("naive")
        ratios = " / ".join(_fmt(v / direct if v is not None else None, 2) + "x"
                            for v in (naive, streamq))  # fmt: skip
    checked = (
        streamq / direct if row.target and row.target.ratio and direct and streamq else streamq
    )
    target = row.target.text if row.target else ""
    return [*cells, ratios, target, _met(row.target, checked)]


def _section(title: str) -> list[str]:
    return [f"**{title}**", "", "", "", "", "", ""]


def _table_rows(results: dict[str, Any]) -> list[list[str]]:
    rows: list[list[str]] = []
    for phase, limits in LATENCY_TARGETS.items():
        if (latency := results.get(phase)) is None:
            continue
        rows.append(_section(LATENCY_TITLES[phase]))
        for p in ("p50", "p99"):
            row = Row(f"enqueue → first delta {p} (direct: TTFT)", f"{p}_ms", 2)
            rows.append(_row(row.label, {c: _value(latency[c], row) for c in COLUMNS}, row, None))
        for p, limit in zip(("p50", "p99"), limits, strict=True):
            row = Row(f"added vs direct TTFT {p}", f"added_{p}_ms", 2, target=at_most(limit))
            rows.append(_row(row.label, {c: _value(latency[c], row) for c in QUEUED}, row, None))
    if idle := results.get("idle"):
        row = Row("idle worker Redis commands/s", "commands_per_s", 1, target=at_most(20))
        rows.append(_row(row.label, {c: _value(idle[c], row) for c in QUEUED}, row, None))
    for workload in WORKLOADS:
        figures = results["workloads"].get(workload.key)
        if figures is None:
            continue
        rows.append(_section(workload.title))
        for row in workload_rows(workload.key):
            values = {c: _value(figures[c], row) for c in row.columns}
            direct = _value(figures["direct"], row) if row.ratio or row.target else None
            rows.append(_row(row.label, values, row, direct))
    return rows


def render(results: dict[str, Any]) -> str:
    """The table and the notes under it, as Markdown that also reads well on a terminal."""
    header = ["figure", *COLUMNS, "naive / streamq vs direct", "target (streamq)", "met?"]
    rows = [header, *_table_rows(results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    aligns = [str.ljust] + [str.rjust] * (len(header) - 2) + [str.ljust]

    def line(cells: list[str]) -> str:
        padded = (
            align(cell, width) for cell, width, align in zip(cells, widths, aligns, strict=True)
        )
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join(
        ("-" * (w + 1) + ":" if align is str.rjust else ":" + "-" * (w + 1))
        for w, align in zip(widths, aligns, strict=True)
    ) + "|"  # fmt: skip
    lines = [line(header), rule, *(line(row) for row in rows[1:])]
    return "\n".join(lines) + "\n\n" + "\n".join(_notes(results))


def _notes(results: dict[str, Any]) -> list[str]:
    machine = results["machine"]
    sim = results["simulator"]
    notes = [
        f"Measured {results['finished_at']} in {results['runtime_s']:.0f} s on {machine['cores']} "
        f"cores ({machine['cpu'] or 'unknown CPU'}, {machine['os']}), Python {machine['python']}, "
        f"Redis {machine['redis']} on loopback, openai {machine['openai']}, redis-py "
        f"{machine['redis-py']} + hiredis {machine['hiredis']}; streamq at "
        f"{machine['commit'] or 'an unknown commit'}, reader for many streams: "
        f"{results['config']['streamq_reader']}.",
        f"Simulator: {sim['chunks_per_s']:,.0f} chunks/s from its one process "
        f"({sim['cpu_us_per_chunk']:.1f} µs CPU per chunk)"
        + (" — too slow to be sure it is not the bottleneck!"
           if sim["chunks_per_s"] < SIMULATOR_FLOOR else "."),
    ]  # fmt: skip
    for phase in LATENCY_TARGETS:
        if (latency := results.get(phase)) is None:
            continue
        parts = ("enqueue", "pickup", "upstream", "delivery")
        p50 = ", ".join(f"{part} {latency['streamq'][f'{part}_p50_ms']:.2f}" for part in parts)
        upstream = "aimock" if phase == "aimock_latency" else "the simulator"
        notes.append(f"streamq first delta against {upstream}, p50 of its parts in ms: {p50}.")
    others = [
        figures["other_processes_cores"]
        for columns in results["workloads"].values()
        for figures in columns.values()
    ]
    if others and max(others) > 0.2:
        notes.append(
            f"Other processes on the machine used up to {max(others):.2f} cores during the "
            "workloads: figures measured under that load are noisier."
        )
    checked = results["targets"]
    notes.append(f"Targets met: {sum(t['met'] for t in checked)} of {len(checked)}.")
    for t in checked:
        if not t["met"]:
            notes.append(f"- not met: {t['figure']}: {_fmt(t['value'], 2)} (target {t['target']})")
    for key, columns in results["workloads"].items():
        for column, figures in columns.items():
            short = figures["deltas"] < figures["expected_deltas"]
            if figures["failed"] or figures["unfinished"] or short:
                notes.append(
                    f"- {key}/{column}: {figures['deltas']:,} of {figures['expected_deltas']:,} "
                    f"deltas, {figures['failed']} jobs failed, {figures['unfinished']} "
                    f"unfinished: {figures['errors']}"
                )
    return notes


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target of the streamq column that was measured: value, target, met or not."""
    checks: list[dict[str, Any]] = []

    def add(figure: str, value: float | None, target: Target) -> None:
        met = value is not None and target.check(value)
        checks.append({"figure": figure, "value": value, "target": target.text, "met": met})

    for phase, (p50, p99) in LATENCY_TARGETS.items():
        if (latency := results.get(phase)) is None:
            continue
        name = "added first-delta latency" + (" vs aimock" if phase == "aimock_latency" else "")
        add(f"{name} p50 (ms)", latency["streamq"]["added_p50_ms"], at_most(p50))
        add(f"{name} p99 (ms)", latency["streamq"]["added_p99_ms"], at_most(p99))
    if idle := results.get("idle"):
        add("idle worker Redis commands/s", idle["streamq"]["commands_per_s"], at_most(20))
    for workload in WORKLOADS:
        figures = results["workloads"].get(workload.key)
        if figures is None:
            continue
        for row in workload_rows(workload.key):
            if row.target is None:
                continue
            value = _value(figures["streamq"], row)
            if row.target.ratio:
                direct = _value(figures["direct"], row)
                value = value / direct if value is not None and direct else None
            add(f"{workload.key}: {row.label}", value, row.target)
    return checks
