"""The Redis clients streamq makes: their async connections pack commands with hiredis, byte
for byte as redis-py's own packer would, and still talk to a real Redis; a dropped connection's
unread error is one warning line in a worker."""

from __future__ import annotations

import asyncio
import logging

import pytest
from redis.asyncio.connection import AbstractConnection, Connection
from redis.exceptions import DataError

from streamq.core.connections import pool_from_url, redis_from_url
from streamq.worker.arq_worker import quiet_dropped_connections

ARGS = [
    ("SET", "k", "v"),
    ("EVALSHA", "0" * 40, 2, "é", b"\x00\xff\r\n", 1.5, -3, 10**18),
    ("CONFIG GET", "maxmemory"),  # redis-py splits a command name with a space
    ("XADD", "k", "*", "data", "😀" * 5000),  # past redis-py's buffer cut-off
]


def our_connection() -> AbstractConnection:
    """A connection of the pool streamq makes (not connected: packing needs no server)."""
    made: AbstractConnection = pool_from_url("redis://127.0.0.1:6379/0").make_connection()  # type: ignore[no-untyped-call]
    return made


@pytest.mark.parametrize("args", ARGS, ids=["set", "evalsha", "two-word", "large"])
def test_commands_pack_as_redis_py_packs_them(args: tuple[object, ...]) -> None:
    ours = our_connection()
    theirs = Connection()
    assert b"".join(ours.pack_command(*args)) == b"".join(theirs.pack_command(*args))  # type: ignore[arg-type]


def test_what_cannot_be_sent_is_refused_as_redis_py_refuses_it() -> None:
    connection = our_connection()
    with pytest.raises(DataError):
        connection.pack_command("SET", "k", None)  # type: ignore[arg-type]
    with pytest.raises(UnicodeEncodeError):  # a lone surrogate half (the publisher's check)
        connection.pack_command("SET", "k", "\ud83d")
    assert connection.pack_command("SET", "k", memoryview(b"view"))  # redis-py's own path


async def test_a_real_redis_answers_commands_and_pipelines(redis_url: str) -> None:
    client = redis_from_url(redis_url)
    key = "streamq-test-connections"
    try:
        assert await client.set(key, "é", ex=10)
        async with client.pipeline(transaction=False) as pipe:
            pipe.get(key)
            pipe.strlen(key)
            assert await pipe.execute() == ["é".encode(), 2]
    finally:
        await client.delete(key)
        await client.aclose()


def test_a_dropped_connections_unread_error_is_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A Redis restart leaves futures holding ConnectionResetError that nobody reads: the worker
    loop says so in one warning line, where asyncio would log an ERROR with a traceback (and the
    fault suite takes any traceback in a worker's log for a bug); other reports are asyncio's."""
    loop = asyncio.new_event_loop()
    try:
        future = loop.create_future()
        future.set_exception(ConnectionResetError(104, "Connection reset by peer"))
        context: dict[str, object] = {
            "message": "Future exception was never retrieved",
            "future": future,
            "exception": future.exception(),
        }
        with caplog.at_level(logging.WARNING):
            quiet_dropped_connections(loop, context)
        [record] = caplog.records
        assert record.levelno == logging.WARNING
        assert record.exc_info is None
        caplog.clear()
        other: dict[str, object] = {
            "message": "Future exception was never retrieved",
            "exception": KeyError("x"),
        }
        with caplog.at_level(logging.WARNING):
            quiet_dropped_connections(loop, other)
        assert [r.levelno for r in caplog.records] == [logging.ERROR]
    finally:
        loop.close()
