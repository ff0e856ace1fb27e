"""Group-commit publishing: every job in a worker process shares one pipelined writer.

Entries appended while a round trip is in flight go out together in the next one, so an idle
worker adds no latency and a busy one sends large batches. With a ``linger``, an attempt's text
after its first also waits until that long after the last call, for company: a thousand slow
streams then share a call every few milliseconds instead of a call per round trip (a stream's
first text, its other entries and its end never wait). Each job's entries go through the
fenced :data:`~streamq.core.scripts.APPEND_MANY` script (one call for many jobs), which also sets
the stream's TTL atomically. A writer is checked against its job's state on its first write and
again after the publisher's chain broke (see :mod:`streamq.core.scripts`); in between, its
entries cost one ``XADD`` each.
A batch that fails on the connection is retried, in order and without duplicates, for
``retry_for`` seconds. What Redis refuses for one job (a script error on its keys) fails that
job alone, as does an entry that cannot be encoded: one job's data never delays or fails
another's entries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import defaultdict
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError, ResponseError

from streamq.core import metrics, scripts
from streamq.core.connections import is_cluster
from streamq.core.events import TEXT_TYPES, Event, encode, is_terminal
from streamq.core.exceptions import EntryRejected, Fenced, PublishFailed
from streamq.core.redis_errors import is_transient
from streamq.core.scripts import script_sha

logger = logging.getLogger("streamq.publisher")
STREAMS_PER_CALL = 256  # streams per APPEND_MANY call: bounds how long one call blocks Redis
# Entries that may wait for company (see Publisher's linger): an attempt's text after its first.
_LINGERING_TYPES = frozenset({*TEXT_TYPES, "tool_call"})


class StreamWriter:
    """Writes one attempt of one job: stamps each event with the attempt and its sequence."""

    def __init__(
        self,
        publisher: Publisher,
        events_key: str,
        state_key: str,
        attempt: int,
        scratch_key: str | None = None,
    ) -> None:
        self.publisher = publisher
        self.events_key = events_key
        self.state_key = state_key
        # Keys.compacting(job_id): where a finished stream is copied to give back its space.
        self.scratch_key = scratch_key or events_key + ":compacting"
        self.attempt = attempt
        self.seq = -1
        self.failure: Fenced | PublishFailed | EntryRejected | None = None
        self.ended = False  # a terminal event was emitted: what follows must be checked
        self.trusted = -1  # the publisher's trust epoch in which this writer was last checked
        self.wrote_text = False  # a delta, reasoning, refusal or tool_call entry was emitted
        self._last_ticket = 0

    async def emit(self, event: Event) -> None:
        """Queue ``event``; raises :class:`Fenced`, :class:`PublishFailed` or
        :class:`EntryRejected` once writing failed, and :class:`EntryRejected` at once for an
        event that cannot be encoded as UTF-8 (nothing is queued then)."""
        self.check()
        fields = encode(event, attempt=self.attempt, seq=self.seq + 1)
        terminal = event.type if is_terminal(event) else ""
        args: list[bytes | str] = [str(self.seq + 1), terminal, str(len(fields) * 2)]
        try:  # here, not in the flusher: there it would fail the whole batch
            for name, value in fields.items():
                args += (name, value.encode())
        except UnicodeEncodeError as exc:
            raise EntryRejected(f"a {event.type} event cannot be encoded as UTF-8: {exc}") from None
        self.seq += 1
        self.ended = self.ended or bool(terminal)
        text = event.type in _LINGERING_TYPES
        may_wait, self.wrote_text = text and self.wrote_text, self.wrote_text or text
        self._last_ticket = self.publisher.append(self, args, urgent=not may_wait)
        if self.publisher.pending >= self.publisher.max_pending:
            await self.sync()

    async def sync(self) -> None:
        """Wait until every event emitted so far is in Redis."""
        await self.publisher.wait_written(self._last_ticket)
        self.check()

    def check(self) -> None:
        """Raise the failure that stopped this writer, if any."""
        if self.failure is not None:
            raise self.failure

    async def recover(self) -> None:
        """After :class:`EntryRejected`, go on from the entries Redis really holds, so the
        attempt can still write its terminal ``error``; any other failure is raised."""
        await self.publisher.wait_written(self._last_ticket)
        if isinstance(self.failure, EntryRejected):
            written = await self.publisher.written_seq(self.events_key, self.attempt)
            self.seq, self.failure = written, None
        self.check()


class Publisher:
    """Sends stream entries to Redis in pipelined batches; one per worker process."""

    def __init__(
        self,
        redis: Redis,
        *,
        ttl: int,
        chain_key: str,
        retry_for: float = 30.0,
        max_pending: int = 10_000,
        linger: float = 0.0,
    ) -> None:
        """``chain_key``: this publisher's own key (:meth:`Keys.publisher`), for its chain.
        ``linger``: the seconds a call waits after the one before it was sent, while every
        entry waiting is an attempt's text after its first (the first text of each attempt,
        its other entries and its end go at once)."""
        self.max_pending = max_pending
        self._linger = linger
        self._sent_at = -linger  # time.monotonic() when the last call was sent
        self._hurry = False  # an entry waiting must not linger
        self._lingering = False  # the flusher waits out the linger: only an urgent entry wakes it
        self._redis = redis
        self._ttl = ttl
        self._retry_for = retry_for
        self._append_sha = script_sha(scripts.APPEND)
        self._append_many_sha = script_sha(scripts.APPEND_MANY)
        self._cluster = is_cluster(redis)
        # On a cluster every write is checked: no chain (one call cannot span slots).
        self.chain_key = "" if self._cluster else chain_key
        self._chain = ""  # the token the chain key holds, as far as known ("": no key yet)
        self._calls = 0  # calls made: each one's token
        self._trust = 0  # trust epoch: a break of the chain ends it, and every writer's trust
        self._pending: list[tuple[StreamWriter, list[bytes | str]]] = []
        self._oldest = 0.0  # time.monotonic() when the oldest pending entry was appended
        self._appended = 0  # ticket of the last entry appended
        self._done = 0  # every ticket up to this one is written or failed
        self._progress = asyncio.Condition()
        self._wakeup = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        """Entries appended but not yet written."""
        return self._appended - self._done

    @property
    def lingering(self) -> bool:
        """The flusher holds the entries waiting for company (see ``linger``)."""
        return self._lingering

    def start(self) -> None:
        """Start the background flusher on the running loop."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="streamq-publisher")

    async def aclose(self) -> None:
        """Write everything appended so far, then stop."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await asyncio.shield(self._task)
            self._task = None

    def append(self, writer: StreamWriter, args: list[bytes | str], *, urgent: bool = True) -> int:
        """Queue one entry's script arguments; returns its ticket for :meth:`wait_written`.
        An entry that is not ``urgent`` may wait out the linger for others to share its call."""
        if self._task is None or self._closing:
            raise RuntimeError("the publisher is not running")
        if not self._pending:
            self._oldest = time.monotonic()
        self._pending.append((writer, args))
        self._appended += 1
        urgent = urgent or self.pending >= self.max_pending
        self._hurry = self._hurry or urgent
        if urgent or not self._lingering:
            self._wakeup.set()
        return self._appended

    async def written_seq(self, events_key: str, attempt: int) -> int:
        """The ``seq`` of the last entry ``attempt`` wrote to ``events_key`` (-1: none)."""
        newest = await self._redis.xrevrange(events_key, count=1)
        if not newest or newest[0][1].get(b"attempt") != str(attempt).encode():
            return -1
        return int(newest[0][1][b"seq"])

    async def wait_written(self, ticket: int) -> None:
        """Wait until the entry with ``ticket`` (and all before it) is written or failed; an
        entry someone waits for lingers no more."""
        if ticket > self._appended - len(self._pending):  # not yet in a call
            self._hurry = True
            self._wakeup.set()
        async with self._progress:
            await self._progress.wait_for(lambda: self._done >= ticket)

    async def _run(self) -> None:
        while not (self._closing and not self._pending):
            await self._wakeup.wait()
            self._wakeup.clear()
            await self._wait_out_linger()
            batch, self._pending, oldest = self._pending, [], self._oldest
            if not batch:
                continue
            self._hurry, self._sent_at = False, time.monotonic()
            try:
                await self._write_with_retries(batch)
                metrics.batch_written(len(batch), time.monotonic() - oldest)
            except Exception as exc:  # a bug here must not leave every writer waiting forever
                logger.exception("publishing a batch failed")
                for writer, _ in batch:
                    writer.failure = writer.failure or PublishFailed(f"publishing failed: {exc!r}")
            finally:
                async with self._progress:
                    self._done += len(batch)
                    self._progress.notify_all()

    async def _wait_out_linger(self) -> None:
        """While only text after an attempt's first is waiting, let it wait until ``linger``
        after the last call was sent (or an urgent entry comes): at a thousand slow streams a
        call every few milliseconds carries many, where a call per round trip carried few."""
        left = self._sent_at + self._linger - time.monotonic()
        if left <= 0 or self._hurry or self._closing or not self._pending:
            return
        self._lingering = True
        timer = asyncio.get_running_loop().call_later(left, self._wakeup.set)
        try:
            await self._wakeup.wait()
        finally:
            timer.cancel()
            self._wakeup.clear()
            self._lingering = False

    async def _write_with_retries(
        self, batch: list[tuple[StreamWriter, list[bytes | str]]]
    ) -> None:
        by_writer: dict[StreamWriter, list[bytes | str]] = defaultdict(list)
        for writer, args in batch:
            if writer.failure is None:
                by_writer[writer] += args
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self._retry_for
        delay, reloaded = 0.05, False
        while by_writer:
            try:
                results = await self._write(by_writer)
            except Exception as exc:  # the flusher must outlive any failure of one batch
                results = [exc] * len(by_writer)
            retry: dict[StreamWriter, list[bytes | str]] = {}
            for (writer, args), result in zip(by_writer.items(), results, strict=True):
                if is_transient(result):
                    retry[writer] = args
                else:
                    self._settle(writer, result)
            by_writer = retry
            if not by_writer:
                return
            if any(isinstance(r, NoScriptError) for r in results):  # a new or restarted Redis
                with contextlib.suppress(RedisError):
                    await self._redis.script_load(scripts.APPEND)
                    await self._redis.script_load(scripts.APPEND_MANY)
                if not reloaded:
                    reloaded = True
                    continue
            cause = next(r for r in results if isinstance(r, BaseException))
            if loop.time() + delay > give_up_at:
                logger.error("giving up on %d streams' entries after %r", len(by_writer), cause)
                for writer in by_writer:
                    writer.failure = PublishFailed(f"could not write to Redis: {cause!r}")
                return
            logger.warning("publishing failed (%r); retrying in %.2fs", cause, delay)
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, 2.0)

    @staticmethod
    def _settle(writer: StreamWriter, result: object) -> None:
        """Record what the append script (or Redis, for this job alone) said to ``writer``."""
        if result != scripts.APPENDED:
            writer.trusted = -1
        if isinstance(result, BaseException):
            logger.error("Redis refused entries of %s: %r", writer.events_key, result)
            writer.failure = EntryRejected(f"Redis refused this job's entries: {result}")
        elif result == scripts.LOST:
            writer.failure = PublishFailed(
                f"{writer.events_key} lost this attempt's claim or entries (a failover?)"
            )
        elif result != scripts.APPENDED:
            reason = "another attempt owns the job" if result == scripts.FENCED else "the job ended"
            writer.failure = Fenced(f"write to {writer.events_key} refused: {reason}")

    async def _write(self, by_writer: dict[StreamWriter, list[bytes | str]]) -> list[Any]:
        """One result per writer: the script's reply, or the error Redis answered for it alone
        (a connection-level failure raises)."""
        if self._cluster:  # redis-py's cluster pipelines refuse scripts: one call per stream
            calls: list[tuple[Any, ...]] = [
                (writer.events_key, writer.state_key, writer.scratch_key, str(writer.attempt),
                 str(self._ttl), *args)
                for writer, args in by_writer.items()
            ]  # fmt: skip
            sent = (self._redis.evalsha(self._append_sha, 3, *call) for call in calls)
            return list(await asyncio.gather(*sent, return_exceptions=True))  # type: ignore[arg-type]
        # Every stream's entries in one APPEND_MANY call (a few, for a large batch): one
        # command to pack, send and parse where a call per stream cost each a round of redis-py.
        writers = list(by_writer.items())
        size = STREAMS_PER_CALL
        groups = [writers[i : i + size] for i in range(0, len(writers), size)]
        before = expected = self._chain
        tokens = []
        async with self._redis.pipeline(transaction=False) as pipe:
            for group in groups:
                self._calls += 1
                tokens.append(str(self._calls))
                keys: list[str] = [self.chain_key]
                argv: list[bytes | str] = [str(self._ttl), expected, tokens[-1]]
                for writer, args in group:
                    vouched = "1" if writer.trusted == self._trust else "0"
                    keys += (writer.events_key, writer.state_key, writer.scratch_key)
                    argv += (str(writer.attempt), vouched, str(len(args)), *args)
                call: tuple[Any, ...] = (*keys, *argv)
                pipe.evalsha(self._append_many_sha, len(keys), *call)
                expected = tokens[-1]  # what the chain holds after this call, if intact
            try:
                replies: list[Any] = await pipe.execute(raise_on_error=False)
            except BaseException:
                self._trust += 1  # the calls may have run or not: check every writer again
                raise
        results: list[Any] = []
        intact = True
        for group, reply in zip(groups, replies, strict=True):
            if isinstance(reply, BaseException):
                results += [reply] * len(group)
                intact = False
            else:
                intact = intact and reply[0] == 1
                results += [_one_result(r) for r in reply[1:]]
        last, token = replies[-1], tokens[-1]
        # What the chain key holds now; when unknown, the value before (the next call then
        # finds it broken if anything changed it, and checks every writer).
        if isinstance(last, BaseException):
            self._chain = before
        else:
            self._chain = token if last[0] == 1 else f"{token}!"
        if not intact:
            self._trust += 1  # a broken chain: every writer is checked on its next write
            return results
        for (writer, _), result in zip(writers, results, strict=True):
            if result == scripts.APPENDED and not writer.ended:
                writer.trusted = self._trust  # checked, or vouched for, since the last break
        return results


def _one_result(reply: Any) -> Any:
    """APPEND_MANY's answer for one stream: APPEND's code, or the error on its keys."""
    if isinstance(reply, bytes | str):
        text = reply.decode(errors="replace") if isinstance(reply, bytes) else reply
        return ResponseError(text.removeprefix("ERR "))
    return reply
