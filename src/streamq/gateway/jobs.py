"""``/v1/jobs``: enqueue a job, follow its events over SSE, see its status, cancel it."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from streamq.core.events import Event, event_to_dict
from streamq.core.exceptions import JobCancelled, JobFailed
from streamq.gateway.body import read_json_object
from streamq.gateway.chat_body import ChatBody
from streamq.gateway.held_stream import HeldStream
from streamq.gateway.sse import HEADERS, EventStreamResponse, event_stream_body, resume_point
from streamq.gateway.state import Gateway
from streamq.job import ChatJob, ChatResult

logger = logging.getLogger("streamq.gateway")


def routes(gateway: Gateway) -> list[Route]:
    """The ``/v1/jobs`` routes."""
    endpoints = JobEndpoints(gateway)
    return [
        Route("/v1/jobs", endpoints.create, methods=["POST"]),
        Route("/v1/jobs/{job_id}", endpoints.status, methods=["GET"]),
        Route("/v1/jobs/{job_id}", endpoints.cancel, methods=["DELETE"]),
        Route("/v1/jobs/{job_id}/events", HeldStream(gateway, endpoints.events), methods=["GET"]),
    ]


async def enqueue(gateway: Gateway, request: Request, body: dict[str, Any]) -> ChatJob:
    """Enqueue the chat request ``body`` for the caller; shared with the OpenAI front door."""
    tenant = gateway.tenant(request)
    chat = ChatBody.parse(body)
    tenants = await gateway.tenants()
    key = request.headers.get("idempotency-key")
    job = await tenants.enqueue(tenant, key, chat.messages, chat.model, chat.options, chat.params)
    logger.info("tenant %s enqueued job %s%s", tenant, job.id, " (or found it)" if key else "")
    return job


class JobEndpoints:
    """Handlers of the ``/v1/jobs`` routes."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def create(self, request: Request) -> Response:
        """``POST /v1/jobs``: 202 with the job id and where to follow it."""
        self.gateway.tenant(request)  # 401 before reading a body
        body = await read_json_object(request, self.gateway.settings.max_request_bytes)
        job = await enqueue(self.gateway, request, body)
        links = job_links(request, job.id)
        return JSONResponse(
            {"id": job.id, **links}, status_code=202, headers={"Location": links["url"]}
        )

    async def status(self, request: Request) -> Response:
        """``GET /v1/jobs/{id}``: state and attempt; the result (or error) once it ended."""
        job = await self._job(request)
        status = await job.status()
        body: dict[str, Any] = {"id": job.id, **dataclasses.asdict(status)}
        if status.state not in ("queued", "running"):
            try:
                body["result"] = result_dict(await job.result())
            except JobFailed as exc:
                body["error"] = terminal_dict(exc.error)
            except JobCancelled as exc:
                body["cancelled"] = terminal_dict(exc.event)
        return JSONResponse(body)

    async def cancel(self, request: Request) -> Response:
        """``DELETE /v1/jobs/{id}``: 202 while a worker stops it, else 200 with the outcome."""
        job = await self._job(request)
        outcome = await job.cancel()
        logger.info("job %s cancel: %s", job.id, outcome)
        status = 202 if outcome == "cancelling" else 200
        return JSONResponse({"id": job.id, "outcome": outcome}, status_code=status)

    async def events(self, request: Request) -> Response:
        """``GET /v1/jobs/{id}/events``: the job's events as SSE, resumable by cursor."""
        job = await self._job(request)
        cursor = request.headers.get("last-event-id") or request.query_params.get("after")
        after, ended = await resume_point(job, cursor)
        if ended:
            return Response(status_code=204)  # tells an EventSource to stop reconnecting
        config = self.gateway.config
        feed = await self.gateway.feed(job, after)
        body = event_stream_body(feed, config.keepalive, config.max_stream_seconds)
        return EventStreamResponse(body, headers=HEADERS, feed=feed)

    async def _job(self, request: Request) -> ChatJob:
        tenant = self.gateway.tenant(request)
        tenants = await self.gateway.tenants()
        return await tenants.job(tenant, request.path_params["job_id"])


def job_links(request: Request, job_id: str) -> dict[str, str]:
    """Where to see and follow ``job_id``, as paths under the gateway's root."""
    root = request.scope.get("root_path", "")
    return {"url": f"{root}/v1/jobs/{job_id}", "events_url": f"{root}/v1/jobs/{job_id}/events"}


def terminal_dict(event: object) -> dict[str, Any]:
    """An ``error`` or ``cancelled`` event (as JobFailed/JobCancelled carry) without its stream
    bookkeeping."""
    assert isinstance(event, Event)
    body = event_to_dict(event)
    return {k: v for k, v in body.items() if k not in ("type", "attempt", "seq")}


def result_dict(result: ChatResult) -> dict[str, Any]:
    """A finished job's result as JSON."""
    body = dataclasses.asdict(result)
    body["text"] = result.text
    body["finish_reason"] = result.finish_reason
    return body
