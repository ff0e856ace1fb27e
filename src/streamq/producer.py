"""The producing side: ``StreamQ`` enqueues chat jobs and hands out :class:`ChatJob` handles."""

from __future__ import annotations

import os
import uuid
from collections.abc import Awaitable, Mapping, Sequence
from types import TracebackType
from typing import Any, cast

from arq.connections import ArqRedis
from arq.constants import expires_extra_ms, job_key_prefix, result_key_prefix
from arq.utils import timestamp_ms
from redis.asyncio import Redis

from streamq import scripts
from streamq.connections import redis_from_url, streams_from_url
from streamq.consumer import ChatJob
from streamq.exceptions import ClientClosed, ConfigError
from streamq.keys import Keys, check_job_id
from streamq.multiplexer import Multiplexer
from streamq.queue import JOB_FUNCTION, arq_job, serialize_job, wake_channel
from streamq.request import build_request, chat_messages
from streamq.settings import Settings


class StreamQ:
    """Async client that enqueues chat jobs: ``async with StreamQ.from_env() as sq: ...``."""

    def __init__(self, redis: Redis, settings: Settings | None = None) -> None:
        """Wrap an existing client (``decode_responses`` must be off); it is not closed here."""
        if redis.connection_pool.connection_kwargs.get("decode_responses"):
            raise ConfigError("StreamQ needs a Redis client with decode_responses=False")
        self.settings = settings or Settings()
        self._redis = redis
        self._owns_redis = False
        self._closed = False
        self._keys = Keys(self.settings.key_prefix)
        self._queue = ArqRedis(
            pool_or_conn=redis.connection_pool,
            job_serializer=serialize_job,
            default_queue_name=self.settings.queue_name,
        )
        self._enqueue = redis.register_script(scripts.ENQUEUE)
        # The job streams, on their own Redis (or Redis Cluster) when STREAMQ_STREAMS_URL says.
        url = self.settings.streams_url
        self._streams = redis if url is None else streams_from_url(url)

    @classmethod
    def from_url(cls, url: str, settings: Settings | None = None) -> StreamQ:
        """A client with its own connection pool to the Redis at ``url``."""
        settings = (settings or Settings()).replace(redis_url=url)
        client = cls(redis_from_url(url), settings)
        client._owns_redis = True
        return client

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        env_file: str | os.PathLike[str] | None = None,
    ) -> StreamQ:
        """A client configured by :meth:`Settings.from_env`."""
        settings = Settings.from_env(environ, env_file=env_file)
        return cls.from_url(settings.redis_url, settings)

    async def __aenter__(self) -> StreamQ:
        self._check_open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Release the connection pool if this client created it; the client cannot be reused."""
        if not self._closed:
            if self._streams is not self._redis:
                await self._streams.aclose()
            if self._owns_redis:
                await self._redis.aclose()
        self._closed = True

    async def enqueue_chat(
        self,
        user_message: str,
        *,
        system_prompt: str | None = None,
        history: Sequence[Mapping[str, Any]] | None = None,
        model: str | None = None,
        job_id: str | None = None,
        deadline: float | None = None,
        idle_timeout: float | None = None,
        buffered: bool = False,
        **params: Any,
    ) -> ChatJob:
        """Enqueue one user turn, after an optional system prompt and history."""
        messages = chat_messages(user_message, system_prompt=system_prompt, history=history)
        return await self.enqueue(
            messages=messages,
            model=model,
            job_id=job_id,
            deadline=deadline,
            idle_timeout=idle_timeout,
            buffered=buffered,
            **params,
        )

    async def enqueue(
        self,
        messages: Sequence[Mapping[str, Any]],
        model: str | None = None,
        job_id: str | None = None,
        deadline: float | None = None,
        idle_timeout: float | None = None,
        buffered: bool = False,
        **params: Any,
    ) -> ChatJob:
        """Enqueue a chat completion over ``messages``; extra OpenAI parameters travel with it.

        ``job_id`` is the idempotency key: enqueueing an id that exists returns the same job and
        starts nothing. Invalid input raises :class:`~streamq.InvalidRequest` before anything
        reaches Redis. ``model`` defaults to the worker's ``OPENAI_MODEL``; ``deadline`` (total
        seconds, retries included) and ``idle_timeout`` (seconds without upstream data) default
        to the worker's ``STREAMQ_JOB_TIMEOUT`` and ``STREAMQ_IDLE_TIMEOUT``. ``buffered`` asks
        the upstream for the whole answer at once (``stream=false``): the stream then carries
        each choice in one piece, and the usage of servers that report it only so.
        """
        self._check_open()
        job_id, request = validated_job(
            self.settings, messages, model, job_id, deadline, idle_timeout, params, buffered
        )
        is_new = await self._enqueue_new(job_id, request)
        if not is_new and not await self._has_ended(job_id):
            # The same id again, not finished: make sure arq still holds it (a job whose run was
            # fenced off can leave arq's queue). arq ignores an id it already holds.
            await self._queue.enqueue_job(JOB_FUNCTION, _job_id=self._keys.arq_job_id(job_id))
        return self.job(job_id)

    async def _enqueue_new(self, job_id: str, request: str) -> bool:
        """Store the request and queue the job as arq would, in one round trip; False if the id
        exists already."""
        keys, args = enqueue_call(self.settings, job_id, request, timestamp_ms())
        is_new = await self._enqueue(keys, args)
        return bool(is_new)

    async def _has_ended(self, job_id: str) -> bool:
        ended = self._streams.hexists(self._keys.state(job_id), "terminal")
        return bool(await cast(Awaitable[bool], ended))

    def job(self, job_id: str) -> ChatJob:
        """A handle on an existing job, e.g. one enqueued by another process."""
        self._check_open()
        return ChatJob(
            self._redis,
            self._keys,
            check_job_id(job_id),
            read_timeout=self.settings.read_timeout,
            stream_ttl=self.settings.stream_ttl,
            streams=self._streams,
        )

    def multiplexer(self) -> Multiplexer:
        """A reader that follows many jobs over one blocking read (``async with`` it)."""
        self._check_open()
        return Multiplexer(
            self._redis,
            self._keys,
            read_timeout=self.settings.read_timeout,
            streams=self._streams,
        )

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosed("this StreamQ client was closed; create a new one")


def validated_job(
    settings: Settings,
    messages: Sequence[Mapping[str, Any]],
    model: str | None,
    job_id: str | None,
    deadline: float | None,
    idle_timeout: float | None,
    params: Mapping[str, Any],
    buffered: bool = False,
) -> tuple[str, str]:
    """The job's id (a new one when None) and its request as stored; raises InvalidRequest."""
    options = {"deadline": deadline, "idle_timeout": idle_timeout, "buffered": buffered}
    request = build_request(messages, model, params, options, max_bytes=settings.max_request_bytes)
    return uuid.uuid4().hex if job_id is None else check_job_id(job_id), request.to_json()


def enqueue_call(
    settings: Settings, job_id: str, request: str, now_ms: int
) -> tuple[list[str], list[str | bytes | int]]:
    """KEYS and ARGV of :data:`scripts.ENQUEUE`: store the request and queue the job as arq
    would, in one round trip (the script answers 0 if the id exists already)."""
    keys = Keys(settings.key_prefix)
    arq_id = keys.arq_job_id(job_id)
    script_keys = [
        keys.request(job_id),
        job_key_prefix + arq_id,
        result_key_prefix + arq_id,
        settings.queue_name,
    ]
    args: list[str | bytes | int] = [request, settings.stream_ttl, arq_id, arq_job(now_ms)]
    args += [expires_extra_ms, now_ms, wake_channel(settings.queue_name)]
    return script_keys, args
