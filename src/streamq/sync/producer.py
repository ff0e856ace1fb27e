"""The producing side, synchronous: ``StreamQ`` enqueues chat jobs and hands out job handles."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

from arq.constants import expires_extra_ms, job_key_prefix, result_key_prefix
from arq.utils import timestamp_ms
from redis import Redis, WatchError

from streamq import scripts
from streamq.connections import sync_redis_from_url
from streamq.exceptions import ClientClosed, ConfigError
from streamq.keys import Keys, check_job_id
from streamq.producer import enqueue_call, validated_job
from streamq.queue import arq_job
from streamq.request import chat_messages
from streamq.settings import Settings
from streamq.sync.consumer import ChatJob


class StreamQ:
    """Blocking client that enqueues chat jobs: ``with StreamQ.from_env() as sq: ...``.

    Same arguments, validation, errors and Redis writes as :class:`streamq.StreamQ`.
    """

    def __init__(self, redis: Redis, settings: Settings | None = None) -> None:
        """Wrap an existing client (``decode_responses`` must be off); it is not closed here."""
        if redis.connection_pool.connection_kwargs.get("decode_responses"):
            raise ConfigError("StreamQ needs a Redis client with decode_responses=False")
        self.settings = settings or Settings()
        if self.settings.streams_url is not None:
            raise ConfigError(
                "streamq.sync does not support STREAMQ_STREAMS_URL yet: use the async client"
            )
        self._redis = redis
        self._owns_redis = False
        self._closed = False
        self._keys = Keys(self.settings.key_prefix)
        self._enqueue = redis.register_script(scripts.ENQUEUE)

    @classmethod
    def from_url(cls, url: str, settings: Settings | None = None) -> StreamQ:
        """A client with its own connection pool to the Redis at ``url``."""
        settings = (settings or Settings()).replace(redis_url=url)
        client = cls(sync_redis_from_url(url), settings)
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

    def enqueue_chat(
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
        return self.enqueue(
            messages=messages,
            model=model,
            job_id=job_id,
            deadline=deadline,
            idle_timeout=idle_timeout,
            buffered=buffered,
            **params,
        )

    def enqueue(
        self,
        messages: Sequence[Mapping[str, Any]],
        model: str | None = None,
        job_id: str | None = None,
        deadline: float | None = None,
        idle_timeout: float | None = None,
        buffered: bool = False,
        **params: Any,
    ) -> ChatJob:
        """Enqueue a chat completion over ``messages``, as :meth:`streamq.StreamQ.enqueue`.

        ``job_id`` is the idempotency key; invalid input raises :class:`~streamq.InvalidRequest`
        before anything reaches Redis.
        """
        self._check_open()
        job_id, request = validated_job(
            self.settings, messages, model, job_id, deadline, idle_timeout, params, buffered
        )
        keys, args = enqueue_call(self.settings, job_id, request, timestamp_ms())
        is_new = self._enqueue(keys, args)
        if not is_new and not self._redis.hexists(self._keys.state(job_id), "terminal"):
            self._requeue(job_id)
        return self.job(job_id)

    def _requeue(self, job_id: str) -> None:
        """arq's ``enqueue_job`` (which has no sync form): queue the job unless arq holds it."""
        arq_id = self._keys.arq_job_id(job_id)
        job_key = job_key_prefix + arq_id
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.watch(job_key)  # type: ignore[no-untyped-call]
            if pipe.exists(job_key, result_key_prefix + arq_id):
                return
            now = timestamp_ms()
            pipe.multi()
            pipe.psetex(job_key, expires_extra_ms, arq_job(now))
            pipe.zadd(self.settings.queue_name, {arq_id: now})
            with contextlib.suppress(WatchError):  # queued by someone else meanwhile
                pipe.execute()

    def job(self, job_id: str) -> ChatJob:
        """A handle on an existing job, e.g. one enqueued by another process."""
        self._check_open()
        return ChatJob(
            self._redis,
            self._keys,
            check_job_id(job_id),
            read_timeout=self.settings.read_timeout,
            stream_ttl=self.settings.stream_ttl,
        )

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosed("this StreamQ client was closed; create a new one")
