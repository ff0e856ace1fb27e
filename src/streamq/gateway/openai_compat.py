"""``POST /v1/chat/completions``: OpenAI's own API in front of the queue.

Any OpenAI client pointed at the gateway gets queued generation: ``stream=true`` answers with
``chat.completion.chunk`` frames as the job's events arrive, ending with ``data: [DONE]``;
``stream=false`` waits for the job and returns a ``chat.completion``. The job id is in the
``X-Streamq-Job-Id`` header: a client that lost the answer follows ``/v1/jobs/{id}/events`` or
posts again with the same ``Idempotency-Key`` to read the same job from its start. Fields that
OpenAI does not define travel to the upstream in the job's ``extra_body``.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from streamq import metrics
from streamq.consumer import ChatJob, ChatResult
from streamq.events import (
    Cancelled,
    Delta,
    Done,
    Error,
    Event,
    Reasoning,
    Refusal,
    Reset,
    Start,
    ToolCallDelta,
)
from streamq.exceptions import JobCancelled, JobFailed, JobNotFound, ReadTimeout
from streamq.gateway.body import read_json_object
from streamq.gateway.chat_body import OPTION_NAMES
from streamq.gateway.errors import ApiError, error_body
from streamq.gateway.jobs import enqueue
from streamq.gateway.limits import HeldStream
from streamq.gateway.sse import HEADERS, KEEPALIVE, paced
from streamq.gateway.state import Gateway
from streamq.request import PARAMS, RESERVED

JOB_ID_HEADER = "X-Streamq-Job-Id"
# HTTP status of a non-streamed completion whose job failed, by the `error` event's code.
FAILED_STATUS = {
    "invalid_request": 400,
    "upstream_bad_request": 400,
    "upstream_not_found": 404,
    "upstream_rate_limited": 429,
    "timeout": 504,
    "upstream_timeout": 504,
}


def routes(gateway: Gateway) -> list[Route]:
    """The OpenAI-compatible routes."""

    async def chat_completions(request: Request) -> Response:
        gateway.tenant(request)
        body = await read_json_object(request, gateway.settings.max_request_bytes)
        stream, include_usage = _stream_flags(body)
        _move_provider_fields(body)
        job = await enqueue(gateway, request, body)
        headers = {JOB_ID_HEADER: job.id}
        if stream:
            config = gateway.config
            chunks = ChunkWriter(job, include_usage).body(config.keepalive)
            return StreamingResponse(
                chunks, media_type="text/event-stream", headers={**HEADERS, **headers}
            )
        try:
            result = await job.result()
        except JobFailed as exc:
            status = FAILED_STATUS.get(exc.error.code, 502)
            raise ApiError(status, exc.error.code, exc.error.message, headers) from None
        except JobCancelled:
            raise ApiError(409, "cancelled", "the job was cancelled", headers) from None
        except ReadTimeout as exc:
            raise ApiError(504, "read_timeout", str(exc), headers) from None
        return JSONResponse(completion(result), headers=headers)

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


def completion(result: ChatResult) -> dict[str, Any]:
    """A finished job as a ``chat.completion`` object."""
    choices = []
    for choice in result.choices:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": choice.text if choice.text or not choice.tool_calls else None,
            "refusal": choice.refusal,
        }
        if choice.reasoning:
            message["reasoning_content"] = choice.reasoning
        if choice.tool_calls:
            message["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call in choice.tool_calls
            ]
        choices.append(
            {
                "index": choice.index,
                "message": message,
                "finish_reason": choice.finish_reason,
                "logprobs": None,
            }
        )
    return {
        "id": f"chatcmpl-{result.job_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": result.model,
        "choices": choices,
        "usage": result.usage,
    }


class ChunkWriter:
    """A job's events as ``chat.completion.chunk`` SSE frames."""

    def __init__(self, job: ChatJob, include_usage: bool) -> None:
        self.job = job
        self.include_usage = include_usage
        self.id = f"chatcmpl-{job.id}"
        self.created = int(time.time())
        self.model: str | None = None
        self.opened: set[int] = set()  # choices whose first chunk (with the role) was sent

    async def body(self, keepalive: float) -> AsyncIterator[bytes]:
        """The response body, up to ``data: [DONE]`` (or an error frame)."""
        events = self.job.events()
        try:
            async for event in paced(aiter(events), keepalive, None):
                if event is None:
                    yield KEEPALIVE
                    continue
                metrics.delivered(event.cursor)
                frames = self.frames(event)
                for item in frames:
                    yield item
                if event.type in ("done", "error", "cancelled"):
                    return
        except JobNotFound:
            yield self.error("expired", "the job's stream is gone: expired, or Redis lost it")
        except ReadTimeout as exc:
            yield self.error("read_timeout", str(exc))
        finally:
            await events.aclose()

    def frames(self, event: Event) -> list[bytes]:
        """The frames for one event (none for most bookkeeping events)."""
        match event:
            case Start():
                self.model = event.model
                return []
            case Reset() if self.opened:
                return [
                    self.error(
                        "job_restarted",
                        "the job restarted after part of its answer was sent; read it again "
                        f"from /v1/jobs/{self.job.id}/events, or retry",
                    )
                ]
            case Delta():
                return [self.delta(event.choice, {"content": event.text})]
            case Reasoning():
                return [self.delta(event.choice, {"reasoning_content": event.text})]
            case Refusal():
                return [self.delta(event.choice, {"refusal": event.text})]
            case ToolCallDelta():
                call: dict[str, Any] = {"index": event.index}
                if event.id is not None:
                    call |= {"id": event.id, "type": "function"}
                function = {"arguments": event.arguments}
                if event.name is not None:
                    function["name"] = event.name
                return [self.delta(event.choice, {"tool_calls": [call | {"function": function}]})]
            case Done():
                return self.finish(event)
            case Error():
                return [self.error(event.code, event.message)]
            case Cancelled():
                return [self.error("cancelled", "the job was cancelled")]
        return []

    def delta(self, index: int, delta: dict[str, Any]) -> bytes:
        if index not in self.opened:
            self.opened.add(index)
            delta = {"role": "assistant", **delta}
        return self.chunk([{"index": index, "delta": delta, "finish_reason": None}])

    def finish(self, done: Done) -> list[bytes]:
        self.model = done.model or self.model
        reasons = done.finish_reasons or [done.finish_reason]
        finals = [
            {"index": i, "delta": {} if i in self.opened else {"role": "assistant"}}
            | {"finish_reason": reason}
            for i, reason in enumerate(reasons)
        ]
        frames = [self.chunk(finals)]
        if self.include_usage:
            frames.append(self.chunk([], usage=done.usage))
        frames.append(b"data: [DONE]\n\n")
        return frames

    def chunk(self, choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> bytes:
        body: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }
        if self.include_usage:
            body["usage"] = usage
        return _data(body)

    def error(self, code: str, message: str) -> bytes:
        return _data(error_body(502, code, message))


def _data(body: dict[str, Any]) -> bytes:
    return (
        b"data: " + json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"
    )
