"""What producer and worker agree on about arq: the job function's name and JSON jobs."""

from __future__ import annotations

import json
from typing import Any

from arq.connections import RedisSettings
from arq.jobs import serialize_job as arq_serialize_job

from streamq.redis_urls import SENTINEL_SCHEMES, SentinelURL

JOB_FUNCTION = "streamq_chat"


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


def wake_channel(queue_name: str) -> str:
    """Pub/sub channel a producer publishes on after enqueueing, to wake idle workers."""
    return f"{queue_name}:wake"
