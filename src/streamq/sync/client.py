"""The producing side, synchronous: ``StreamQ`` enqueues chat jobs and hands out job handles."""

from __future__ import annotations

import contextlib
from types import TracebackType

from arq.constants import expires_extra_ms
from arq.utils import timestamp_ms
from redis import Redis, WatchError

from streamq.core import scripts
from streamq.core.connections import sync_redis_from_url
from streamq.core.exceptions import ConfigError
from streamq.core.protocol import ClientBase
from streamq.core.queue import arq_job
from streamq.core.settings import Settings
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

    def _submit(self, job_id: str, keys: list[str], args: list[str | bytes | int]) -> ChatJob:
        is_new = self._enqueue(keys, args)
        if not is_new and not self._redis.hexists(self._keys.state(job_id), "terminal"):
            self._requeue(job_id)
        return self.job(job_id)

    def _requeue(self, job_id: str) -> None:
        """arq's ``enqueue_job`` (which has no sync form): queue the job unless arq holds it."""
        job_key = self._keys.arq_job(job_id)
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.watch(job_key)  # type: ignore[no-untyped-call]
            if pipe.exists(job_key, self._keys.arq_result(job_id)):
                return
            now = timestamp_ms()
            pipe.multi()
            pipe.psetex(job_key, expires_extra_ms, arq_job(now))
            pipe.zadd(self.settings.queue_name, {self._keys.arq_job_id(job_id): now})
            with contextlib.suppress(WatchError):  # queued by someone else meanwhile
                pipe.execute()
