"""Fair shares between tenants: another tenant's jobs behind one tenant's backlog.

``python -m benchmarks.fairness`` starts a private Redis, the simulator and one worker process
(``streamq worker``), then for each workload: tenant A enqueues a backlog (default 2,000 jobs),
the worker works through it, and tenant B enqueues 10 jobs one after another. For each of B's
jobs it prints the starts between its enqueue and its own start, with fair sharing (measured,
from each job's ``started_ms``) and under arq's FIFO order (computed from the enqueue order:
every job of A's backlog not started yet goes first), in starts and in seconds, next to the
bound (``(k-1) + k * w_A / w_B + slots``). ``--quick`` runs a smaller backlog and two
workloads; without it the tables go to ``benchmarks/results/fairness.md`` too.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from tests.harness.processes import clean_environment, spawn, stop
from tests.harness.waiting import poll_until

from benchmarks.processes import LONG_START, listening
from streamq import Settings, StreamQ
from streamq.core.clock import server_time_ms
from streamq.core.keys import Keys, fair_order
from streamq.dev.local_redis import LocalRedis, free_port

RESULTS = Path(__file__).parent / "results" / "fairness.md"
# Each job: 4 deltas at 200/s, ~20 ms of streaming, so a backlog is seconds long.
JOB = {"simulator": {"reply_tokens": 4, "tokens_per_second": 200}}
WARM_UP = 20  # A's jobs started before B enqueues: the worker is in its stride


@dataclass
class Workload:
    """One run: the worker's slots and the tenants' weights."""

    concurrency: int
    weight_a: float = 1.0
    weight_b: float = 1.0

    @property
    def label(self) -> str:
        weights = f"w_A={self.weight_a:g}, w_B={self.weight_b:g}"
        return f"{self.concurrency} slot{'s' * (self.concurrency > 1)}, {weights}"

    def bound(self, k: int) -> int:
        """Starts between B's k-th enqueue and its start, at most: B's earlier ones, A's
        jobs tagged up to its tag, and the slots picked just before it was enqueued."""
        return (k - 1) + math.floor(k * self.weight_a / self.weight_b + 1e-9) + self.concurrency


@dataclass
class Row:
    """B's k-th job."""

    k: int
    fair_ahead: int
    fair_seconds: float
    fifo_ahead: int
    fifo_seconds: float
    bound: int


@dataclass
class Result:
    workload: Workload
    backlog: int
    rows: list[Row] = field(default_factory=list)
    starts_per_second: float = 0.0


class Bench:
    """A private Redis, the simulator, and a worker started per workload."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.redis_server = LocalRedis().start()
        self.redis = Redis.from_url(self.redis_server.url)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.env = clean_environment({"REDIS_URL": self.redis_server.url})
        self.env["OPENAI_API_KEY"] = "unused"

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = self.log_dir / f"{name}.log"
        process = spawn(args, log=log, env={**self.env, **env}, cwd=self.log_dir)
        self.procs.append(process)
        return process

    async def aclose(self) -> None:
        for process in self.procs:
            stop(process)
        await self.redis.aclose()
        self.redis_server.stop()


async def run_workload(
    bench: Bench, sim_url: str, workload: Workload, backlog: int, few: int
) -> Result:
    print(f"== {workload.label}: A enqueues {backlog}, then B {few}", flush=True)
    await bench.redis.flushdb()
    settings = Settings(
        redis_url=bench.redis_server.url, openai_base_url=sim_url, tenant_weights={
            "a": workload.weight_a, "b": workload.weight_b,
        },
    )  # fmt: skip
    keys = Keys(settings.key_prefix)
    worker_env = {"STREAMQ_CONCURRENCY": str(workload.concurrency), "OPENAI_BASE_URL": sim_url}
    worker = bench.start(f"worker-{workload.concurrency}", ["-m", "streamq", "worker"], worker_env)
    result = Result(workload, backlog)
    try:
        async with StreamQ(bench.redis, settings) as sq:
            a_ids: list[str] = []
            for batch in range(0, backlog, 200):
                jobs = await asyncio.gather(
                    *(sq.enqueue_chat(f"a {i}", tenant="a", extra_body=JOB)
                      for i in range(batch, min(backlog, batch + 200)))
                )  # fmt: skip
                a_ids += [job.id for job in jobs]
            order = fair_order(settings.queue_name)

            async def warmed_up() -> bool:
                waiting: int = await bench.redis.zcard(order)
                return waiting <= backlog - WARM_UP

            await poll_until(warmed_up, 120, "the worker starting A's jobs")
            began = time.monotonic()
            enqueued_ms: list[int] = []
            b_ids: list[str] = []
            for i in range(few):
                enqueued_ms.append(await server_time_ms(bench.redis))
                b_ids.append((await sq.enqueue_chat(f"b {i}", tenant="b", extra_body=JOB)).id)
            for job_id in b_ids:
                await sq.job(job_id).result(timeout=120)
            elapsed = time.monotonic() - began
        started = await started_ms(bench.redis, keys, a_ids + b_ids)
    finally:
        stop(worker)
    a_started = [ms for job_id in a_ids if (ms := started[job_id]) is not None]
    starts = [ms for ms in started.values() if ms is not None]
    window = [ms for ms in starts if ms >= enqueued_ms[0]]
    result.starts_per_second = len(window) / elapsed
    for k, (job_id, enqueued) in enumerate(zip(b_ids, enqueued_ms, strict=True), start=1):
        start = started[job_id]
        assert start is not None
        # Ties at the millisecond count as ahead: the figure errs on the long side.
        ahead = sum(1 for ms in starts if enqueued <= ms <= start)
        fifo = sum(1 for ms in a_started if ms < enqueued)
        fifo_ahead = backlog - fifo + (k - 1)
        result.rows.append(
            Row(
                k=k,
                fair_ahead=ahead - 1,  # not itself
                fair_seconds=(start - enqueued) / 1000,
                fifo_ahead=fifo_ahead,
                fifo_seconds=fifo_ahead / result.starts_per_second,
                bound=workload.bound(k),
            )
        )
    print(table(result), flush=True)
    return result


async def started_ms(redis: Redis, keys: Keys, job_ids: list[str]) -> dict[str, int | None]:
    """Each job's first claim (Redis time, ms), or None if no worker started it."""
    async with redis.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.hget(keys.state(job_id), "started_ms")
        values: list[Any] = await pipe.execute()
    return {j: None if v is None else int(v) for j, v in zip(job_ids, values, strict=True)}


def table(result: Result) -> str:
    lines = [
        f"**{result.workload.label}**, A's backlog {result.backlog}: "
        f"{result.starts_per_second:.0f} starts/s while B's jobs ran",
        "",
        "| B's job k | starts ahead, fair | bound | wait, fair (s) | starts ahead, FIFO | "
        "wait, FIFO (s, computed) |",
        "|---|---|---|---|---|---|",
    ]
    for row in result.rows:
        lines.append(
            f"| {row.k} | {row.fair_ahead} | {row.bound} | {row.fair_seconds:.2f} | "
            f"{row.fifo_ahead} | {row.fifo_seconds:.1f} |"
        )
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> list[Result]:
    log_dir = Path(tempfile.mkdtemp(prefix="streamq-fairness-"))
    print(f"logs in {log_dir}", flush=True)
    bench = Bench(log_dir)
    workloads = [Workload(1), Workload(8)]
    if not args.quick:
        workloads += [Workload(1, weight_a=3), Workload(1, weight_b=3)]
    backlog = 400 if args.quick else args.backlog
    try:
        sim_port = free_port()
        bench.start("simulator", ["-m", "streamq", "simulate", "--port", str(sim_port)], {})
        await listening(sim_port, "the simulator", timeout=LONG_START)
        sim_url = f"http://127.0.0.1:{sim_port}/v1"
        return [await run_workload(bench, sim_url, w, backlog, args.few) for w in workloads]
    finally:
        await bench.aclose()


REPORT = """# Fair shares between tenants

`python -m benchmarks.fairness` ({when}, {machine}). One worker process, the simulator (each job
4 deltas at 200/s), a private Redis. Tenant A enqueues {backlog} jobs; once the worker has
started {warm_up} of them, tenant B enqueues {few}, one after another. "Starts ahead" counts
the jobs that started between B's job's enqueue and its own start (from each job's
`started_ms`, Redis time in ms: ties count as ahead, so the fair figures err on the long side).
FIFO is arq's order without fair sharing, computed from the enqueue order: every job of A's
backlog not started when B's job was enqueued goes first; its seconds are those starts at the
rate measured in the same run.

**The bound.** A job's virtual start tag is `max(clock, its tenant's last tag) + 1/w`, and a
free slot takes the lowest tag. When B's k-th job is enqueued, every job tagged at or below the
clock has been picked, so ahead of it are at most B's k-1 earlier jobs, A's jobs tagged up to
its own tag (at most `k * w_A / w_B`), and the jobs picked just before it was enqueued that had
not started yet (at most the free slots of that pick: the worker's concurrency, the fleet's
with several workers): **at most `(k-1) + k * w_A / w_B + slots` starts**, with equal weights
and one slot `2k`. It does not depend on the backlog. Jobs put back in the queue (a retry, a
reaped job) go to the front and can add to it; so can jobs that were never tagged (enqueued by
an older producer), which run only when no tagged job is ready.

{tables}
"""


def report(results: list[Result], args: argparse.Namespace) -> str:
    return REPORT.format(
        when=time.strftime("%Y-%m-%d"),
        machine=f"{platform.machine()}, {platform.python_version()}",
        backlog=results[0].backlog,
        warm_up=WARM_UP,
        few=args.few,
        tables="\n\n".join(table(result) for result in results),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backlog", type=int, default=2000, help="tenant A's jobs")
    parser.add_argument("--few", type=int, default=10, help="tenant B's jobs")
    parser.add_argument("--quick", action="store_true", help="backlog 400, two workloads")
    args = parser.parse_args()
    results = asyncio.run(run(args))
    worst = max(row.fair_ahead - row.bound for result in results for row in result.rows)
    print(f"fair starts ahead minus the bound, at worst: {worst} (<= 0: within)")
    if not args.quick:
        RESULTS.write_text(report(results, args))
        print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
