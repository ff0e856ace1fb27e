"""Validation at the edge: a bad request raises a clear error and nothing reaches Redis."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis

from streamq import ClientClosed, InvalidRequest, JobIdConflict, Settings, StreamQ


async def keys_written(redis: Redis, settings: Settings) -> list[bytes]:
    return [key async for key in redis.scan_iter(match=f"{settings.key_prefix}*")]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"messages": []}, "non-empty list"),
        ({"messages": "hello"}, "non-empty list"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "role"),
        ({"messages": [{"role": "user", "content": 42}]}, "content must be a string"),
        ({"messages": [{"role": "user"}]}, "content must be a string"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "tool_call_id"),
        ({"messages": [{"role": "user", "content": [{"text": "x"}]}]}, "'type'"),
        ({"messages": [{"role": "user", "content": "hi"}], "job_id": "has space"}, "job id"),
        ({"messages": [{"role": "user", "content": "hi"}], "job_id": "x" * 200}, "job id"),
        ({"messages": [{"role": "user", "content": "hi"}], "model": ""}, "model"),
        ({"messages": [{"role": "user", "content": "hi"}], "frobnicate": 1}, "unknown parameter"),
        ({"messages": [{"role": "user", "content": "hi"}], "api_key": "sk-x"}, "cannot travel"),
        ({"messages": [{"role": "user", "content": "hi"}], "base_url": "http://x"}, "cannot"),
        ({"messages": [{"role": "user", "content": "hi"}], "stream": False}, "cannot travel"),
        ({"messages": [{"role": "user", "content": "hi"}], "temperature": 3}, "temperature"),
        ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, "max_tokens"),
        ({"messages": [{"role": "user", "content": "hi"}], "n": True}, "n must be"),
        ({"messages": [{"role": "user", "content": "hi"}], "stop": [1]}, "stop"),
        ({"messages": [{"role": "user", "content": "x" * 2_000}]}, "limit is 1000"),
        ({"messages": [{"role": "user", "content": "hi"}], "metadata": {"k": {1, 2}}}, "JSON"),
    ],
)
async def test_invalid_requests_are_rejected_before_redis(
    settings: Settings, redis: Redis, kwargs: dict[str, Any], message: str
) -> None:
    """Each malformed request raises InvalidRequest naming the problem; no key is written."""
    async with StreamQ(redis, settings.replace(max_request_bytes=1000)) as sq:
        with pytest.raises(InvalidRequest, match=message):
            await sq.enqueue(**kwargs)
    assert await keys_written(redis, settings) == []
    assert await redis.zcard(settings.queue_name) == 0


@pytest.mark.parametrize(
    "kwargs",
    [{"user_message": 5}, {"user_message": "hi", "history": "not a list"}],
)
async def test_invalid_enqueue_chat_arguments(
    sq: StreamQ, redis: Redis, settings: Settings, kwargs: dict[str, Any]
) -> None:
    """enqueue_chat rejects a non-string message and a history that is not a list."""
    with pytest.raises(InvalidRequest):
        await sq.enqueue_chat(**kwargs)
    assert await keys_written(redis, settings) == []


async def test_job_id_is_validated_when_attaching(sq: StreamQ) -> None:
    """Attaching to a malformed job id fails at once."""
    with pytest.raises(InvalidRequest):
        sq.job("{evil}")


async def test_a_closed_client_cannot_be_reused(settings: Settings) -> None:
    """After `async with` exits, the client refuses further use."""
    async with StreamQ.from_url(settings.redis_url, settings) as sq:
        pass
    with pytest.raises(ClientClosed):
        await sq.enqueue_chat("hi")


async def test_decode_responses_clients_are_refused(settings: Settings) -> None:
    """A Redis client that decodes responses is refused with a clear message."""
    client = Redis.from_url(settings.redis_url, decode_responses=True)
    with pytest.raises(ValueError, match="decode_responses"):
        StreamQ(client, settings)
    await client.aclose()


async def test_a_job_id_reused_for_another_request_is_refused(settings: Settings) -> None:
    """The same id and request find the same job (parameter order does not count); the same id
    with another request raises JobIdConflict, from either client, and changes nothing."""
    from streamq import sync

    async with StreamQ.from_url(settings.redis_url, settings) as sq:
        first = await sq.enqueue_chat("hi", job_id="order-1", temperature=0.5, seed=1)
        again = await sq.enqueue_chat("hi", job_id="order-1", seed=1, temperature=0.5)
        assert again.id == first.id
        with pytest.raises(JobIdConflict, match="'order-1' was already used for a different"):
            await sq.enqueue_chat("hello", job_id="order-1", temperature=0.5, seed=1)
        with pytest.raises(JobIdConflict):
            await sq.enqueue_chat("hi", job_id="order-1", temperature=0.7, seed=1)
        assert await sq.job("order-1").exists()
    with sync.StreamQ.from_url(settings.redis_url, settings) as blocking:
        assert blocking.enqueue_chat("hi", job_id="order-1", temperature=0.5, seed=1).id == first.id
        with pytest.raises(JobIdConflict):
            blocking.enqueue_chat("hello", job_id="order-1")
