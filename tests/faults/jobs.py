"""Jobs under fault: live readers that record everything, the checks, and the summary table.

Every job gets two live readers: one records every event of ``job.events()``, the other reads
the text the way an application does (``async for chunk in job``, resuming with
``job.text(after=exc.cursor)`` on :class:`~streamq.JobRestarted`). Once the jobs have ended,
:func:`problems` compares what they saw with the stream stored in Redis and with the text the
simulator is known to produce.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from arq.constants import in_progress_key_prefix
from redis.asyncio import Redis

from streamq import (
    Cancelled,
    ChatJob,
    Delta,
    Error,
    Event,
    JobCancelled,
    JobFailed,
    JobRestarted,
    Reset,
    Start,
    StreamQ,
)
from streamq.core.events import decode, is_terminal
from streamq.core.keys import Keys
from streamq.core.request import chat_messages
from streamq.dev.simulator import simulated_text

LONG = os.environ.get("STREAMQ_FAULTS", "").strip().lower() == "long"
MODE = "long" if LONG else "short"


def by_mode(short: int | float, long: int | float) -> Any:
    """The short value by default, the long one with ``STREAMQ_FAULTS=long``."""
    return long if LONG else short


@dataclass(frozen=True)
class Plan:
    """One job to enqueue, with what the simulator will answer and the outcomes allowed."""

    prompt: str
    tokens: int = 24
    tokens_per_second: float | None = None
    simulator: Mapping[str, Any] = field(default_factory=dict)  # e.g. a fault
    expect: frozenset[str] = frozenset({"done"})  # "done", "cancelled", "error:<code>"
    deadline: float | None = None
    idle_timeout: float | None = None
    label: str = ""  # a group for the summary, e.g. the fault
    attempts: int | None = None  # how many attempts the job must take, when known

    @property
    def text(self) -> str:
        """The complete answer the simulator gives this prompt."""
        return simulated_text(chat_messages(self.prompt), length=self.tokens)

    def extra_body(self) -> dict[str, Any]:
        """The per-request simulator options."""
        options: dict[str, Any] = {"reply_tokens": self.tokens, **self.simulator}
        if self.tokens_per_second is not None:
            options["tokens_per_second"] = self.tokens_per_second
        return {"simulator": options}


@dataclass(eq=False)
class Watch:
    """A job and what its two live readers saw."""

    plan: Plan
    job: ChatJob
    enqueued_at: float
    events: list[Event] = field(default_factory=list)
    events_failure: str | None = None
    ended_at: float | None = None  # time.time() when the events reader saw the terminal event
    text: str | None = None  # the text reader's final text (of the attempt it ended on)
    text_outcome: str | None = None
    text_restarts: int = 0
    text_abandoned: list[str] = field(default_factory=list)  # text of attempts given up on
    text_failure: str | None = None
    first_delta: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    @property
    def outcome(self) -> str | None:
        """``done``, ``cancelled`` or ``error:<code>`` per the events reader; None if running."""
        return outcome_of(self.events[-1]) if self.events and is_terminal(self.events[-1]) else None

    @property
    def attempt(self) -> int:
        """The attempt the events reader saw last."""
        return self.events[-1].attempt if self.events else 0

    def running_on(self) -> str | None:
        """The worker of the attempt in progress, per the events seen so far."""
        if self.ended.is_set():
            return None
        starts = [e for e in self.events if isinstance(e, Start)]
        return starts[-1].worker if starts else None


def outcome_of(event: Event) -> str:
    """The outcome a terminal event stands for."""
    if isinstance(event, Error):
        return f"error:{event.code}"
    return event.type


class Readers:
    """Enqueues plans and follows each job with its two readers until it ends."""

    def __init__(
        self, producer: StreamQ, reader: StreamQ, *, read_timeout: float, deadline: float
    ) -> None:
        self.producer = producer
        self.reader = reader
        self.read_timeout = read_timeout
        self.deadline = deadline  # seconds a job's readers may take in all
        self.watches: list[Watch] = []

    async def submit(
        self, plan: Plan, *, reader: StreamQ | None = None, deadline: float | None = None
    ) -> Watch:
        """Enqueue ``plan`` and start its readers (on ``reader``'s client when given)."""
        job = await self.producer.enqueue_chat(
            plan.prompt,
            deadline=plan.deadline,
            idle_timeout=plan.idle_timeout,
            extra_body=plan.extra_body(),
        )
        watch = Watch(plan, (reader or self.reader).job(job.id), time.time())
        follow = self._follow(watch, self.deadline if deadline is None else deadline)
        watch.task = asyncio.create_task(follow, name=f"watch-{job.id}")
        self.watches.append(watch)
        return watch

    async def submit_all(self, plans: Iterable[Plan]) -> list[Watch]:
        """Enqueue every plan."""
        return [await self.submit(plan) for plan in plans]

    async def submit_paced(self, plans: Iterable[Plan], window: int) -> None:
        """Enqueue the plans keeping at most ``window`` jobs unfinished."""
        slots = asyncio.Semaphore(window)
        for plan in plans:
            await slots.acquire()
            watch = await self.submit(plan)
            assert watch.task is not None
            watch.task.add_done_callback(lambda _: slots.release())

    async def wait(self, watches: Iterable[Watch] | None = None) -> None:
        """Wait for the readers of ``watches`` (default: all) to finish."""
        tasks = [w.task for w in (self.watches if watches is None else watches) if w.task]
        await asyncio.gather(*tasks)

    async def wait_started(self, watches: Iterable[Watch], timeout: float) -> None:
        """Wait until each job has streamed its first delta (or ended)."""

        async def started(watch: Watch) -> None:
            ended = asyncio.ensure_future(watch.ended.wait())
            delta = asyncio.ensure_future(watch.first_delta.wait())
            try:
                await asyncio.wait({ended, delta}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                ended.cancel()
                delta.cancel()
                await asyncio.gather(ended, delta, return_exceptions=True)

        async with asyncio.timeout(timeout):
            await asyncio.gather(*(started(w) for w in watches))

    async def _follow(self, watch: Watch, deadline: float) -> None:
        try:
            async with asyncio.timeout(deadline):
                await asyncio.gather(self._record_events(watch), self._read_text(watch))
        except TimeoutError:
            if watch.events_failure is None and watch.outcome is None:
                watch.events_failure = f"still reading after {deadline:g}s (hung?)"
            if watch.text_failure is None and watch.text_outcome is None:
                watch.text_failure = f"still reading after {deadline:g}s (hung?)"
        finally:
            watch.ended.set()

    async def _record_events(self, watch: Watch) -> None:
        try:
            async with watch.job.events(timeout=self.read_timeout, queued=False) as events:
                async for event in events:
                    watch.events.append(event)
                    if isinstance(event, Delta):
                        watch.first_delta.set()
                    if is_terminal(event):
                        watch.ended_at = time.time()
        except Exception as exc:
            watch.events_failure = f"{type(exc).__name__}: {exc}"
        watch.ended.set()

    async def _read_text(self, watch: Watch) -> None:
        """Read as an application would: restart on JobRestarted, from its cursor."""
        chunks: list[str] = []
        cursor: str | None = None
        try:
            while True:
                try:
                    source = watch.job if cursor is None else watch.job.text(after=cursor)
                    async for chunk in source:
                        chunks.append(chunk)
                except JobRestarted as restarted:
                    watch.text_restarts += 1
                    watch.text_abandoned.append("".join(chunks))
                    chunks, cursor = [], restarted.cursor
                    continue
                watch.text_outcome = "done"
                break
        except JobFailed as failed:
            watch.text_outcome = f"error:{failed.error.code}"
        except JobCancelled:
            watch.text_outcome = "cancelled"
        except Exception as exc:
            watch.text_failure = f"{type(exc).__name__}: {exc}"
        watch.text = "".join(chunks)


async def stored_events(redis: Redis, keys: Keys, job_id: str) -> list[Event]:
    """Every entry of the job's stream, as stored."""
    entries = await redis.xrange(keys.events(job_id))
    return [
        decode(_text(entry_id), {_text(k): _text(v) for k, v in fields.items()})
        for entry_id, fields in entries
    ]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _order(cursor: str) -> tuple[int, int]:
    milliseconds, _, sequence = cursor.partition("-")
    return int(milliseconds), int(sequence)


def attempts_of(events: list[Event]) -> list[list[Event]]:
    """The stream split into its attempts, in order."""
    groups: list[list[Event]] = []
    for event in events:
        if not groups or groups[-1][0].attempt != event.attempt:
            groups.append([])
        groups[-1].append(event)
    return groups


def attempt_text(events: list[Event]) -> str:
    """The content of choice 0 in one attempt."""
    return "".join(e.text for e in events if isinstance(e, Delta) and e.choice == 0)


def check_job(watch: Watch, stored: list[Event]) -> list[str]:
    """Everything wrong with one job: its stream, what its readers saw, its outcome."""
    name = f"job {watch.job.id} ({watch.plan.label or watch.plan.prompt})"
    found: list[str] = []
    if watch.events_failure:
        found.append(f"{name}: events reader failed: {watch.events_failure}")
    if watch.text_failure:
        found.append(f"{name}: text reader failed: {watch.text_failure}")
    seen = [(e.cursor, e.type, e.attempt, e.seq) for e in watch.events]
    cursors = [e.cursor for e in watch.events]
    if len(set(cursors)) != len(cursors):
        found.append(f"{name}: the reader saw an entry twice")
    if cursors != sorted(cursors, key=_order):
        found.append(f"{name}: the reader saw entries out of order")
    if seen != [(e.cursor, e.type, e.attempt, e.seq) for e in stored]:
        found.append(
            f"{name}: the live reader saw {len(seen)} entries, the stream holds {len(stored)} "
            "(a gap, a duplicate, or a reader that stopped early)"
        )
    terminals = [e for e in stored if is_terminal(e)]
    if len(terminals) != 1 or not stored or not is_terminal(stored[-1]):
        found.append(f"{name}: {len(terminals)} terminal events (must be exactly 1, last)")
        return found
    outcome = outcome_of(stored[-1])
    if outcome not in watch.plan.expect:
        found.append(f"{name}: ended {outcome}, expected {'/'.join(sorted(watch.plan.expect))}")
    groups = attempts_of(stored)
    numbers = [group[0].attempt for group in groups]
    if numbers != sorted(set(numbers)):
        found.append(f"{name}: attempts interleave or repeat: {numbers}")
    expected = watch.plan.text
    for group in groups:
        attempt = group[0].attempt
        seqs = [e.seq for e in group]
        if seqs != list(range(len(group))):
            found.append(f"{name}: attempt {attempt} has seq {seqs} (gap or duplicate)")
        kinds = [type(e) for e in group[:2]]
        openings: dict[int, list[type[Event]]] = {0: [Cancelled], 1: [Start]}
        opening = openings.get(attempt, [Reset, Start])
        if kinds[: len(opening)] != opening and not (attempt > 1 and kinds == [Reset]):
            found.append(f"{name}: attempt {attempt} opens with {kinds}, not {opening}")
        if not expected.startswith(attempt_text(group)):
            found.append(f"{name}: attempt {attempt} streamed text that is not the answer's")
    if watch.plan.attempts is not None and numbers[-1] != watch.plan.attempts:
        found.append(f"{name}: ended on attempt {numbers[-1]}, expected {watch.plan.attempts}")
    final = attempt_text(groups[-1])
    if outcome == "done" and final != expected:
        found.append(f"{name}: final text {final!r} != expected {expected!r}")
    if watch.text_outcome is not None:
        if watch.text_outcome != outcome:
            found.append(f"{name}: text reader ended {watch.text_outcome}, stream {outcome}")
        elif outcome == "done" and watch.text != expected:
            found.append(f"{name}: text reader got {watch.text!r}, expected {expected!r}")
        for partial in watch.text_abandoned:
            if not expected.startswith(partial):
                found.append(f"{name}: the text reader saw attempts glued together: {partial!r}")
    last = stored[-1]
    if (
        isinstance(last, Cancelled)
        and last.attempt > 0
        and last.deltas != sum(isinstance(e, Delta) for e in groups[-1])
    ):
        found.append(f"{name}: cancelled.deltas={last.deltas} but the attempt has other deltas")
    return found


async def problems(watches: Iterable[Watch], redis: Redis, keys: Keys) -> list[str]:
    """Every problem with every job (after their readers finished)."""
    found: list[str] = []
    for watch in watches:
        stored = await stored_events(redis, keys, watch.job.id)
        found += check_job(watch, stored)
        if not stored:  # never claimed by streamq: say whether arq thinks it runs somewhere
            ttl = await redis.pttl(in_progress_key_prefix + keys.arq_job_id(watch.job.id))
            if ttl > 0:
                found.append(
                    f"job {watch.job.id}: stranded: arq's in-progress key says a worker runs it "
                    f"(for {ttl / 1000:.0f}s more) but no attempt ever started"
                )
        state = await redis.hget(keys.state(watch.job.id), "terminal")  # type: ignore[misc]
        if stored and is_terminal(stored[-1]) and state != stored[-1].type.encode():
            found.append(f"job {watch.job.id}: state says terminal={state!r}")
    return found


def describe(found: list[str], limit: int = 25) -> str:
    """A failure message listing the first problems."""
    shown = "\n  ".join(found[:limit])
    more = f"\n  ... and {len(found) - limit} more" if len(found) > limit else ""
    return f"{len(found)} problem(s):\n  {shown}{more}"


@dataclass
class Summary:
    """The numbers printed after a scenario (``pytest -s`` shows them)."""

    scenario: str
    watches: list[Watch]
    started: float = field(default_factory=time.monotonic)
    rows: dict[str, object] = field(default_factory=dict)

    def add(self, name: str, value: object) -> None:
        """Add or replace a row."""
        self.rows[name] = value

    def render(self) -> str:
        """The table."""
        outcomes = Counter(w.outcome or "unfinished" for w in self.watches)
        resets = sum(isinstance(e, Reset) for w in self.watches for e in w.events)
        attempts = [max((e.attempt for e in w.events), default=0) for w in self.watches]
        rows: dict[str, object] = {"jobs": len(self.watches)} if self.watches else {}
        rows.update(self.rows)
        if self.watches:
            rows["resets seen by readers"] = resets
            rows["text readers restarted"] = sum(w.text_restarts for w in self.watches)
            rows["max attempt"] = max(attempts, default=0)
            rows["outcomes"] = ", ".join(f"{k}={v}" for k, v in sorted(outcomes.items()))
        rows["duration"] = f"{time.monotonic() - self.started:.1f}s"
        width = max(len(name) for name in rows)
        title = f" fault scenario: {self.scenario} ({MODE}) "
        lines = [f"\n{title:=^{width + 40}}"]
        lines += [f"{name:<{width}}  {value}" for name, value in rows.items()]
        return "\n".join(lines)

    def print(self) -> None:
        """Print the table."""
        print(self.render(), flush=True)


def seconds(values: list[float]) -> str:
    """``median / p99 / max`` of some durations, or ``-`` for none."""
    if not values:
        return "-"
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"median {statistics.median(ordered):.2f}s, p99 {p99:.2f}s, max {ordered[-1]:.2f}s"
