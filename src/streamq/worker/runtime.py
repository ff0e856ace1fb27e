"""A worker process's runtime: what every job shares, and the arq job functions that use it.

One :class:`WorkerRuntime` per process holds the OpenAI client pool, the publisher, the fleet's
leases and signals, admission and the job runner; arq calls :func:`streamq_chat` per job, and
:func:`streamq_rejected` for a queue entry that is not a producer's.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

import httpx2
from arq.connections import ArqRedis
from arq.worker import Retry
from openai import DEFAULT_TIMEOUT, AsyncOpenAI, DefaultAioHttpClient
from redis.asyncio import Redis
from redis.exceptions import RedisError

from streamq.admin.presence import WorkerPresence
from streamq.core import metrics
from streamq.core.connections import streams_from_url
from streamq.core.events import Error
from streamq.core.exceptions import ConfigError, Fenced, InvalidRequest, PublishFailed
from streamq.core.keys import Keys, wake_channel
from streamq.core.redis_errors import is_transient
from streamq.core.settings import Settings
from streamq.core.version import __version__
from streamq.webhooks.delivery import WebhookDelivery
from streamq.webhooks.endpoints import configured as webhooks_configured
from streamq.worker.admission import Admission
from streamq.worker.fleet import Fleet
from streamq.worker.openai_pool import ClientPool
from streamq.worker.publisher import Publisher
from streamq.worker.runner import JobRunner
from streamq.worker.start_gate import request_sent

logger = logging.getLogger("streamq.worker")

NO_KEY_NEEDED = "unused"  # OpenAI-compatible servers without auth still get a bearer header
PUBLISH_RETRY_DELAY = 2.0


class WorkerRuntime:
    """Per-process state shared by all jobs: one OpenAI client, publisher, fleet and runner."""

    def __init__(
        self,
        settings: Settings,
        redis: ArqRedis,
        clients: ClientPool,
        on_wake: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.clients = clients
        self.keys = Keys(settings.key_prefix)
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        url = settings.streams_url
        self.streams: Redis = redis if url is None else streams_from_url(url)
        self.publisher = Publisher(
            self.streams,
            ttl=settings.stream_ttl,
            chain_key=self.keys.publisher(f"{self.name}:{secrets.token_hex(4)}"),
            linger=settings.publish_linger,
        )
        self.fleet = Fleet(
            redis,
            self.keys,
            lease=settings.lease,
            arq_id=self.keys.arq_job_id,
            queue_name=settings.queue_name,
            fair_ttl=settings.stream_ttl,
            wake_channel=wake_channel(settings.queue_name),
            on_wake=on_wake,
            presence=WorkerPresence(
                id=self.name,
                host=socket.gethostname(),
                pid=os.getpid(),
                version=__version__,
                queue=settings.queue_name,
                concurrency=settings.concurrency,
                in_flight=0,
                started_at=time.time(),
            ),
            streams=self.streams,
        )
        self.admission = Admission(
            redis,
            self.keys,
            settings.model_limits,
            lease=settings.lease,
            api_key=settings.openai_api_key,
        )
        self.runner = JobRunner(
            settings,
            redis,
            clients,
            self.admission,
            self.publisher,
            self.fleet,
            self.name,
            streams=self.streams,
        )
        self.webhooks: WebhookDelivery | None = None
        if webhooks_configured(settings):
            self.webhooks = WebhookDelivery(settings, redis, self.streams)

    def start(self) -> None:
        """Start the background tasks."""
        self.publisher.start()
        self.fleet.start()
        self.admission.start()
        if self.webhooks is not None:
            self.webhooks.start()

    async def aclose(self) -> None:
        """Stop the background tasks (writing what is pending) and close the OpenAI clients."""
        if self.webhooks is not None:
            await self.webhooks.aclose()
        await self.fleet.aclose()
        await self.admission.aclose()
        await self.publisher.aclose()
        await self.runner.aclose()
        await self.clients.aclose()
        if self.streams is not self.runner.redis:
            await self.streams.aclose()

    async def run_job(self, arq_job_id: str, rejection: Error | None = None) -> dict[str, Any]:
        """Run the job arq handed us, unless its id is not one of ours; with ``rejection``
        (its envelope was unreadable) end it with that error instead."""
        try:
            job_id = self.keys.job_id_from_arq(arq_job_id)
        except InvalidRequest as exc:
            logger.error("rejected arq job: %s", exc)
            return {"outcome": "rejected"}
        try:
            await self._register_webhook(job_id)
            outcome = await self.runner.run(job_id, rejection)
        except Fenced as exc:
            logger.warning("job %s: %s", job_id, exc)
            return {"outcome": "fenced"}
        except PublishFailed as exc:
            logger.error("job %s could not publish: %s", job_id, exc)
            raise Retry(defer=PUBLISH_RETRY_DELAY) from exc
        except (RedisError, OSError) as exc:
            # Any other exception counts as the job's failure to arq, which then deletes the
            # job: a Redis blip (or failover) during the claim would strand it, queued forever.
            if not is_transient(exc):  # its own keys are unusable (WRONGTYPE...): no retry helps
                logger.error("job %s: Redis refused its keys (%r); dropped", job_id, exc)
                return {"outcome": "redis_refused"}
            logger.warning("job %s: Redis failed (%r); queued again", job_id, exc)
            raise Retry(defer=PUBLISH_RETRY_DELAY) from exc
        finally:
            if self.webhooks is not None:
                self.webhooks.left(job_id)
        if self.webhooks is not None:  # any outcome: a job cancelled while queued ended too
            self.webhooks.ended(job_id)
        return {"outcome": outcome}

    async def _register_webhook(self, job_id: str) -> None:
        """Before the job can end, so its webhook is never lost: a Redis blip raises (the job
        runs later); Redis refusing the webhook's keys costs the webhook, never the job."""
        if self.webhooks is None:
            return
        try:
            await self.webhooks.register(job_id)
        except RedisError as exc:
            if is_transient(exc):
                raise
            logger.error("job %s: its webhook cannot be registered: %r", job_id, exc)


async def streamq_chat(ctx: dict[str, Any]) -> dict[str, Any]:
    """The arq job function: the job's request lives in Redis under its id, not in arq's args."""
    runtime: WorkerRuntime = ctx["streamq"]
    metrics.job_dequeued(ctx.get("enqueue_time"), ctx.get("job_try", 1))
    return await runtime.run_job(str(ctx["job_id"]))


async def streamq_rejected(ctx: dict[str, Any], problem: str) -> dict[str, Any]:
    """What arq runs for a queued envelope that is not a producer's: end its job with why."""
    runtime: WorkerRuntime = ctx["streamq"]
    job_id = str(ctx["job_id"])
    logger.error("job %s: malformed arq envelope: %s", job_id, problem)
    message = f"the job's queue entry is malformed: {problem}"
    return await runtime.run_job(job_id, Error(code="invalid_job", message=message))


# The SDK's default timeouts, but for reads (see openai_client).
NO_READ_TIMEOUT = httpx2.Timeout(
    connect=DEFAULT_TIMEOUT.connect,
    read=None,
    write=DEFAULT_TIMEOUT.write,
    pool=DEFAULT_TIMEOUT.pool,
)


def openai_client(settings: Settings, *, ssl_context: ssl.SSLContext | None = None) -> AsyncOpenAI:
    """The worker's OpenAI client; a missing key is an error unless a base URL is set.

    Clients given one ``ssl_context`` share it (each would otherwise load the CA bundle:
    ~0.8 MB apiece). The SDK's own aiohttp transport carries the requests: reading a body it
    costs about two thirds of the CPU of the default (httpx's, one anyio read and timeout scope
    per network read), most of the cost of many slow streams (benchmarks/results/profile.md).
    """
    if settings.openai_api_key is None and settings.openai_base_url is None:
        raise ConfigError(
            "OPENAI_API_KEY is not set: set it, or set OPENAI_BASE_URL to a server that needs none"
        )
    # No SDK retries: streamq's own policy retries, as new attempts readers can follow. No read
    # timeout: the job's idle timeout bounds every wait for data, and aiohttp would re-arm a
    # timer on each network read (3% of the worker's CPU at 1,000 streams x 5 deltas/s).
    return AsyncOpenAI(
        api_key=settings.openai_api_key or NO_KEY_NEEDED,
        base_url=settings.openai_base_url,
        max_retries=0,
        timeout=NO_READ_TIMEOUT,
        http_client=DefaultAioHttpClient(
            verify=ssl_context or True, event_hooks={"request": [request_sent]}
        ),
    )
