"""What producer and worker agree on about arq: the job function's name and JSON jobs."""

from __future__ import annotations

import json
import time
from typing import Any

from arq.connections import ArqRedis, RedisSettings
from arq.jobs import serialize_job as arq_serialize_job

from streamq.core.connections import pool_from_url
from streamq.core.keys import wake_channel as wake_channel  # its home is keys.py
from streamq.core.redis_urls import SENTINEL_SCHEMES, SentinelURL

JOB_FUNCTION = "streamq_chat"
# What the worker runs instead of an arq job whose envelope is not what a producer writes.
REJECTED_FUNCTION = "streamq_rejected"
MAX_ENQUEUE_TIME_MS = 10**14  # year 5138: past it arq's datetime conversion overflows
MAX_TRY = 10**9


def serialize_job(obj: dict[str, Any]) -> bytes:
    """arq job serializer: JSON, never pickle. Anything JSON cannot hold (arq puts exceptions in
    the results of failed jobs) is stored as its ``repr``."""
    return json.dumps(obj, separators=(",", ":"), default=repr).encode()


def deserialize_job(raw: bytes) -> dict[str, Any]:
    """arq job deserializer: JSON only, so a pickle payload is rejected, not executed."""
    body = json.loads(raw)
    if not isinstance(body, dict):
        raise ValueError("an arq job must be a JSON object")
    return body


def deserialize_worker_job(raw: bytes) -> dict[str, Any]:
    """The worker's arq job deserializer: a producer's envelope as it is; anything else
    (garbage, a pickle, wrong-typed fields) becomes a call of :data:`REJECTED_FUNCTION` that
    says why. arq would crash on some such envelopes and drop others; this way nothing in them
    runs, and the job they stood for still ends with an ``error`` event."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        return _rejected(f"not JSON ({type(exc).__name__})")
    problem = envelope_problem(body)
    return _rejected(problem) if problem else body


def envelope_problem(body: object) -> str | None:
    """Why ``body`` is not an arq envelope of a streamq job, or None if it is one."""
    if not isinstance(body, dict):
        return "not a JSON object"
    if body.get("f") != JOB_FUNCTION:
        return f"function is {_short(body.get('f'))}, not {JOB_FUNCTION!r}"
    if body.get("a") != [] or body.get("k") != {}:
        return "a streamq job has no arguments"
    job_try, enqueued = body.get("t"), body.get("et")
    if job_try is not None and not _int_in(job_try, 0, MAX_TRY):
        return f"try count is {_short(job_try)}"
    if not _int_in(enqueued, 0, MAX_ENQUEUE_TIME_MS):
        return f"enqueue time is {_short(enqueued)}"
    return None


def _int_in(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _rejected(problem: str) -> dict[str, Any]:
    return {
        "f": REJECTED_FUNCTION,
        "a": [],
        "k": {"problem": problem},
        "t": None,
        "et": int(time.time() * 1000),
    }


def arq_job(enqueue_time_ms: int) -> bytes:
    """The value arq keeps under ``arq:job:<id>`` for a streamq job enqueued at that time."""
    return arq_serialize_job(JOB_FUNCTION, (), {}, None, enqueue_time_ms, serializer=serialize_job)


def redis_settings(url: str) -> RedisSettings:
    """arq's connection settings for ``url`` (redis://, rediss://, unix:// or a Sentinel URL)."""
    if url.startswith(SENTINEL_SCHEMES):
        target = SentinelURL.parse(url)
        return RedisSettings(
            host=list(target.sentinels),
            sentinel=True,
            sentinel_master=target.service,
            database=target.db,
            username=target.username,
            password=target.password,
            ssl=target.tls,
        )
    return RedisSettings.from_dsn(url)


def arq_redis(url: str, queue_name: str) -> ArqRedis:
    """arq's client (JSON jobs) on the same resilient pool."""
    client = ArqRedis(
        pool_or_conn=pool_from_url(url),
        job_serializer=serialize_job,
        job_deserializer=deserialize_job,
        default_queue_name=queue_name,
    )
    client.auto_close_connection_pool = True
    return client
