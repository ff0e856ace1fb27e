"""The producing side: ``StreamQ`` enqueues chat jobs and hands out :class:`ChatJob` handles."""

from __future__ import annotations

from collections.abc import Awaitable, Coroutine, Sequence
from types import TracebackType
from typing import Any, Literal, cast

from arq.connections import ArqRedis
from redis.asyncio import Redis

from streamq.core import scripts
from streamq.core.connections import redis_from_url, streams_from_url
from streamq.core.keys import DEFAULT_TENANT
from streamq.core.protocol import ClientBase, enqueued, fair_requeue_call
from streamq.core.queue import JOB_FUNCTION, serialize_job
from streamq.core.settings import Settings
from streamq.job import ChatJob
from streamq.multiplexer import Multiplexer
from streamq.responses.request import input_items
from streamq.responses.store import ResponseStore, new_response


class StreamQ(ClientBase[Redis, ChatJob, Coroutine[Any, Any, ChatJob]]):
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
        self._fair_requeue = redis.register_script(scripts.FAIR_REQUEUE)
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

    async def _submit(self, job_id: str, keys: list[str], args: list[str | bytes | int]) -> ChatJob:
        # Store the request and queue the job as arq would, in one round trip; 0 if the id
        # exists already.
        is_new = enqueued(job_id, args, await self._enqueue(keys, args))
        if not is_new and not await self._has_ended(job_id):
            # The same id again, not finished: make sure arq still holds it (a job whose run was
            # fenced off can leave arq's queue). arq ignores an id it already holds.
            arq_id = self._keys.arq_job_id(job_id)
            if await self._queue.enqueue_job(JOB_FUNCTION, _job_id=arq_id) is not None:
                keys, args = fair_requeue_call(
                    self.settings.queue_name, self.settings.stream_ttl, arq_id
                )
                await self._fair_requeue(keys, args)
        return self.job(job_id)

    async def _has_ended(self, job_id: str) -> bool:
        ended = self._streams.hexists(self._keys.state(job_id), "terminal")
        return bool(await cast(Awaitable[bool], ended))

    def _job_options(self) -> dict[str, Any]:
        return {**super()._job_options(), "streams": self._streams}

    async def enqueue_response(
        self,
        input: str | Sequence[dict[str, Any]],
        *,
        model: str | None = None,
        instructions: str | None = None,
        previous_response_id: str | None = None,
        store: bool = True,
        tenant: str = DEFAULT_TENANT,
        job_id: str | None = None,
        deadline: float | None = None,
        idle_timeout: float | None = None,
        upstream_api: Literal["chat", "responses"] | None = None,
        **params: Any,
    ) -> ChatJob:
        """Enqueue a Responses API request (``input``, ``instructions``, ``tools``,
        ``max_output_tokens``, ``text``, ``reasoning``...); read it like any job.

        ``previous_response_id`` continues a stored response of ``tenant`` (one made here or
        through the gateway's ``/v1/responses``, whose open mode's tenant is the default);
        ``store`` keeps this one for a next turn, for ``GET /v1/responses/{id}`` and its input
        items. The response's id is ``"resp_" + job.id``. Raises :class:`InvalidRequest` for a
        bad request and ``ResponseNotFound`` for an unknown previous response.
        """
        self._check_open()
        responses = ResponseStore(self._redis, self.settings, self._streams)
        items = input_items(list(input) if not isinstance(input, str) else input)
        context: list[dict[str, Any]] = []
        if previous_response_id is not None:
            context = await responses.conversation(tenant, previous_response_id)
        options = {"deadline": deadline, "idle_timeout": idle_timeout, "upstream_api": upstream_api}
        new = new_response(
            self.settings, items, context, tenant=tenant, job_id=job_id, model=model,
            instructions=instructions, params=params, options=options,
            previous_response_id=previous_response_id, store=store,
        )  # fmt: skip
        if new.record is not None:
            await responses.create(new.record)
        return await self.enqueue_request(new.request, new.job_id, tenant=tenant)

    def multiplexer(self) -> Multiplexer:
        """A reader that follows many jobs over one blocking read (``async with`` it)."""
        self._check_open()
        return Multiplexer(
            self._redis,
            self._keys,
            read_timeout=self.settings.read_timeout,
            streams=self._streams,
            queue_name=self.settings.queue_name,
        )
