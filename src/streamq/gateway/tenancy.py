"""Which tenant owns which job: job ids are not capabilities.

The gateway records the creating tenant in ``PREFIX:{JOB_ID}:owner`` (the job's hash tag) as
it enqueues, in the enqueue's own script (an id another tenant owns is refused there, nothing
written), and answers 404 to every other tenant; the tenant also gets its fair share of the
queue (``STREAMQ_TENANT_WEIGHTS``). Idempotency keys are scoped the same way:
the job id is a hash of tenant and key, so two tenants' keys never meet. A key sent again with
the same request finds the same job; with another request it is a 409
(``idempotency_key_reused``), as Stripe's keys are.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any

from redis.asyncio import Redis

from streamq.client import StreamQ
from streamq.core.exceptions import JobIdConflict, JobIdTaken, JobNotFound
from streamq.core.keys import JOB_ID_PATTERN, Keys
from streamq.core.settings import Settings
from streamq.gateway.errors import ApiError
from streamq.job import ChatJob
from streamq.responses.request import ResponsesRequest

MAX_IDEMPOTENCY_KEY = 255
KEY_REUSED = (
    "this Idempotency-Key was already used for a different request: send the same request to "
    "get the same job, or a new key for a new request"
)


class TenantJobs:
    """Enqueue for a tenant, and find a tenant's own jobs."""

    def __init__(self, redis: Redis, sq: StreamQ, settings: Settings) -> None:
        self._redis = redis
        self._sq = sq
        self._keys = Keys(settings.key_prefix)

    async def enqueue(
        self,
        tenant: str,
        idempotency_key: str | None,
        messages: Sequence[Mapping[str, Any]],
        model: str | None,
        options: Mapping[str, Any],
        params: Mapping[str, Any],
    ) -> ChatJob:
        """Enqueue (or, for a repeated idempotency key, find) a job of ``tenant``'s."""
        job_id = job_id_for(tenant, idempotency_key)
        return await self._owned(
            self._sq.enqueue(
                messages, model=model, job_id=job_id, tenant=tenant, **options, **params
            )
        )

    async def enqueue_request(self, tenant: str, job_id: str, request: ResponsesRequest) -> ChatJob:
        """Enqueue ``request`` as job ``job_id`` (of :func:`job_id_for`), or find that job."""
        return await self._owned(self._sq.enqueue_request(request, job_id, tenant=tenant))

    @staticmethod
    async def _owned(enqueued: Awaitable[ChatJob]) -> ChatJob:
        """The job the client's enqueue claimed for the tenant (in the same round trip as the
        enqueue itself: the owner is part of the enqueue script), as an API error otherwise."""
        try:
            return await enqueued
        except JobIdTaken:
            raise ApiError(
                409, "job_id_conflict", "this job id is taken; use another key"
            ) from None
        except JobIdConflict:
            raise ApiError(409, "idempotency_key_reused", KEY_REUSED) from None

    async def job(self, tenant: str, job_id: str) -> ChatJob:
        """The tenant's job ``job_id``; :class:`JobNotFound` if it is not theirs or not there."""
        if not JOB_ID_PATTERN.match(job_id) or await self.owner(job_id) != tenant:
            raise JobNotFound(job_id)
        job = self._sq.job(job_id)
        if not await job.exists():
            raise JobNotFound(job_id)
        return job

    async def owner(self, job_id: str) -> str | None:
        """The tenant that created ``job_id`` through the gateway, if any."""
        owner = await self._redis.get(self._keys.owner(job_id))
        return None if owner is None else owner.decode()


def job_id_for(tenant: str, idempotency_key: str | None) -> str:
    """A fresh random id, or the id that ``idempotency_key`` always maps to for ``tenant``."""
    if idempotency_key is None:
        return uuid.uuid4().hex
    if not 0 < len(idempotency_key) <= MAX_IDEMPOTENCY_KEY or not idempotency_key.isprintable():
        raise ApiError(
            400,
            "invalid_idempotency_key",
            f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY} printable characters",
        )
    digest = hashlib.sha256(f"{tenant}\0{idempotency_key}".encode()).hexdigest()
    return f"idem-{digest[:40]}"
