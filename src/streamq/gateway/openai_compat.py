"""``POST /v1/chat/completions``: OpenAI's own API in front of the queue.

Any OpenAI client pointed at the gateway gets queued generation: ``stream=true`` answers with
``chat.completion.chunk`` frames as the job's events arrive, ending with ``data: [DONE]``;
``stream=false`` waits for the job and returns a ``chat.completion``. A job that fails before
any text gets OpenAI's HTTP status and JSON error either way (``failures``). The job id is in
the ``X-Streamq-Job-Id`` header: a client that lost the answer follows
``/v1/jobs/{id}/events`` or posts again with the same ``Idempotency-Key`` to read the same job
again. Fields that OpenAI does not define travel to the upstream in the job's ``extra_body``.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from streamq.core.request import PARAMS, RESERVED
from streamq.gateway import door
from streamq.gateway.body import read_json_object
from streamq.gateway.chat_body import OPTION_NAMES
from streamq.gateway.chunks import ChunkWriter
from streamq.gateway.errors import ApiError
from streamq.gateway.held_stream import HeldStream
from streamq.gateway.jobs import enqueue
from streamq.gateway.state import Gateway

JOB_ID_HEADER = "X-Streamq-Job-Id"


def routes(gateway: Gateway) -> list[Route]:
    """The OpenAI-compatible routes."""

    async def chat_completions(request: Request) -> Response:
        gateway.tenant(request)
        body = await read_json_object(request, gateway.settings.max_request_bytes)
        stream, include_usage = _stream_flags(body)
        _move_provider_fields(body)
        if not stream:  # the whole answer at once: with the usage servers report only so
            body.setdefault("buffered", True)
        job = await enqueue(gateway, request, body)
        headers = {JOB_ID_HEADER: job.id}
        requested = body.get("model")
        model = requested if isinstance(requested, str) else gateway.settings.openai_model
        if not stream:
            return await door.completed(gateway, job, model, headers)
        config = gateway.config
        writer = ChunkWriter(job.id, include_usage, model)
        return await door.streamed(
            gateway, job, writer, config.header_hold, config.keepalive, headers
        )

    # Streamed or not, the response lasts as long as the job: either holds a stream.
    held = HeldStream(gateway, chat_completions)
    return [Route("/v1/chat/completions", held, methods=["POST"])]


def _stream_flags(body: dict[str, Any]) -> tuple[bool, bool]:
    stream = body.pop("stream", False)
    options = body.pop("stream_options", None)
    if not isinstance(stream, bool):
        raise ApiError(400, "invalid_request", "stream must be true or false")
    if options is not None and not isinstance(options, dict):
        raise ApiError(400, "invalid_request", "stream_options must be an object")
    include_usage = (options or {}).get("include_usage", False)
    if not isinstance(include_usage, bool):
        raise ApiError(400, "invalid_request", "stream_options.include_usage must be a boolean")
    return stream, include_usage


def _move_provider_fields(body: dict[str, Any]) -> None:
    # The SDK's extra_body puts provider fields (top_k, a vLLM option...) at the top level;
    # they travel in the job's extra_body, so the worker's SDK sends them upstream the same way.
    known = PARAMS | RESERVED | set(OPTION_NAMES) | {"job_id"}
    extra = {name: body.pop(name) for name in list(body) if name not in known}
    nested = body.get("extra_body")
    if extra and (nested is None or isinstance(nested, dict)):  # else build_request says why
        body["extra_body"] = {**extra, **(nested or {})}
