"""``/admin``: the operators' page and the JSON it polls, for ``STREAMQ_GATEWAY_ADMIN_TOKENS``.

Everything comes from :mod:`streamq.admin`: ``/admin/api/stats`` is ``streamq stats --json``,
``/admin/api/jobs/{id}`` is ``streamq inspect --json``; ``/admin/api/overview`` adds admission
state and the job list (:mod:`streamq.admin.dashboard`), ``/admin/api/history`` the last hour's
counts per minute. One snapshot serves every page open on this process for ``SNAPSHOT_TTL``
seconds, so ten open pages cost Redis what one does (``docs/operations.md`` lists the cost).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from streamq.admin import dashboard, queries
from streamq.core.clock import server_time_ms
from streamq.core.connections import streams_from_url
from streamq.core.exceptions import JobNotFound
from streamq.core.keys import check_job_id
from streamq.gateway.errors import ApiError
from streamq.gateway.sse import HEADERS as SSE_HEADERS
from streamq.gateway.sse import EventStreamResponse, event_stream_body, resume_point
from streamq.gateway.state import Gateway
from streamq.job import ChatJob

PAGE = Path(__file__).parent / "static" / "admin" / "index.html"
# Only the page's own files; no inline script or style, no frames, no forms elsewhere.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
API_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
SNAPSHOT_TTL = 1.0  # seconds an overview is shared between requests
ADMISSION_SCAN_EVERY = 30.0  # seconds between SCANs for admission keys
STATS_WINDOW = 5  # minutes, as `streamq stats`
MAX_WINDOW = 120  # minutes of counters Redis keeps


def routes(gateway: Gateway) -> list[BaseRoute]:
    """The ``/admin`` routes (none without admin tokens: ``/admin`` is then a 404)."""
    if not gateway.config.admin_tokens:
        return []
    admin = AdminApi(gateway)
    return [
        Route("/admin", admin.page, methods=["GET"]),
        Route("/admin/api/stats", admin.stats, methods=["GET"]),
        Route("/admin/api/overview", admin.overview, methods=["GET"]),
        Route("/admin/api/history", admin.history, methods=["GET"]),
        Route("/admin/api/jobs/{job_id}", admin.inspect, methods=["GET"]),
        Route("/admin/api/jobs/{job_id}/events", admin.events, methods=["GET"]),
        Route("/admin/api/jobs/{job_id}/cancel", admin.cancel, methods=["POST"]),
    ]


class AdminApi:
    """Handlers of the ``/admin`` routes; each checks the admin token first."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.settings = gateway.settings
        self._streams: Redis | None = None
        self._watch: dashboard.JobWatch | None = None
        self._overview: tuple[float, dict[str, Any]] | None = None
        self._pairs: tuple[float, list[tuple[str, str]]] | None = None
        self._lock = asyncio.Lock()

    async def page(self, request: Request) -> Response:
        """The page itself holds no data: it asks for the token, then polls the API."""
        return FileResponse(PAGE, headers=PAGE_HEADERS)

    async def stats(self, request: Request) -> Response:
        """``GET /admin/api/stats``: exactly ``streamq stats --json``."""
        self.gateway.auth.admin(request)
        redis = await self.gateway.redis()
        window = request.query_params.get("window", str(STATS_WINDOW))
        if not window.isdigit() or not 1 <= int(window) <= MAX_WINDOW:
            raise ApiError(400, "invalid_window", f"window: whole minutes, 1-{MAX_WINDOW}")
        snapshot = await queries.fleet_stats(redis, self.settings, minutes=int(window))
        return JSONResponse(snapshot.to_dict(), headers=API_HEADERS)

    async def overview(self, request: Request) -> Response:
        """``GET /admin/api/overview``: stats, admission per model, running and recent jobs."""
        self.gateway.auth.admin(request)
        async with self._lock:
            cached = self._overview
            if cached is None or time.monotonic() - cached[0] > SNAPSHOT_TTL:
                self._overview = cached = (time.monotonic(), await self._read_overview())
        return JSONResponse(cached[1], headers=API_HEADERS)

    async def history(self, request: Request) -> Response:
        """``GET /admin/api/history``: the last hour's jobs, failures and deltas per minute."""
        self.gateway.auth.admin(request)
        redis = await self.gateway.redis()
        minutes = await dashboard.counts_by_minute(redis, self.gateway.keys)
        return JSONResponse({"minutes": [asdict(m) for m in minutes]}, headers=API_HEADERS)

    async def inspect(self, request: Request) -> Response:
        """``GET /admin/api/jobs/{id}``: exactly ``streamq inspect --json``."""
        self.gateway.auth.admin(request)
        job_id = check_job_id(request.path_params["job_id"])
        record = await queries.inspect_job(await self.gateway.redis(), self.settings, job_id)
        return JSONResponse(record.to_dict(), headers=API_HEADERS)

    async def events(self, request: Request) -> Response:
        """``GET /admin/api/jobs/{id}/events``: any job's events as SSE, as ``/v1/jobs``."""
        self.gateway.auth.admin(request)
        job = await self._job(request)
        cursor = request.headers.get("last-event-id") or request.query_params.get("after")
        after, ended = await resume_point(job, cursor)
        if ended:
            return Response(status_code=204)
        config = self.gateway.config
        body = event_stream_body(job.events(after), config.keepalive, config.max_stream_seconds)
        return EventStreamResponse(body, headers=SSE_HEADERS)

    async def cancel(self, request: Request) -> Response:
        """``POST /admin/api/jobs/{id}/cancel``: as ``DELETE /v1/jobs/{id}``, for any job."""
        self.gateway.auth.admin(request)
        job = await self._job(request)
        outcome = await job.cancel()
        status = 202 if outcome == "cancelling" else 200
        return JSONResponse({"id": job.id, "outcome": outcome}, status_code=status)

    async def _job(self, request: Request) -> ChatJob:
        job_id = check_job_id(request.path_params["job_id"])
        job = ChatJob(
            await self.gateway.redis(),
            self.gateway.keys,
            job_id,
            read_timeout=self.settings.read_timeout,
            stream_ttl=self.settings.stream_ttl,
            streams=await self._streams_client(),
            queue_name=self.settings.queue_name,
        )
        if not await job.exists():
            raise JobNotFound(job_id)
        return job

    async def _streams_client(self) -> Redis:
        if self._streams is None:
            url = self.settings.streams_url
            self._streams = await self.gateway.redis() if url is None else streams_from_url(url)
        return self._streams

    async def _read_overview(self) -> dict[str, Any]:
        redis = await self.gateway.redis()
        keys = self.gateway.keys
        stats = await queries.fleet_stats(redis, self.settings, minutes=STATS_WINDOW)
        now = time.monotonic()
        if self._pairs is None or now - self._pairs[0] > ADMISSION_SCAN_EVERY:
            self._pairs = (now, await dashboard.admission_pairs(redis, keys))
        admission = await dashboard.admission_state(redis, keys, self._pairs[1])
        if self._watch is None:
            streams = await self._streams_client()
            self._watch = dashboard.JobWatch(redis, streams, self.settings)
        jobs = await self._watch.refresh()
        return {
            "server_time": await server_time_ms(redis) / 1000,
            "stats": stats.to_dict(),
            "admission": [asdict(state) for state in admission],
            "jobs": [job.to_dict() for job in jobs],
        }
