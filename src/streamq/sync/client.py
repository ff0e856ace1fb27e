"""The producing side, synchronous: ``StreamQ`` enqueues chat jobs and hands out job handles."""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Any, Literal, cast

from arq.constants import expires_extra_ms
from arq.utils import timestamp_ms
from redis import Redis, WatchError

from streamq.core import scripts
from streamq.core.connections import sync_redis_from_url
from streamq.core.events import as_text, decode_entry
from streamq.core.exceptions import ConfigError
from streamq.core.keys import DEFAULT_TENANT
from streamq.core.protocol import ClientBase, enqueued, fair_requeue_call, owner_ttl
from streamq.core.queue import arq_job
from streamq.core.settings import Settings
from streamq.responses.events import output_as_input
from streamq.responses.request import input_items
from streamq.responses.store import (
    checked_record,
    finished_output,
    job_id_of,
    new_response,
)
from streamq.sync.job import ChatJob


class StreamQ(ClientBase[Redis, ChatJob, ChatJob]):
    """Blocking client that enqueues chat jobs: ``with StreamQ.from_env() as sq: ...``.

    Same arguments, validation, errors and Redis writes as :class:`streamq.StreamQ`.
    """

    _job_type = ChatJob

    def __init__(self, redis: Redis, settings: Settings | None = None) -> None:
        """Wrap an existing client (``decode_responses`` must be off); it is not closed here."""
        super().__init__(redis, settings)
        if self.settings.streams_url is not None:
            raise ConfigError(
                "streamq.sync does not support STREAMQ_STREAMS_URL yet: use the async client"
            )
        self._enqueue = redis.register_script(scripts.ENQUEUE)
        self._fair_requeue = redis.register_script(scripts.FAIR_REQUEUE)

    @classmethod
    def _connect(cls, url: str) -> Redis:
        return sync_redis_from_url(url)

    def __enter__(self) -> StreamQ:
        self._check_open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release the connection pool if this client created it; the client cannot be reused."""
        if not self._closed and self._owns_redis:
            self._redis.close()
        self._closed = True

    def enqueue_response(
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
        """Enqueue a Responses API request: as :meth:`streamq.StreamQ.enqueue_response`."""
        self._check_open()
        items = input_items(list(input) if not isinstance(input, str) else input)
        context: list[dict[str, Any]] = []
        if previous_response_id is not None:
            context = self._conversation(tenant, previous_response_id)
        options = {"deadline": deadline, "idle_timeout": idle_timeout, "upstream_api": upstream_api}
        new = new_response(
            self.settings, items, context, tenant=tenant, job_id=job_id, model=model,
            instructions=instructions, params=params, options=options,
            previous_response_id=previous_response_id, store=store,
        )  # fmt: skip
        if new.record is not None:
            ttl = owner_ttl(self.settings)  # the record lives as long as the job's owner
            self._redis.set(self._keys.response(new.job_id), new.record.to_json(), nx=True, ex=ttl)
        return self.enqueue_request(new.request, new.job_id, tenant=tenant)

    def _conversation(self, tenant: str, previous_id: str) -> list[dict[str, Any]]:
        """What :meth:`ResponseStore.conversation` reads, read with this client."""
        raw = self._redis.get(self._keys.response(job_id_of(previous_id)))
        previous = checked_record(cast(bytes | None, raw), tenant, previous_id)
        key = self._keys.events(previous.job_id)
        entries = cast(list[tuple[bytes, dict[bytes, bytes]]], self._redis.xrange(key))
        events = [decode_entry(as_text(cursor), fields) for cursor, fields in entries]
        exists = bool(events) or bool(self._redis.exists(self._keys.request(previous.job_id)))
        output = finished_output(previous, events, exists, "previous_response_id")
        return previous.conversation(output_as_input(output))

    def _submit(self, job_id: str, keys: list[str], args: list[str | bytes | int]) -> ChatJob:
        is_new = enqueued(job_id, args, self._enqueue(keys, args))
        if not is_new and not self._redis.hexists(self._keys.state(job_id), "terminal"):
            self._requeue(job_id)
        return self.job(job_id)

    def _requeue(self, job_id: str) -> None:
        """arq's ``enqueue_job`` (which has no sync form): queue the job unless arq holds it,
        at the front of the fair order (it had waited its turn)."""
        job_key = self._keys.arq_job(job_id)
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.watch(job_key)  # type: ignore[no-untyped-call]
            if pipe.exists(job_key, self._keys.arq_result(job_id)):
                return
            now = timestamp_ms()
            pipe.multi()
            pipe.psetex(job_key, expires_extra_ms, arq_job(now))
            pipe.zadd(self.settings.queue_name, {self._keys.arq_job_id(job_id): now})
            try:
                pipe.execute()
            except WatchError:  # queued by someone else meanwhile
                return
        arq_id = self._keys.arq_job_id(job_id)
        keys, args = fair_requeue_call(self.settings.queue_name, self.settings.stream_ttl, arq_id)
        self._fair_requeue(keys, args)
