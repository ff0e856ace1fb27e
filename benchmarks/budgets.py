"""Token and request budgets: what a provider sees of a budgeted fleet, window by window.

``python -m benchmarks.budgets`` starts a private Redis, the simulator (in this process, so its
record of every request's arrival and tokens can be read) and two worker processes
(``streamq worker``) per workload, enqueues a burst of jobs several windows' worth of tokens
(or requests) large, and waits for all of them. For each workload it prints the most tokens
(requests) the simulator saw in any window next to the budget and the stated bound (the budget
plus one job's estimate), how full the windows were on average while the burst ran (the
budget's use), the estimate's error against the real usage, and the jobs finished.
``--quick`` runs a shorter window and fewer jobs; without it the tables go to
``benchmarks/results/budgets.md`` too.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from tests.harness.processes import worker_processes

from streamq import Settings, StreamQ
from streamq.core.request import build_request, chat_messages
from streamq.dev.local_redis import LocalRedis
from streamq.dev.simulator import SimulatorConfig, SimulatorThread
from streamq.worker.budgets import estimate_tokens

RESULTS = Path(__file__).parent / "results" / "budgets.md"
MODEL = "bench-model"
OUTPUT_DEFAULT = 300  # STREAMQ_BUDGET_OUTPUT_TOKENS: jobs without max_tokens are estimated so
WORKERS = 2
WORDS = ["budget", "window", "token", "estimate", "provider", "fleet", "answer", "stream"]


@dataclass(frozen=True)
class Workload:
    """One run: a budget (tokens or requests per window) and the jobs thrown at it."""

    name: str
    tokens: int | None
    requests: int | None
    jobs: int
    with_max_tokens: float  # the share of jobs that set max_tokens (the others are estimated
    # with OUTPUT_DEFAULT)

    def budget(self) -> str:
        parts = [f"{self.tokens}tpm"] if self.tokens else []
        return "/".join(parts + ([f"{self.requests}rpm"] if self.requests else []))


@dataclass
class Result:
    workload: Workload
    window: float
    peak_tokens: int  # in the fullest window the simulator saw
    peak_requests: int
    bound: int  # the token budget plus the largest estimate
    use: float  # mean tokens (requests) per window over the burst / the budget
    seconds: float
    finished: int
    errors: list[float]  # per job: (estimate - used) / used
    under: int  # the largest underestimate, tokens

    def within(self) -> bool:
        """Whether the simulator saw no more than the stated bounds in any window."""
        w = self.workload
        return (w.tokens is None or self.peak_tokens <= self.bound) and (
            w.requests is None or self.peak_requests <= w.requests
        )


def job_plan(rng: random.Random, index: int, workload: Workload) -> dict[str, Any]:
    """A prompt of 5-60 words and a reply of 20-160 tokens; max_tokens set for some jobs."""
    prompt = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 60))) + f" #{index}"
    reply = rng.randint(20, 160)
    params: dict[str, Any] = {"extra_body": {"simulator": {"reply_tokens": reply}}}
    if rng.random() < workload.with_max_tokens:
        params["max_tokens"] = reply
    return {"prompt": prompt, "params": params}


async def run_workload(
    workload: Workload, window: float, redis_url: str, simulator: SimulatorThread, log_dir: Path
) -> Result:
    slug = "".join(c if c.isalnum() else "-" for c in workload.name)
    prefix = f"bench-budgets-{slug}"
    settings = Settings(
        redis_url=redis_url,
        openai_api_key="sk-bench-not-a-real-key",
        openai_base_url=simulator.base_url,
        openai_model=MODEL,
        queue_name=f"{prefix}:queue",
        key_prefix=prefix,
        poll_interval=0.05,
    )
    env = {
        "STREAMQ_MODEL_BUDGETS": f"{MODEL}={workload.budget()}",
        "STREAMQ_BUDGET_WINDOW": str(window),
        "STREAMQ_BUDGET_OUTPUT_TOKENS": str(OUTPUT_DEFAULT),
    }
    rng = random.Random(15)
    plans = [job_plan(rng, i, workload) for i in range(workload.jobs)]
    estimates = [
        estimate_tokens(
            build_request(chat_messages(p["prompt"]), MODEL, p["params"], max_bytes=100_000),
            OUTPUT_DEFAULT,
        )
        for p in plans
    ]
    async with Redis.from_url(redis_url) as redis, StreamQ(redis, settings) as sq:
        with worker_processes(settings, WORKERS, env=env, log_dir=log_dir / slug) as pool:
            await pool.wait_serving()
            simulator.stats.reset()
            began = time.monotonic()
            jobs = [await sq.enqueue_chat(p["prompt"], **p["params"]) for p in plans]
            results = await asyncio.gather(
                *(job.result(timeout=600) for job in jobs), return_exceptions=True
            )
            seconds = time.monotonic() - began
    served = [s for s in simulator.stats.served if s.model == MODEL]
    busy = (served[-1].at - served[0].at + window) if served else window
    if workload.tokens:  # the budget's use: of the tokens, else of the requests
        use = sum(s.tokens for s in served) / (busy / window) / workload.tokens
    else:
        use = len(served) / (busy / window) / (workload.requests or 1)
    errors, under = [], 0
    for estimate, result in zip(estimates, results, strict=True):
        usage = getattr(result, "usage", None) or {}
        used = usage.get("total_tokens")
        if isinstance(used, int) and used > 0:
            errors.append((estimate - used) / used)
            under = max(under, used - estimate)
    finished = sum(1 for r in results if not isinstance(r, BaseException))
    return Result(
        workload,
        window,
        simulator.stats.peak_tokens(MODEL, window),
        simulator.stats.peak_requests(MODEL, window),
        (workload.tokens or 0) + max(estimates),
        use,
        seconds,
        finished,
        errors,
        under,
    )


def table(results: list[Result]) -> str:
    lines = [
        "| workload | budget per window | window | jobs finished | most tokens in a window "
        "(bound) | most requests in a window | budget used | estimate error, median "
        "(min / max) | largest underestimate | time |",
        "|:--|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in results:
        w = r.workload
        tokens = f"{r.peak_tokens} ({r.bound})" if w.tokens else str(r.peak_tokens)
        error = (
            f"{statistics.median(r.errors):+.0%} ({min(r.errors):+.0%} / {max(r.errors):+.0%})"
            if r.errors
            else "-"
        )
        lines.append(
            f"| {w.name} | {w.budget()} | {r.window:g} s | {r.finished}/{w.jobs} "
            f"| {tokens} | {r.peak_requests} | {r.use:.0%} | {error} | {r.under} tokens "
            f"| {r.seconds:.1f} s |"
        )
    return "\n".join(lines)


def report(results: list[Result], args: argparse.Namespace) -> str:
    when = time.strftime("%Y-%m-%d", time.gmtime())
    machine = f"{platform.system()} {platform.machine()}, {platform.python_version()}"
    return f"""# Token and request budgets

`python -m benchmarks.budgets` ({when}, {machine}). A private Redis, the simulator, {WORKERS}
worker processes; `STREAMQ_MODEL_BUDGETS` as in the table, `STREAMQ_BUDGET_WINDOW` shortened
from a minute to {args.window:g} s so that a run takes seconds, and
`STREAMQ_BUDGET_OUTPUT_TOKENS={OUTPUT_DEFAULT}`. Each job: a prompt of 5-60 words and a reply of
20-160 tokens (the simulator's usage: words + 3, and one token a delta); the jobs of
`with max_tokens` set it to their reply's length, the others are estimated with the default.
All jobs are enqueued at once, several windows' worth.

- **most tokens (requests) in a window**: the most the simulator received in any
  {args.window:g} s, by arrival; the **bound** is the token budget plus one job's estimate
  (the largest), the guarantee of docs/operations.md for jobs that set `max_tokens`; for
  requests, the request budget itself.
- **budget used**: tokens (of the request budget alone: requests) served per window from the
  first arrival to a window after the last, over the budget.
  Jobs estimated above their use (no `max_tokens`) hold room until they end and their usage
  replaces the estimate, and a waiting job tries again when the window frees, so it is below
  100%.
- **estimate error**: (estimate - usage) / usage per job; positive is an overestimate.

{table(results)}

{summary(results)}
"""


def summary(results: list[Result]) -> str:
    """What the table says, in a sentence or two."""
    over = [r.workload.name for r in results if not r.within()]
    under_budget = all(
        (w.tokens is None or r.peak_tokens <= w.tokens)
        and (w.requests is None or r.peak_requests <= w.requests)
        for r in results
        for w in [r.workload]
    )
    unfinished = sum(r.workload.jobs - r.finished for r in results)
    lines = [
        f"Over the bound: {', '.join(over) or 'none'}. "
        + (
            "No window held more than the budget itself."
            if under_budget
            else "Some window held more than the budget, within one estimate."
        ),
        f"Jobs not finished: {unfinished}. Largest underestimate: "
        f"{max((r.under for r in results), default=0)} tokens (usage above the estimate).",
    ]
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> list[Result]:
    scale = 0.4 if args.quick else 1.0
    workloads = [
        Workload("tokens, max_tokens set", 3000, None, int(150 * scale), 1.0),
        Workload("tokens, half without max_tokens", 3000, None, int(150 * scale), 0.5),
        Workload("requests", None, 20, int(100 * scale), 1.0),
        Workload("tokens and requests", 3000, 15, int(120 * scale), 1.0),
    ]
    results = []
    with (
        tempfile.TemporaryDirectory(prefix="bench-budgets-") as tmp,
        LocalRedis() as redis_server,
        SimulatorThread(SimulatorConfig(tokens_per_second=400)) as simulator,
    ):
        for workload in workloads:
            print(f"{workload.name}: {workload.jobs} jobs, {workload.budget()}...", flush=True)
            result = await run_workload(
                workload, args.window, redis_server.url, simulator, Path(tmp)
            )
            print(table([result]).splitlines()[-1], flush=True)
            results.append(result)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer jobs, a 2 s window, no file")
    parser.add_argument("--window", type=float, default=None, help="the budget window (s)")
    args = parser.parse_args()
    if args.window is None:
        args.window = 2.0 if args.quick else 5.0
    results = asyncio.run(run(args))
    text = report(results, args)
    print(text)
    if not args.quick:
        RESULTS.write_text(text)
        print(f"wrote {RESULTS}")
    ok = all(r.finished == r.workload.jobs and r.within() for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
