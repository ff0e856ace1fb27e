"""``/v1/responses``: OpenAI's Responses API in front of the queue, durable and resumable.

A response is a job (``resp_`` + its job id) and a stored record (:mod:`streamq.responses.store`);
everything a read needs is in Redis, so any replica answers any request, and the Response and its
events are translated again from the job's stream each time. Every read checks the tenant: an id
is not a capability.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from streamq.core.exceptions import JobNotFound
from streamq.gateway import responses_stream
from streamq.gateway.body import read_json_object
from streamq.gateway.errors import ApiError
from streamq.gateway.held_stream import HeldStream
from streamq.gateway.openai_compat import JOB_ID_HEADER
from streamq.gateway.responses_body import ResponsesBody
from streamq.gateway.state import Gateway
from streamq.gateway.tenancy import job_id_for
from streamq.job import ChatJob
from streamq.responses.request import build_responses_request, input_items
from streamq.responses.store import (
    ItemNotFound,
    ResponseInProgress,
    ResponseNotFound,
    StoredResponse,
    items_page,
    listed_items,
    new_record,
    replayed,
)

logger = logging.getLogger("streamq.gateway")

# How long a cancel waits for the worker to stop the job before answering with what it has.
CANCEL_WAIT = 10.0
MAX_ITEMS_LIMIT = 100


def routes(gateway: Gateway) -> list[Route]:
    """The ``/v1/responses`` routes."""
    endpoints = ResponseEndpoints(gateway)
    return [
        Route("/v1/responses", HeldStream(gateway, endpoints.create), methods=["POST"]),
        Route(
            "/v1/responses/{response_id}", HeldStream(gateway, endpoints.retrieve), methods=["GET"]
        ),
        Route("/v1/responses/{response_id}", endpoints.delete, methods=["DELETE"]),
        Route("/v1/responses/{response_id}/cancel", endpoints.cancel, methods=["POST"]),
        Route("/v1/responses/{response_id}/input_items", endpoints.input_items, methods=["GET"]),
    ]


class ResponseEndpoints:
    """Handlers of the ``/v1/responses`` routes."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def create(self, request: Request) -> Response:
        """``POST /v1/responses``: enqueue, then stream, wait, or (background) answer at once."""
        tenant = self.gateway.tenant(request)
        settings = self.gateway.settings
        body = ResponsesBody.parse(await read_json_object(request, settings.max_request_bytes))
        store = await self.gateway.responses()
        items = input_items(await self._resolved(tenant, body.input))
        context: list[dict[str, Any]] = []
        if body.previous_response_id is not None:
            context = await self._conversation(tenant, body.previous_response_id)
        job_request = build_responses_request(
            context + items,
            body.model,
            body.instructions,
            body.params,
            body.options,
            max_bytes=settings.max_request_bytes,
        )
        job_id = job_id_for(tenant, request.headers.get("idempotency-key"))
        record = new_record(
            tenant, job_id, job_request, items, context,
            model=settings.openai_model, previous_response_id=body.previous_response_id,
            store=body.store, background=body.background,
        )  # fmt: skip
        created = False
        if body.store:
            stored = await store.create(record)
            if stored.tenant != tenant:
                raise ApiError(409, "job_id_conflict", "this job id is taken; use another key")
            created, record = stored is record, stored
        tenants = await self.gateway.tenants()
        try:
            job = await tenants.enqueue_request(tenant, job_id, job_request)
        except BaseException:
            if created:  # the record only: the owner is the enqueue's (it claims none it fails)
                await store.delete(record, job_ended=False, owner=False)
            raise
        if created or not body.store:
            found = " (or found it)" if request.headers.get("idempotency-key") else ""
            logger.info("tenant %s created response %s%s", tenant, record.id, found)
        headers = {JOB_ID_HEADER: job_id}
        if body.stream:
            config = self.gateway.config
            return await responses_stream.streamed(
                self.gateway,
                job,
                record,
                hold=config.header_hold,
                keepalive=config.keepalive,
                headers=headers,
            )
        if body.background:  # as created, or as it is now for a repeated Idempotency-Key
            snapshot = replayed(record, []).snapshot() if created else await self._snapshot(record)
            return JSONResponse(snapshot, headers=headers)
        return JSONResponse(
            await responses_stream.finished(self.gateway, job, record, headers), headers=headers
        )

    async def retrieve(self, request: Request) -> Response:
        """``GET /v1/responses/{id}``: the Response now; with ``stream=true``, its events (after
        ``starting_after``) until it ends."""
        record, job = await self._response(request)
        query = request.query_params
        stream = query.get("stream", "false").lower()
        if stream not in ("true", "false"):
            raise ApiError(400, "invalid_request", "stream must be true or false")
        if stream == "false":
            return JSONResponse(await self._snapshot(record))
        after = query.get("starting_after", "-1")
        if not after.lstrip("-").isdigit() or int(after) < -1:
            raise ApiError(400, "invalid_request", "starting_after must be a sequence number")
        config = self.gateway.config
        return await responses_stream.streamed(
            self.gateway,
            job,
            record,
            hold=None,
            keepalive=config.keepalive,
            headers={JOB_ID_HEADER: job.id},
            starting_after=int(after),
        )

    async def cancel(self, request: Request) -> Response:
        """``POST /v1/responses/{id}/cancel``: stop the job (queued or running), wait a little
        for its end, and answer with the Response; an ended one is returned unchanged."""
        record, job = await self._response(request)
        outcome = await job.cancel()
        logger.info("response %s cancel: %s", record.id, outcome)
        if outcome == "cancelling":
            await responses_stream.ended(self.gateway, job, CANCEL_WAIT)
        return JSONResponse(await self._snapshot(record))

    async def delete(self, request: Request) -> Response:
        """``DELETE /v1/responses/{id}``: cancel it if it runs, and forget it."""
        record, job = await self._response(request)
        outcome = await job.cancel()
        store = await self.gateway.responses()
        await store.delete(record, job_ended=outcome != "cancelling")
        logger.info("response %s deleted (%s)", record.id, outcome)
        return JSONResponse({"id": record.id, "object": "response.deleted", "deleted": True})

    async def input_items(self, request: Request) -> Response:
        """``GET /v1/responses/{id}/input_items``: this turn's input items, a page at a time."""
        record, _ = await self._response(request)
        query = request.query_params
        limit = query.get("limit", "20")
        if not limit.isdigit() or not 1 <= int(limit) <= MAX_ITEMS_LIMIT:
            raise ApiError(400, "invalid_request", f"limit must be 1 to {MAX_ITEMS_LIMIT}")
        order = query.get("order", "desc")
        if order not in ("asc", "desc"):
            raise ApiError(400, "invalid_request", "order must be asc or desc")
        page = items_page(
            listed_items(record),
            limit=int(limit),
            order="asc" if order == "asc" else "desc",
            after=query.get("after"),
        )
        return JSONResponse(page)

    async def _response(self, request: Request) -> tuple[StoredResponse, ChatJob]:
        tenant = self.gateway.tenant(request)
        wanted = request.path_params["response_id"]
        store = await self.gateway.responses()
        tenants = await self.gateway.tenants()
        try:
            record = await store.get(tenant, wanted)
            return record, await tenants.job(tenant, record.job_id)
        except (ResponseNotFound, JobNotFound):
            raise ApiError(404, "response_not_found", f"no response with id {wanted!r}") from None

    async def _snapshot(self, record: StoredResponse) -> dict[str, Any]:
        store = await self.gateway.responses()
        return replayed(record, await store.events(record.job_id)).snapshot()

    async def _conversation(self, tenant: str, previous_id: str) -> list[dict[str, Any]]:
        store = await self.gateway.responses()
        try:
            return await store.conversation(tenant, previous_id)
        except ResponseNotFound:
            # OpenAI's answer: 400, not 404 (the request is what is wrong).
            raise ApiError(
                400,
                "previous_response_not_found",
                f"previous response with id {previous_id!r} not found",
            ) from None
        except ResponseInProgress as exc:
            raise ApiError(400, "previous_response_in_progress", str(exc)) from None

    async def _resolved(self, tenant: str, value: object) -> object:
        """``input`` with its ``item_reference`` items (the Vercel AI SDK sends one for each
        earlier output item) replaced by the items they name in ``tenant``'s responses."""
        if not isinstance(value, list):
            return value
        store = await self.gateway.responses()
        try:
            return await store.resolve_references(tenant, value)
        except ItemNotFound as exc:
            raise ApiError(400, "item_not_found", str(exc)) from None
        except ResponseInProgress as exc:
            raise ApiError(400, "response_in_progress", str(exc)) from None
