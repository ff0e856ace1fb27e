"""``benchmarks/plots.py``: SVG charts from a benchmark's JSON results, valid SVG each."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from benchmarks import plots

SVG = "{http://www.w3.org/2000/svg}"


def sample() -> dict[str, Any]:
    """A small results dict shaped as `make bench` writes benchmarks/results/latest.json."""

    def workload(rate: float, cpu: float, lag: float | None) -> dict[str, Any]:
        return {
            "deltas_per_s": rate,
            "worker_cpu_us": cpu,
            "delivery_p50_ms": lag,
            "delivery_p99_ms": None if lag is None else lag * 5,
            "delivery_p100_ms": None if lag is None else lag * 9,
        }

    return {
        "latency": {
            "direct": {"p50_ms": 1.1, "p99_ms": 2.0, "max_ms": 3.5},
            "naive": {"p50_ms": 1.9, "p99_ms": 4.2, "max_ms": 9.0},
            "streamq": {"p50_ms": 2.2, "p99_ms": 6.1, "max_ms": 12.0},
        },
        "config": {
            "workloads": [
                {"key": "single", "streams": 1},
                {"key": "burst100", "streams": 100},
                {"key": "slow1000", "streams": 1000},
            ]
        },
        "workloads": {
            "single": {
                "direct": workload(9000, 60, None),
                "naive": workload(4000, 140, 0.4),
                "streamq": workload(8500, 55, 0.6),
            },
            "burst100": {
                "direct": workload(11000, 50, None),
                "naive": workload(5000, 130, 3.0),
                "streamq": workload(14000, 30, 2.0),
            },
            "slow1000": {
                "direct": workload(4900, 330, None),
                "naive": workload(4800, 400, 1.5),
                "streamq": workload(4950, 320, 1.2),
            },
        },
    }


def test_plots_are_valid_svg(tmp_path: Path) -> None:
    """Every chart is written, parses as SVG and draws one mark per figure it was given."""
    results = tmp_path / "latest.json"
    results.write_text(json.dumps(sample()), encoding="utf-8")
    assert plots.main([str(results)]) == 0
    written = sorted(p.name for p in tmp_path.glob("*.svg"))
    assert written == sorted(plots.CHARTS)
    roots = {name: ET.parse(tmp_path / name).getroot() for name in written}
    for name, root in roots.items():
        assert root.tag == f"{SVG}svg", name
        assert root.findtext(f"{SVG}title"), name
    bars = roots["first-delta.svg"].findall(f"{SVG}rect[{SVG}title]")
    assert len(bars) == 9  # 3 columns x p50, p99, max
    assert len(roots["worker-cpu.svg"].findall(f"{SVG}rect[{SVG}title]")) == 9
    assert len(roots["delivery-lag.svg"].findall(f"{SVG}rect[{SVG}title]")) == 18
    lines = roots["throughput.svg"].findall(f"{SVG}polyline")
    assert len(lines) == 3
    assert len(roots["throughput.svg"].findall(f"{SVG}circle")) == 9


def test_missing_figures_leave_charts_out(tmp_path: Path) -> None:
    """Results of some phases only (`--only latency`) give only the charts they can."""
    written = plots.write_plots({"latency": sample()["latency"]}, tmp_path)
    assert [p.name for p in written] == ["first-delta.svg"]
    assert plots.main([str(tmp_path / "missing.json")]) == 2


def test_labels_are_escaped(tmp_path: Path) -> None:
    """A workload key with markup in it stays text."""
    results = sample()
    results["workloads"] = {"<b>&": results["workloads"]["single"]}
    results["config"]["workloads"] = [{"key": "<b>&", "streams": 1}]
    for path in plots.write_plots(results, tmp_path):
        ET.parse(path)
