"""A queued job's place in the queue: the commands that look it up, what their replies mean,
and the estimated start. Sans-IO: the client shells and the multiplexer send the commands.

One lookup is a few O(log N) commands per job and a constant number for the whole batch, in one
pipelined round trip, whatever the queue's length:

- ``ZRANK`` of the job in the fair-share order (:func:`~streamq.core.keys.fair_order`), where
  every member waits: its rank is the number of jobs ahead;
- else ``ZRANK`` in arq's queue (scored by enqueue time). Started jobs stay in arq's queue until
  they end, so the fleet's running attempts (``ZCARD`` of :meth:`Keys.running`, once per batch)
  are taken off: they are ahead in arq's order but no longer wait; and a job arq marked in
  progress (``EXISTS`` of its marker) has no place: it started;
- the fleet's finished jobs per minute (the counters ``admin`` keeps, a few small hashes once
  per batch) give the rate the queue moves at: ``eta`` is the time ``ahead + 1`` jobs take to
  end at that rate, None while nothing ended lately.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from streamq.core.events import Queued
from streamq.core.keys import Keys, fair_order

# The eta's rate: jobs ended in the current minute and these many before it.
RATE_MINUTES = 5
# How often a reader of a queued job looks its place up (seconds).
TICK_SECONDS = 1.0
# A new eta is news when it moved by more than this fraction of the last one told.
ETA_CHANGE = 0.1

Command = tuple[str, ...]

logger = logging.getLogger("streamq.queue_position")
_refusals: list[Exception] = []  # the first refused lookup, once logged


@dataclass(frozen=True)
class Place:
    """Where a queued job stands: ``ahead`` jobs start before it, in about ``eta`` seconds."""

    ahead: int
    eta: float | None = None

    def event(self) -> Queued:
        """The ``queued`` event a reader hands out for this place (no cursor: not an entry)."""
        return Queued(reason="queue", ahead=self.ahead, eta=self.eta)


class PlaceLookup:
    """The lookup of ``job_ids``' places on queue ``queue_name``: :meth:`commands` to send in one
    pipeline (in order), then :meth:`places` of their replies. ``now`` (Unix seconds) picks the
    counters' minutes; the local clock is close enough for an estimate."""

    def __init__(
        self, keys: Keys, queue_name: str, job_ids: Sequence[str], now: float | None = None
    ) -> None:
        self._keys, self._queue, self.job_ids = keys, queue_name, list(job_ids)
        self._now = time.time() if now is None else now

    def commands(self) -> list[Command]:
        """Two ``ZRANK`` and an ``EXISTS`` per job, then ``ZCARD`` of the running set and the
        counters' hashes."""
        commands: list[Command] = []
        for job_id in self.job_ids:
            member = self._keys.arq_job_id(job_id)
            commands.append(("ZRANK", fair_order(self._queue), member))
            commands.append(("ZRANK", self._queue, member))
            commands.append(("EXISTS", self._keys.arq_in_progress(job_id)))
        commands.append(("ZCARD", self._keys.running()))
        minute = int(self._now // 60)
        for bucket in range(minute - RATE_MINUTES, minute + 1):
            commands.append(("HGETALL", self._keys.counters(bucket)))
        return commands

    def places(self, replies: Sequence[Any]) -> dict[str, Place | None]:
        """Each job's place from the replies to :meth:`commands`; None for a job in neither
        queue (it started, ended, or was never queued here), and where a reply needed is an
        error (say, a Redis user not allowed the command): a place is never worth failing a
        read for. No eta when the counters cannot be read."""
        _log_refusal(replies)
        count = len(self.job_ids)
        running = replies[3 * count]
        rate = self._rate(replies[3 * count + 1 :])
        places: dict[str, Place | None] = {}
        for i, job_id in enumerate(self.job_ids):
            fair, arq, started = replies[3 * i : 3 * i + 3]
            if _failed(fair, started) or started or (fair is None and arq is None):
                places[job_id] = None
                continue
            if fair is not None:
                ahead = _int(fair)
            elif _failed(arq, running):
                places[job_id] = None
                continue
            else:
                ahead = max(0, _int(arq) - _int(running))
            places[job_id] = Place(ahead, estimate(ahead, rate))
        return places

    def _rate(self, buckets: Sequence[Any]) -> float:
        """Jobs ended per second over the counted minutes (0, unknown, if one cannot be read)."""
        if _failed(*buckets):
            return 0.0
        ended = 0
        for bucket in buckets:
            for name, value in (bucket or {}).items():
                if _text(name).startswith("jobs:"):
                    ended += _int(value)
        seconds = RATE_MINUTES * 60 + self._now % 60
        return ended / seconds


def estimate(ahead: int, rate: float) -> float | None:
    """Seconds until a job with ``ahead`` jobs before it starts when jobs end at ``rate`` per
    second: ``ahead + 1`` must end to free a slot for it. None when nothing ends."""
    if rate <= 0:
        return None
    return round((ahead + 1) / rate, 1)


def is_news(place: Place | None, told: Place | None) -> bool:
    """Whether ``place`` is worth telling a reader who was last told ``told``: another
    ``ahead``, an eta that appeared or went, or one that moved by more than :data:`ETA_CHANGE`."""
    if place is None:
        return False
    if told is None or place.ahead != told.ahead:
        return True
    if place.eta is None or told.eta is None:
        return place.eta != told.eta
    return abs(place.eta - told.eta) > ETA_CHANGE * max(told.eta, 1.0)


def _log_refusal(replies: Sequence[Any]) -> None:
    """Say once per process that lookups are refused (say, by a Redis user without their
    commands: docs/operations.md, Redis users)."""
    failure = next((reply for reply in replies if isinstance(reply, Exception)), None)
    if failure is not None and not _refusals:
        _refusals.append(failure)
        logger.warning("queued jobs' places are unknown: Redis refused %r", failure)


def _failed(*replies: Any) -> bool:
    return any(isinstance(reply, Exception) for reply in replies)


def _int(value: Any) -> int:
    return int(value) if value is not None else 0


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
