"""Fault injection: real workers, a real Redis and the simulator, broken on purpose.

Each scenario checks the promise of ``docs/guarantees.md``: every job ends with exactly one
terminal event, every reader's final text is the last attempt's full text, no reader sees a gap
or a duplicate, and no worker process is left hung. Short by default; ``STREAMQ_FAULTS=long``
(``make faults``) runs the full version.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
import subprocess
import sys
import time
from asyncio.subprocess import PIPE
from pathlib import Path
from typing import Any

import pytest
from arq.constants import in_progress_key_prefix

from streamq import Settings, Start, StreamQ
from streamq.core import scripts
from streamq.core.connections import SOCKET_TIMEOUT
from streamq.core.events import Reset
from streamq.core.scripts import script_sha
from tests.faults.conftest import (
    EXIT_TIMEOUT,
    LEASE,
    MAX_ATTEMPTS,
    WORKERS,
    Cluster,
)
from tests.faults.jobs import (
    Plan,
    Readers,
    Summary,
    Watch,
    by_mode,
    describe,
    problems,
    seconds,
)
from tests.harness.waiting import poll_until

pytestmark = [pytest.mark.faults, pytest.mark.timeout(by_mode(120, 290))]

RECOVERY_LIMIT = 15.0  # seconds from a worker's death to its job's restart (the promise)
SERVE_AGAIN_LIMIT = 5.0  # seconds from Redis being back to a worker taking jobs again
OUTAGE = 1.2  # seconds a crashed Redis stays down: shorter than a lease, longer than retries


async def finish(
    cluster: Cluster, readers: Readers, summary: Summary, found: list[str] | None = None
) -> None:
    """Wait for every reader, stop the workers, print the summary, fail on any problem."""
    await readers.wait()
    found = list(found or [])
    found += await problems(readers.watches, cluster.direct, cluster.keys)
    found += cluster.stop_workers()
    pool = cluster.pool
    found += [f"worker log: {line}" for line in pool.errors()]
    summary.add("workers started", len(pool.processes))
    summary.add("SIGKILLs", pool.kills)
    summary.add("SIGTERMs", pool.terminations)
    summary.add("Redis restarts", cluster.redis.restarts)
    summary.add("retries (upstream)", pool.count(r"attempt \d+: retrying in"))
    summary.add("publish retries", pool.count(r"publishing failed"))
    summary.add("attempts reaped (lease)", pool.count(r"lost its worker; freed"))
    summary.add("writes fenced", pool.count(r"refused: another attempt"))
    summary.add("arq restarts (supervisor)", pool.count(r"worker lost Redis"))
    summary.add("proxy connections", cluster.proxy.stats.accepted)
    summary.print()
    assert not found, f"{describe(found)}\n\nworker logs:\n{pool.tail()}"


def slow(prefix: str, count: int, tokens: int, rate: float, label: str) -> list[Plan]:
    """``count`` paced jobs with prompts unique to the test."""
    return [
        Plan(f"{label} {i} {prefix}", tokens=tokens, tokens_per_second=rate, label=label)
        for i in range(count)
    ]


def worker_pid(worker: str) -> int:
    """The pid in a ``Start`` event's ``host:pid``."""
    return int(worker.rpartition(":")[2])


def recoveries(watches: list[Watch], killed_at: dict[int, float]) -> list[float]:
    """Seconds from each SIGKILL to the reset of each job its victim was running."""
    found = []
    for watch in watches:
        current: Start | None = None
        for event in watch.events:
            if isinstance(event, Start):
                current = event
            elif isinstance(event, Reset) and current is not None:
                death = killed_at.get(worker_pid(current.worker))
                if death is not None:
                    found.append(int(event.cursor.partition("-")[0]) / 1000 - death)
    return found


async def test_jobs_survive_a_worker_sigkilled_every_few_seconds(cluster: Cluster) -> None:
    """SIGKILL a busy worker every few seconds (and start a new one): every job ends once,
    exactly, and each victim's jobs restart within 15 s."""
    readers = cluster.readers()
    summary = Summary("SIGKILL a worker every few seconds", readers.watches)
    plans = slow(cluster.keys.prefix, by_mode(30, 200), by_mode(30, 60), 20, "kill")
    interval: float = by_mode(1.5, 3.0)
    max_kills: int = by_mode(2, 100)
    feeder = asyncio.create_task(readers.submit_paced(plans, window=by_mode(15, 30)))
    killed_at: dict[int, float] = {}

    def unfinished() -> bool:  # enough jobs left that kills hit many, not one job over and over
        left = sum(not w.ended.is_set() for w in readers.watches)
        return not feeder.done() or left >= 2 * WORKERS

    def busy() -> list[subprocess.Popen[bytes]]:
        running = {worker_pid(w.running_on() or ":0") for w in readers.watches}
        return [p for p in cluster.pool.alive if p.pid in running]

    while unfinished() and len(killed_at) < max_kills:
        await asyncio.sleep(interval)  # the pace of the fault, not a wait for a condition
        try:  # kill a worker that is streaming jobs right now
            await poll_until(lambda: bool(busy()) or not unfinished(), 10, "a busy worker")
        except AssertionError:
            break
        if not busy():
            break
        victim = random.choice(busy())
        killed_at[victim.pid] = time.time()
        cluster.pool.kill(victim)
        cluster.pool.spawn(1)
    await feeder
    await readers.wait()
    found = []
    recovered = recoveries(readers.watches, killed_at)
    if killed_at and not recovered:
        found.append("no job was running on a killed worker: the kills tested nothing")
    if recovered and max(recovered) >= RECOVERY_LIMIT:
        found.append(f"a killed worker's job restarted only after {max(recovered):.1f}s")
    summary.add("recovery after SIGKILL", f"{seconds(recovered)} (lease {LEASE:g}s)")
    await finish(cluster, readers, summary, found)


async def test_sigterm_drains_short_jobs_and_hands_back_long_ones(cluster: Cluster) -> None:
    """SIGTERM all workers mid-run (new ones start): jobs that fit the drain time finish on
    their worker, the others restart elsewhere; every old worker exits 0 (none hangs)."""
    readers = cluster.readers()
    summary = Summary("SIGTERM drain", readers.watches)
    prefix = cluster.keys.prefix
    # Left after the first delta: 0.25 s, a margin for a loaded machine within the 2 s drain.
    short = slow(prefix, by_mode(12, 40), 10, 40, "drained")
    long = slow(prefix, by_mode(6, 20), 30, 8, "handed back")  # 3.75 s: does not
    watches = await readers.submit_all(short + long)
    await readers.wait_started(watches, timeout=30)
    old = cluster.pool.alive
    for process in old:
        cluster.pool.terminate(process)
    cluster.pool.spawn(WORKERS)
    began = time.monotonic()
    hung = await asyncio.to_thread(cluster.pool.wait_exited, old, EXIT_TIMEOUT)
    exited_in = time.monotonic() - began
    await readers.wait()
    found = [f"worker pid {p.pid} did not exit {EXIT_TIMEOUT:g}s after SIGTERM" for p in hung]
    for process in old:  # each was serving (the fixture waits): its SIGTERM handler drains
        if process.returncode != 0:
            found.append(f"worker pid {process.pid} exited {process.returncode}")
    old_pids = {p.pid for p in old}
    for watch in watches:
        starts = [e for e in watch.events if isinstance(e, Start)]
        if watch.plan.label == "drained" and len(starts) != 1:
            found.append(f"job {watch.job.id} fit the drain time but ran {len(starts)} times")
        if watch.plan.label == "handed back" and (
            len(starts) < 2 or worker_pid(starts[-1].worker) in old_pids
        ):
            found.append(f"job {watch.job.id} was not handed to a new worker")
    summary.add(
        "old workers exited in", f"{exited_in:.1f}s (drain {cluster.settings.drain_timeout}s)"
    )
    await finish(cluster, readers, summary, found)


async def test_jobs_survive_redis_restarts_with_an_append_only_file(aof_cluster: Cluster) -> None:
    """Crash Redis (AOF, fsync always) mid-run and restart it on the same port: workers stay up
    and take new jobs again within seconds, readers reconnect through the proxy, every job ends
    once with the exact text."""
    cluster = aof_cluster
    readers = cluster.readers(through_proxy=True)
    summary = Summary("Redis crash and restart (AOF)", readers.watches)
    prefix = cluster.keys.prefix
    # Long generations: they outlast the restarts and the wait for the jobs enqueued after.
    before = slow(prefix, by_mode(12, 40), by_mode(100, 160), 10, "before")
    watches = await readers.submit_all(before)
    await readers.wait_started(watches, timeout=30)
    after: list[Watch] = []
    waits: list[float] = []
    outages: list[tuple[float, float]] = []  # (went down, came back)
    for _ in range(by_mode(1, 3)):
        down = time.time()
        await asyncio.to_thread(cluster.redis.restart, OUTAGE)
        back = time.time()
        outages.append((down, back))
        batch = await readers.submit_all(slow(prefix, by_mode(3, 5), 20, 20, "after"))
        after += batch
        await readers.wait_started(batch, timeout=60)
        waits += [first_event(w) - back for w in batch]
    await readers.wait()
    found = []
    exited = [p for p in cluster.pool.processes if p.poll() is not None]
    found += [f"worker pid {p.pid} exited ({p.returncode}) when Redis restarted" for p in exited]
    # The supervisor logs this once arq's loop is gone and arq let go of the process: until
    # then the worker takes no job, whatever it is doing.
    for pid, stamp, _ in cluster.pool.stamped(r"worker lost Redis"):
        deaf = stamp - max((b for d, b in outages if d <= stamp), default=stamp)
        if deaf > SERVE_AGAIN_LIMIT:
            found.append(
                f"worker pid {pid} took no job for {deaf:.1f}s after Redis came back: arq's "
                "loop had died, and the supervisor restarts it only once every job it was "
                "running has finished"
            )
    if waits and max(waits) > SERVE_AGAIN_LIMIT:
        found.append(
            f"a job enqueued just after Redis came back waited {max(waits):.1f}s for a worker "
            f"(limit {SERVE_AGAIN_LIMIT:g}s) although {WORKERS} workers were up"
        )
    summary.add("new job picked up after restart", seconds(waits))
    await finish(cluster, readers, summary, found)


def first_event(watch: Watch) -> float:
    """When the job's first event was written (Redis time, from its entry id), in seconds."""
    return int(watch.events[0].cursor.partition("-")[0]) / 1000 if watch.events else math.inf


async def test_readers_get_job_not_found_when_redis_restarts_empty(cluster: Cluster) -> None:
    """Without persistence a restart loses the jobs: their readers raise JobNotFound promptly
    (no hang), no zombie write recreates a stream, and the workers serve new jobs."""
    readers = cluster.readers(through_proxy=True)
    summary = Summary("Redis restart without persistence", readers.watches)
    prefix = cluster.keys.prefix
    lost = await readers.submit_all(slow(prefix, by_mode(6, 20), 60, 10, "lost"))
    await readers.wait_started(lost, timeout=30)
    await asyncio.to_thread(cluster.redis.restart, 1.0)
    restarted = time.time()
    after = await readers.submit_all(slow(prefix, by_mode(4, 10), 20, 20, "after"))
    found: list[str] = []
    await readers.wait(lost)
    waited = []
    for watch in lost:
        not_found = "JobNotFound" in (watch.events_failure or "")
        if not not_found or "JobNotFound" not in (watch.text_failure or ""):
            found.append(
                f"job {watch.job.id}: readers ended {watch.events_failure!r} / "
                f"{watch.text_failure!r}, not JobNotFound"
            )
        waited.append(time.time() - restarted)
    await readers.wait(after)
    found += await problems(after, cluster.direct, cluster.keys)
    for watch in lost:
        if await cluster.direct.exists(cluster.keys.events(watch.job.id)):
            found.append(f"job {watch.job.id}: a zombie attempt recreated the lost stream")
    found += cluster.stop_workers()
    found += [f"worker log: {line}" for line in cluster.pool.errors()]
    summary.add("JobNotFound after restart", seconds(waited))
    summary.add("lost / served after", f"{len(lost)} / {sum(w.outcome == 'done' for w in after)}")
    summary.watches = after
    summary.print()
    assert not found, f"{describe(found)}\n\nworker logs:\n{cluster.pool.tail()}"


async def test_jobs_survive_a_blackholed_redis_link(cluster: Cluster) -> None:
    """Blackhole the Redis link (bytes dropped, used connections dead) for 5 s: workers and
    readers time out, reconnect and carry on; every job ends once with the exact text; readers
    made by StreamQ.from_url (the documented client) do not hang either."""
    readers = cluster.readers(through_proxy=True)
    summary = Summary("blackholed Redis link, 5 s", readers.watches)
    prefix = cluster.keys.prefix
    watches = await readers.submit_all(slow(prefix, by_mode(15, 40), 40, 8, "before"))
    # A few jobs read as an application would, with the client StreamQ.from_url makes.
    plain = StreamQ.from_url(cluster.settings.redis_url, cluster.settings)
    # Start, the fault, a socket timeout to notice it, the rest of the job: then it is hung.
    limit = 2.0 + 5.0 + SOCKET_TIMEOUT + 13.0
    from_url = [
        await readers.submit(plan, reader=plain, deadline=limit)
        for plan in slow(prefix, 3, 40, 8, "StreamQ.from_url reader")
    ]
    await readers.wait_started([*watches, *from_url], timeout=30)
    cluster.proxy.blackhole(drop=True)
    await asyncio.sleep(5.0)  # the length of the fault
    cluster.proxy.heal()
    healed = time.monotonic()
    after = await readers.submit_all(slow(prefix, by_mode(5, 10), 20, 20, "after"))
    await readers.wait([*watches, *after])
    summary.add("jobs ended after heal in", f"{time.monotonic() - healed:.1f}s")
    summary.add("bytes dropped", cluster.proxy.stats.dropped_bytes)
    await readers.wait(from_url)
    await plain.aclose()
    hung = [w for w in from_url if w.events_failure and "hung" in w.events_failure]
    summary.add("StreamQ.from_url readers hung", f"{len(hung)} of {len(from_url)}")
    found = []
    if hung:
        found.append(
            f"{len(hung)} StreamQ.from_url readers were still blocked {limit:g}s after they "
            "started: a reader on a dead connection must time out and reconnect"
        )
    exited = [p for p in cluster.pool.processes if p.poll() is not None]
    found += [f"worker pid {p.pid} exited ({p.returncode}) in the blackhole" for p in exited]
    if not all(w.outcome == "done" for w in after):
        found.append("jobs enqueued after the heal did not all finish")
    await finish(cluster, readers, summary, found)


async def test_a_lost_reply_to_the_job_claim_does_not_strand_the_job(cluster: Cluster) -> None:
    """Redis runs a worker's claim of a job (arq's MULTI/PSETEX/EXEC) but the reply is lost:
    the job still runs within the worker's socket timeout plus the 15 s recovery promise, not
    when arq's in-progress key expires (job timeout + 70 s)."""
    socket_timeout = 3  # the worker's, from REDIS_URL: it only makes the failure come sooner
    limit = socket_timeout + RECOVERY_LIMIT
    readers = cluster.readers(deadline=limit)
    summary = Summary("lost reply to a worker's job claim", readers.watches)
    assert not cluster.stop_workers()
    cluster.pool.environment["REDIS_URL"] += f"?socket_timeout={socket_timeout}"
    cluster.pool.spawn(WORKERS)
    connected = cluster.proxy.stats.accepted + WORKERS
    await poll_until(lambda: cluster.proxy.stats.accepted >= connected, 30, "workers connected")
    cluster.proxy.silence_after(b"EXEC")
    [watch] = await readers.submit_all(slow(cluster.keys.prefix, 1, 10, 50, "claim reply lost"))
    await poll_until(lambda: not cluster.proxy.silence_armed, 10, "a worker's EXEC")
    await readers.wait()
    ended = "never" if watch.ended_at is None else f"{watch.ended_at - watch.enqueued_at:.1f}s"
    summary.add("job ended after", f"{ended} (limit {limit:g}s)")
    if watch.ended_at is None:
        in_progress = in_progress_key_prefix + cluster.keys.arq_job_id(watch.job.id)
        ttl = await cluster.direct.pttl(in_progress)
        summary.add("arq in-progress key", f"expires in {ttl / 1000:.0f}s" if ttl > 0 else "gone")
    await finish(cluster, readers, summary)


async def test_a_lost_reply_to_the_pick_that_started_a_job_does_not_strand_it(
    cluster: Cluster,
) -> None:
    """A worker's PICK starts the job it takes from the fair order; Redis runs it but the reply
    is lost. redis-py sends the call again on a new connection after the socket timeout, and the
    resent call answers the job the first run started (scripts.PICK): the job runs then, not a
    lease later when the reaper finds it stranded, nor when its in-progress key expires."""
    socket_timeout = 3
    limit = socket_timeout + RECOVERY_LIMIT
    readers = cluster.readers(deadline=limit)
    summary = Summary("lost reply to the pick that started a job", readers.watches)
    assert not cluster.stop_workers()
    await readers.submit_all(slow(cluster.keys.prefix, 1, 10, 50, "pick reply lost"))
    await cluster.direct.script_load(scripts.PICK)  # so the worker's first EVALSHA runs it
    cluster.proxy.silence_after(script_sha(scripts.PICK).encode())
    cluster.pool.environment["REDIS_URL"] += f"?socket_timeout={socket_timeout}"
    # The reaper frees a job stranded for a whole lease, first seen up to a round after the
    # pick: with the suite's 2 s lease it could free this one before the resend at 3 s, and
    # the test raced the very thing it tells apart. With a longer lease the resend comes first.
    cluster.pool.environment["STREAMQ_LEASE"] = str(socket_timeout + 2)
    cluster.pool.spawn(1)  # its first poll's PICK takes the job
    await poll_until(lambda: not cluster.proxy.silence_armed, 30, "the worker's PICK")
    await readers.wait()
    freed = cluster.pool.count(r"stranded before its first claim")
    summary.add("freed by the reaper as stranded", freed)
    found = [f"the job waited for the reaper ({freed}): the resent PICK lost it"] if freed else []
    await finish(cluster, readers, summary, found)


async def test_a_workers_background_loops_always_stop(settings: Settings) -> None:
    """Stopping a worker's runtime while its loops are mid-command always ends them: a cancel
    that redis-py loses must not leave a loop (and the worker process) running for good."""
    trials: int = by_mode(40, 300)
    summary = Summary("worker runtime stopped mid-command", [])
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.faults.cancel_probe",
        settings.redis_url, settings.key_prefix, str(trials),
        cwd=Path(__file__).parents[2], stdout=PIPE, stderr=PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 120)
    result = out.decode().split()
    assert result[:1] == ["RESULT"], f"the probe failed: {err.decode()[-2000:]}"
    ran, hung = int(result[1]), int(result[2])
    summary.add("runtime stops", ran)
    summary.add("stops that hung", hung)
    summary.print()
    assert not hung, (
        f"stop #{ran} of a WorkerRuntime never finished: a background loop (heartbeat or "
        "reaper) outlived its cancellation, so a worker given SIGTERM would never exit"
    )


def fault_plans(prefix: str, copies: int) -> list[Plan]:
    """Jobs with injected upstream faults: transient ones (retried, then done) and permanent."""
    once: dict[str, dict[str, Any]] = {
        "http_429": {"retry_after": 0.4},
        "http_500": {},
        "http_503": {},
        "disconnect": {"after": 3},
        "stall": {"after": 3},
        "silent_end": {"after": 3},
        "bad_json": {"after": 3},
        "bad_utf8": {"after": 3},
    }
    forever: dict[str, tuple[dict[str, Any], str, int]] = {
        "http_400": ({}, "upstream_bad_request", 1),
        "http_401": ({}, "upstream_unauthorized", 1),
        "http_404": ({}, "upstream_not_found", 1),
        "http_500": ({}, "upstream_server_error", MAX_ATTEMPTS),
        "disconnect": ({"after": 2}, "upstream_connection", MAX_ATTEMPTS),
        "silent_end": ({"after": 2}, "upstream_incomplete", MAX_ATTEMPTS),
        "bad_utf8": ({"after": 2}, "upstream_protocol", MAX_ATTEMPTS),
        "stall": ({"after": 2}, "timeout", MAX_ATTEMPTS),
    }
    plans = []
    for copy in range(copies):
        for fault, options in once.items():
            plans.append(
                Plan(
                    f"{fault} once {copy} {prefix}",
                    tokens=30,
                    tokens_per_second=60,
                    simulator={"fault": fault, "fault_times": 1, **options},
                    idle_timeout=1.0 if fault == "stall" else None,
                    label=f"{fault} once",
                    attempts=2,
                )
            )
        for fault, (options, code, attempts) in forever.items():
            plans.append(
                Plan(
                    f"{fault} always {copy} {prefix}",
                    tokens=30,
                    tokens_per_second=60,
                    simulator={"fault": fault, **options},
                    expect=frozenset({f"error:{code}"}),
                    idle_timeout=0.3 if fault == "stall" else None,
                    label=f"{fault} always",
                    attempts=attempts,
                )
            )
    return plans


async def test_upstream_faults_are_retried_or_end_with_an_error(cluster: Cluster) -> None:
    """Upstream 429/5xx/disconnect/stall/silent end/bad JSON/bad UTF-8 once: retried, done
    with the exact text (429 after its retry-after); every time, or 4xx: one error event."""
    readers = cluster.readers()
    summary = Summary("upstream faults", readers.watches)
    watches = await readers.submit_all(fault_plans(cluster.keys.prefix, by_mode(1, 4)))
    await readers.wait()
    found = []
    for watch in watches:
        if watch.plan.label == "http_429 once":
            starts = [e for e in watch.events if isinstance(e, Start)]
            if len(starts) >= 2 and starts[1].started_at - starts[0].started_at < 0.4:
                found.append(f"job {watch.job.id}: retried before the 429's retry-after (0.4s)")
    for label in sorted({w.plan.label for w in watches}):
        group = [w for w in watches if w.plan.label == label]
        outcomes = sorted({w.outcome or "unfinished" for w in group})
        summary.add(f"  {label}", f"{'/'.join(outcomes)}, attempts {group[0].attempt}")
    await finish(cluster, readers, summary, found)


async def test_a_cancel_storm_stops_exactly_the_cancelled_jobs(cluster: Cluster) -> None:
    """Cancel half the running jobs at once, plus jobs just enqueued and finished ones: each
    cancelled job ends `cancelled` within 1 s (its upstream stream closed), the rest are
    unaffected, and a finished job stays as it was."""
    readers = cluster.readers()
    summary = Summary("cancel storm", readers.watches)
    prefix = cluster.keys.prefix
    finished = await readers.submit_all(slow(prefix, 3, 10, 100, "finished"))
    await readers.wait(finished)
    running = await readers.submit_all(slow(prefix, by_mode(20, 80), 40, 10, "running"))
    await readers.wait_started(running, timeout=30)
    doomed = running[::2]
    cancelled = frozenset({"cancelled"})
    for watch in doomed:
        watch.plan = dataclasses.replace(watch.plan, expect=cancelled)
    fresh = [
        dataclasses.replace(plan, expect=cancelled)
        for plan in slow(prefix, by_mode(6, 20), 60, 10, "fresh")
    ]
    sent: dict[str, float] = {}

    async def cancel(watch: Watch) -> str:
        sent[watch.job.id] = time.time()
        return await watch.job.cancel()

    storm = [cancel(w) for w in doomed]
    fresh_watches = [await readers.submit(plan) for plan in fresh]
    storm += [cancel(w) for w in fresh_watches]
    storm += [cancel(w) for w in finished]
    targets = [w.job.id for w in [*doomed, *fresh_watches, *finished]]
    answers = dict(zip(targets, await asyncio.gather(*storm), strict=True))
    await readers.wait([*doomed, *fresh_watches])
    survivors = [w for w in running if w not in doomed]
    in_flight_limit = sum(not w.ended.is_set() for w in survivors)
    found = []
    try:
        await poll_until(
            lambda: cluster.simulator.stats.in_flight <= in_flight_limit,
            2.0,
            "the cancelled jobs' upstream streams to close",
        )
    except AssertionError as exc:
        found.append(f"{exc} ({cluster.simulator.stats.in_flight} in flight)")
    await readers.wait()
    latencies = [w.ended_at - sent[w.job.id] for w in doomed if w.ended_at is not None]
    for watch in doomed:
        if answers[watch.job.id] != "cancelling":
            found.append(f"job {watch.job.id}: cancel() said {answers[watch.job.id]!r}")
    for watch in finished:
        if answers[watch.job.id] != "already_done":
            found.append(f"finished job {watch.job.id}: cancel() said {answers[watch.job.id]!r}")
    if latencies and max(latencies) > 1.0:
        found.append(f"a cancel took {max(latencies):.2f}s to reach its reader (limit 1 s)")
    summary.add("cancel answers", ", ".join(sorted(f"{a}" for a in set(answers.values()))))
    summary.add("cancel -> cancelled event", seconds(latencies))
    await finish(cluster, readers, summary, found)
