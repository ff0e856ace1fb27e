"""The producing side: ``StreamQ`` enqueues chat jobs and hands out :class:`ChatJob` handles."""

from __future__ import annotations

from collections.abc import Awaitable, Mapping, Sequence
from types import TracebackType
from typing import Any, cast

from arq.connections import ArqRedis
from redis.asyncio import Redis

from streamq.core import scripts
from streamq.core.connections import redis_from_url, streams_from_url
from streamq.core.protocol import ClientBase
from streamq.core.queue import JOB_FUNCTION, serialize_job
from streamq.core.request import chat_messages
from streamq.core.settings import Settings
from streamq.job import ChatJob
from streamq.multiplexer import Multiplexer


class StreamQ(ClientBase[Redis, ChatJob]):
    """Async client that enqueues chat jobs: ``async with StreamQ.from_env() as sq: ...``."""

    _job_type = ChatJob

    def __init__(self, redis: Redis, settings: Settings | None = None) -> None:
        """Wrap an existing client (``decode_responses`` must be off); it is not closed here."""
        super().__init__(redis, settings)
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
    def _connect(cls, url: str) -> Redis:
        return redis_from_url(url)

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
        job_id, keys, args = self._enqueue_call(
            messages, model, job_id, deadline, idle_timeout, params, buffered
        )
        # Store the request and queue the job as arq would, in one round trip; 0 if the id
        # exists already.
        is_new = await self._enqueue(keys, args)
        if not is_new and not await self._has_ended(job_id):
            # The same id again, not finished: make sure arq still holds it (a job whose run was
            # fenced off can leave arq's queue). arq ignores an id it already holds.
            await self._queue.enqueue_job(JOB_FUNCTION, _job_id=self._keys.arq_job_id(job_id))
        return self.job(job_id)

    async def _has_ended(self, job_id: str) -> bool:
        ended = self._streams.hexists(self._keys.state(job_id), "terminal")
        return bool(await cast(Awaitable[bool], ended))

    def _job_options(self) -> dict[str, Any]:
        return {"streams": self._streams}

    def multiplexer(self) -> Multiplexer:
        """A reader that follows many jobs over one blocking read (``async with`` it)."""
        self._check_open()
        return Multiplexer(
            self._redis,
            self._keys,
            read_timeout=self.settings.read_timeout,
            streams=self._streams,
        )
