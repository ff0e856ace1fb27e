"""The client side of each column, as run inside an agent process (see ``agent.py``).

``direct`` iterates the SDK stream itself (the seed's loop); ``naive-reader`` follows each job
with its own ``XREAD BLOCK`` loop; ``streamq-reader`` follows jobs with ``job.events()`` or, for
many jobs, one :class:`streamq.Multiplexer`. Readers record each delta's arrival time and
entry id; percentiles are computed on request, after the CPU window has closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam
from redis.asyncio import Redis

from benchmarks.common import (
    MODEL,
    READER_NAME,
    Endpoints,
    JobSpec,
    Trace,
    entry_seconds,
    lag_summary,
)
from streamq import Cancelled, Delta, Error, Event, Multiplexer, Settings, Start, StreamQ
from streamq.core._tasks import cancel_and_wait
from streamq.core.connections import redis_from_url

BLOCK_MS = 5000


class Role:
    """Tracks the jobs a process follows and answers the orchestrator's requests."""

    def __init__(self) -> None:
        self.traces: dict[str, Trace] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    async def handle(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        """Run one request: ``follow``/``run``, ``wait``, ``stats`` or ``latency``."""
        jobs = [JobSpec.from_dict(raw) for raw in args.get("jobs", [])]
        if op == "follow":
            for job in jobs:
                self.track(job, self.follow(job, self.trace(job)))
            return {}
        if op == "wait":
            return await self.wait(float(args["timeout"]))
        if op == "stats":
            traces = list(self.traces.values())
            self.traces.clear()
            return lag_summary(traces, args.get("interval"), float(args["began"]))
        if op == "latency":
            samples = [await self.first_delta(job) for job in jobs]
            return {"samples": samples[int(args.get("warmup", 0)) :]}
        raise ValueError(f"unknown op {op!r}")

    def trace(self, job: JobSpec) -> Trace:
        trace = self.traces[job.id] = Trace(offset=job.offset, interval=job.interval)
        return trace

    def track(self, job: JobSpec, work: Awaitable[None]) -> None:
        async def guarded() -> None:
            try:
                await work
            except Exception as exc:
                self.traces[job.id].error = repr(exc)

        task = asyncio.create_task(guarded())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def wait(self, timeout: float) -> dict[str, Any]:
        """Wait for every followed job to end (at most ``timeout``); how many deltas, when."""
        unfinished = 0
        if self.tasks:
            _, pending = await asyncio.wait(set(self.tasks), timeout=timeout)
            unfinished = len(pending)
            await cancel_and_wait(pending)
        traces = self.traces.values()
        errors = [trace.error for trace in traces if trace.error]
        return {
            "jobs": len(self.traces),
            "deltas": sum(len(trace.received) for trace in traces),
            "last": max((trace.received[-1] for trace in traces if trace.received), default=None),
            "failed": len(errors),
            "errors": errors[:3],
            "unfinished": unfinished,
        }

    async def follow(self, job: JobSpec, trace: Trace) -> None:
        raise NotImplementedError

    async def first_delta(self, job: JobSpec) -> dict[str, float]:
        """Seconds from starting ``job`` to its first delta (``first``) and, where known, the
        parts of that time; the rest of the job is read to the end."""
        raise NotImplementedError

    async def aclose(self) -> None:
        await cancel_and_wait(list(self.tasks))


class DirectRole(Role):
    """The seed's loop: the openai SDK's stream, iterated in this process; no queue."""

    def __init__(self, endpoints: Endpoints) -> None:
        super().__init__()
        self.endpoints = endpoints
        urls = {"simulator": endpoints.base_url, "aimock": endpoints.aimock_url}
        self.clients = {
            upstream: AsyncOpenAI(api_key="unused", base_url=url, max_retries=0)
            for upstream, url in urls.items()
            if url
        }

    async def handle(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        if op != "run":
            return await super().handle(op, args)
        began = time.monotonic()
        for raw in args["jobs"]:
            job = JobSpec.from_dict(raw)
            self.track(job, self._later(began + job.offset, self.follow(job, self.trace(job))))
        return await self.wait(float(args["timeout"]))

    @staticmethod
    async def _later(at: float, work: Awaitable[None]) -> None:
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        await work

    async def _stream(self, job: JobSpec, on_delta: Callable[[str], None]) -> None:
        messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": job.prompt}]
        stream = await self.clients[job.upstream].chat.completions.create(
            model=MODEL, messages=messages, stream=True, extra_body=job.extra_body()
        )
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                on_delta(chunk.choices[0].delta.content)

    async def follow(self, job: JobSpec, trace: Trace) -> None:
        received = trace.received
        await self._stream(job, lambda _: received.append(time.time()))

    async def first_delta(self, job: JobSpec) -> dict[str, float]:
        began = time.perf_counter()
        seen: list[float] = []
        await self._stream(job, lambda _: seen.append(time.perf_counter()))
        return {"first": seen[0] - began}

    async def aclose(self) -> None:
        await super().aclose()
        for client in self.clients.values():
            await client.close()


class NaiveReaderRole(Role):
    """One ``XREAD BLOCK`` loop per job (each on its own connection while blocked)."""

    def __init__(self, endpoints: Endpoints) -> None:
        super().__init__()
        self.endpoints = endpoints
        self.redis = Redis.from_url(endpoints.redis_url, client_name=READER_NAME)

    async def _read(self, job: JobSpec, on_delta: Callable[[str, bytes], None]) -> None:
        key, last = self.endpoints.naive_stream(job.id), b"0-0"
        while True:
            reply = await self.redis.xread({key: last}, block=BLOCK_MS)
            for _, entries in reply or ():
                for entry_id, fields in entries:
                    last = entry_id
                    if b"end" in fields:
                        if fields.get(b"error"):
                            raise RuntimeError(fields[b"error"].decode())
                        return
                    on_delta(fields[b"text"].decode(), entry_id)

    async def follow(self, job: JobSpec, trace: Trace) -> None:
        received, entry_ids = trace.received, trace.entry_ids

        def on_delta(_: str, entry_id: bytes) -> None:
            received.append(time.time())
            entry_ids.append(entry_id.decode())

        await self._read(job, on_delta)

    async def first_delta(self, job: JobSpec) -> dict[str, float]:
        began = time.perf_counter()
        await self.redis.rpush(self.endpoints.naive_queue, job.naive_job(self.endpoints))
        pushed = time.perf_counter()
        seen: list[float] = []
        await self._read(job, lambda _, __: seen.append(time.perf_counter()))
        return {"first": seen[0] - began, "enqueue": pushed - began}

    async def aclose(self) -> None:
        await super().aclose()
        await self.redis.aclose()


class StreamqReaderRole(Role):
    """streamq's readers: ``job.events()`` per job, or one Multiplexer for many jobs; entries
    only (``queued=False``), as the other readers see them: no place lookups while jobs wait."""

    def __init__(self, endpoints: Endpoints) -> None:
        super().__init__()
        settings = Settings(
            redis_url=endpoints.redis_url,
            key_prefix=endpoints.key_prefix,
            queue_name=endpoints.queue_name,
        )
        self.redis = redis_from_url(endpoints.redis_url, client_name=READER_NAME)
        self.sq = StreamQ(self.redis, settings)
        self.stack = contextlib.AsyncExitStack()
        self.mux: Multiplexer | None = None
        self.use_mux = False

    async def handle(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        if op == "follow":
            self.use_mux = bool(args.get("mux"))
            if self.use_mux and self.mux is None:
                self.mux = await self.stack.enter_async_context(self.sq.multiplexer())
        return await super().handle(op, args)

    async def follow(self, job: JobSpec, trace: Trace) -> None:
        if self.use_mux and self.mux is not None:
            async with contextlib.aclosing(self.mux.follow(job.id, queued=False)) as events:
                await _record(events, trace)
        else:
            async with self.sq.job(job.id).events(queued=False) as stream:
                await _record(stream, trace)

    async def first_delta(self, job: JobSpec) -> dict[str, float]:
        wall, began = time.time(), time.perf_counter()
        handle = await self.sq.enqueue_chat(job.prompt, job_id=job.id, extra_body=job.extra_body())
        enqueued = time.perf_counter()
        parts: dict[str, float] = {}
        started = wall
        async with handle.events(queued=False) as events:
            async for event in events:
                if isinstance(event, Start):
                    started = event.started_at
                elif isinstance(event, Delta) and not parts:
                    first, received = time.perf_counter(), time.time()
                    written = entry_seconds(event.cursor)
                    parts = {
                        "first": first - began,
                        "enqueue": enqueued - began,
                        "pickup": started - wall,  # enqueue → the worker writes `start`
                        "upstream": written - started,  # `start` → first delta in Redis
                        "delivery": received - written,  # in Redis → seen by the reader
                    }
                elif isinstance(event, Error | Cancelled):
                    raise RuntimeError(f"job {job.id} ended with {event}")
        if not parts:
            raise RuntimeError(f"job {job.id} sent no delta")
        return parts

    async def aclose(self) -> None:
        await super().aclose()
        await self.stack.aclose()
        await self.sq.aclose()
        await self.redis.aclose()


async def _record(events: AsyncIterator[Event], trace: Trace) -> None:
    received, entry_ids = trace.received, trace.entry_ids
    async for event in events:
        if isinstance(event, Delta):
            received.append(time.time())
            entry_ids.append(event.cursor)
        elif isinstance(event, Error | Cancelled):
            trace.error = f"{event.type}: {event}"


ROLES: dict[str, Callable[[Endpoints], Role]] = {
    "direct": DirectRole,
    "naive-reader": NaiveReaderRole,
    "streamq-reader": StreamqReaderRole,
}
