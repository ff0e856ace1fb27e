"""``make bench``: direct vs naive vs streamq, side by side, in one run on this machine.

Starts its own redis-server, the simulator, one streamq worker, one naive worker and three client
processes; runs the phases; prints the table and writes ``benchmarks/results/latest.{json,md}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import streamq
from benchmarks.common import Endpoints, aimock_fixtures
from benchmarks.processes import ROOT, Processes
from benchmarks.report import render, targets
from benchmarks.workloads import (
    WORKLOADS,
    Bench,
    first_delta_latency,
    idle_workers,
    latency_jobs,
    run_workload,
    simulator_rate,
)
from streamq import Settings, StreamQ
from streamq.core.connections import redis_from_url

RESULTS = Path(__file__).resolve().parent / "results"
LATENCY_SAMPLES = 200
LATENCY_WARMUP = 20
IDLE_SECONDS = 5.0
STREAMQ_CONCURRENCY = 1000  # the 1,000-stream workload on one worker; otherwise defaults
AIMOCK_LATENCY = "aimock-latency"
PHASES = ("latency", "idle", *(workload.key for workload in WORKLOADS), AIMOCK_LATENCY)
QUICK = 0.2  # --quick: a fifth of the streams and of the latency samples


def progress_printer() -> Callable[[str], None]:
    began = time.monotonic()

    def progress(message: str) -> None:
        print(f"[{time.monotonic() - began:6.1f}s] {message}", file=sys.stderr, flush=True)

    return progress


async def run(
    progress: Callable[[str], None], phases: list[str], multiplexer: bool, scale: float = 1.0
) -> dict[str, Any]:
    """Start everything, run the phases, stop everything; the results as a dict."""
    main = asyncio.current_task()
    assert main is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)
    with tempfile.TemporaryDirectory(prefix="streamq-bench-") as log_dir:
        processes = Processes(Path(log_dir))
        try:
            return await _run(processes, progress, phases, multiplexer, scale)
        except Exception:
            print(processes.log_tails(), file=sys.stderr)
            raise
        finally:
            progress("stopping everything the benchmark started ...")
            # A second Ctrl-C must not cut this short (it takes 15 s at most).
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            await processes.aclose()


async def _run(
    processes: Processes,
    progress: Callable[[str], None],
    phases: list[str],
    multiplexer: bool,
    scale: float,
) -> dict[str, Any]:
    progress("starting redis-server, the simulator, the workers and the client processes ...")
    server = processes.start_redis()
    base_url = await processes.start_simulator()
    workloads = [w if scale == 1 else w.scaled(scale) for w in WORKLOADS if w.key in phases]
    samples, warmup = round(LATENCY_SAMPLES * scale), round(LATENCY_WARMUP * scale)
    aimock_url = ""
    if AIMOCK_LATENCY in phases or any(w.upstream == "aimock" for w in workloads):
        jobs = [job for w in workloads if w.upstream == "aimock" for job in w.jobs("", 0)]
        jobs += latency_jobs("", 1, "aimock")
        aimock_url = await processes.start_aimock(aimock_fixtures(jobs)) or ""
        if not aimock_url:
            progress("aimock is not installed (`make compat` installs it): its phases are skipped")
            phases = [p for p in phases if p != AIMOCK_LATENCY]
            workloads = [w for w in workloads if w.upstream != "aimock"]
    prefix = f"bench{os.getpid()}"
    endpoints = Endpoints(server.url, base_url, prefix, f"{prefix}:queue", aimock_url)
    redis = redis_from_url(server.url)
    settings = Settings(redis_url=server.url, key_prefix=prefix, queue_name=endpoints.queue_name)
    async with redis, StreamQ(redis, settings) as producer:
        info = await redis.info("server")
        streamq_worker = await processes.start_streamq_worker(endpoints, redis, STREAMQ_CONCURRENCY)
        naive_worker = await processes.start_naive_worker(endpoints, redis)
        agents = {
            role: await processes.start_agent(role, endpoints)
            for role in ("direct", "naive-reader", "streamq-reader")
        }
        bench = Bench(
            endpoints=endpoints,
            redis=redis,
            redis_port=server.port,
            producer=producer,
            agents=agents,
            pids={
                **{role: agent.pid for role, agent in agents.items()},
                "naive-worker": naive_worker.pid,
                "streamq-worker": streamq_worker.pid,
                "redis": int(info["process_id"]),
                "simulator": processes.popens["simulator"].pid,
                **({"aimock": processes.popens["aimock"].pid} if aimock_url else {}),
                "producer": os.getpid(),
            },
            multiplexer=multiplexer,
            progress=progress,
        )
        results: dict[str, Any] = {
            "machine": machine(str(info["redis_version"])),
            "config": {
                "phases": phases,
                "workloads": [vars(w) for w in workloads],
                "latency_samples": samples,
                "latency_warmup": warmup,
                "aimock": bool(aimock_url),
                "idle_seconds": IDLE_SECONDS,
                "streamq_concurrency": STREAMQ_CONCURRENCY,
                "streamq_reader": "Multiplexer" if bench.multiplexer else "job.events() per job",
            },
            "workloads": {},
        }
        progress("measuring the simulator's emission rate ...")
        port = int(base_url.rpartition(":")[2].partition("/")[0])
        rate = await simulator_rate("127.0.0.1", port, 4, 25_000, bench.pids["simulator"])
        results["simulator"] = rate
        progress(f"simulator: {rate['chunks_per_s']:,.0f} chunks/s from one process")
        if "latency" in phases:
            results["latency"] = await first_delta_latency(bench, samples, warmup)
        if "idle" in phases:
            results["idle"] = await idle_workers(bench, IDLE_SECONDS)
        for workload in workloads:
            if workload.upstream == "simulator":
                results["workloads"][workload.key] = await run_workload(bench, workload)
        if aimock_url:
            # The streamq worker's upstream is its OPENAI_BASE_URL: start it again on aimock.
            progress(f"aimock at {aimock_url}: starting the streamq worker again against it ...")
            worker = await processes.restart_streamq_worker(
                endpoints, redis, STREAMQ_CONCURRENCY, aimock_url
            )
            bench.pids["streamq-worker"] = worker.pid
            if AIMOCK_LATENCY in phases:
                results["aimock_latency"] = await first_delta_latency(
                    bench, samples, warmup, "aimock"
                )
            for workload in workloads:
                if workload.upstream == "aimock":
                    results["workloads"][workload.key] = await run_workload(bench, workload)
        return results


def machine(redis_version: str) -> dict[str, Any]:
    """What the figures were measured on."""
    model = ""
    if Path("/proc/cpuinfo").exists():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "redis": redis_version,
        "openai": version("openai"),
        "redis-py": version("redis"),
        "hiredis": version("hiredis"),
        "streamq": streamq.__version__,
        "commit": source_revision(),
    }


def source_revision() -> str | None:
    """The commit the measured code is at, marked ``+dirty`` when ``src/`` has changes."""
    try:
        git = ["git", "-C", str(ROOT)]
        commit = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--", "src"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+dirty" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Direct vs naive vs streamq, side by side. With an option, results are "
        "printed but not written to benchmarks/results/.",
    )
    parser.add_argument(
        "--only",
        help=f"comma-separated phases to run, of: {','.join(PHASES)}",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK:g}x the streams of each workload and the latency samples (for CI)",
    )
    parser.add_argument(
        "--json",
        type=Path,
        help="also write every figure to this file (with any option; for the plots)",
    )
    parser.add_argument(
        "--events-per-job",
        action="store_true",
        help="streamq readers use one job.events() per job even where a Multiplexer exists",
    )
    args = parser.parse_args(argv)
    phases = args.only.split(",") if args.only else list(PHASES)
    if unknown := set(phases) - set(PHASES):
        parser.error(f"unknown phases: {', '.join(sorted(unknown))}")
    began = time.monotonic()
    progress = progress_printer()
    try:
        multiplexer = hasattr(streamq, "Multiplexer") and not args.events_per_job
        scale = QUICK if args.quick else 1.0
        results = asyncio.run(run(progress, phases, multiplexer, scale))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted: everything the benchmark started has been stopped", file=sys.stderr)
        return 130
    results["runtime_s"] = time.monotonic() - began
    results["finished_at"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    results["targets"] = targets(results)
    table = render(results)
    print(table)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if args.only or args.events_per_job or args.quick:
        return 0
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / "latest.md").write_text(table + "\n")
    progress(f"done in {results['runtime_s']:.0f} s; wrote {RESULTS / 'latest.json'} and latest.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
