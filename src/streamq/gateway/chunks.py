"""One streamed answer as ``chat.completion.chunk`` frames, shaped as OpenAI sends them.

Every chunk of an answer has the same ``id``, ``created``, ``model`` and
``system_fingerprint``: the model is the upstream's own name for it (from the attempt's
``meta`` event), else the requested one, fixed when the first chunk goes out. Each choice opens
with a chunk holding only its role. The answer never mixes attempts: a restart before any text
went out is followed silently; after text, the answer ends with one error frame, as OpenAI's
own streams end on a failure (no ``[DONE]``).
"""

from __future__ import annotations

import json
import time
from typing import Any

from streamq.core.events import (
    Cancelled,
    Delta,
    Done,
    Error,
    Event,
    Meta,
    Reasoning,
    Refusal,
    Reset,
    Start,
    ToolCallDelta,
)
from streamq.gateway.errors import error_body
from streamq.gateway.failures import CANCELLED_MESSAGE, status_of

DONE = b"data: [DONE]\n\n"
TEXT_FIELDS = {Delta: "content", Reasoning: "reasoning_content", Refusal: "refusal"}


class ChunkWriter:
    """The frames of one streamed answer to a job, event by event.

    Events of attempts before ``floor`` (known to be superseded when the door started reading)
    are skipped. ``ended`` turns true with the frame that ends the response.
    """

    def __init__(self, job_id: str, include_usage: bool, model: str, floor: int = 1) -> None:
        self.job_id = job_id
        self.id = f"chatcmpl-{job_id}"
        self.created = int(time.time())
        self.include_usage = include_usage
        self.floor = floor
        self.ended = False
        self.sent_text = False  # a content, reasoning, refusal or tool call chunk went out
        self._requested = model
        self._meta: Meta | None = None  # the current attempt's
        self._head: dict[str, Any] | None = None  # what every chunk shares, once the first went
        self._opened: set[int] = set()  # choices whose role chunk went out

    def frames(self, event: Event) -> list[bytes]:
        """The frames for ``event`` (none for bookkeeping events)."""
        if event.attempt < self.floor and event.type not in ("done", "error", "cancelled"):
            return []
        match event:
            case Start():
                self._requested = event.model
            case Meta():
                self._meta = event
            case Reset() if self.sent_text:
                message = (
                    "the job restarted after part of its answer was sent; read the new attempt "
                    f"from /v1/jobs/{self.job_id}/events, or retry"
                )
                return [self.error("job_restarted", message)]
            case Reset():
                self._meta = None
            case Delta() | Reasoning() | Refusal():
                delta = {TEXT_FIELDS[type(event)]: event.text}
                return self._text(event.choice, delta, _logprobs(event))
            case ToolCallDelta():
                call: dict[str, Any] = {"index": event.index}
                if event.id is not None:
                    call |= {"id": event.id, "type": "function"}
                function = {"arguments": event.arguments}
                if event.name is not None:
                    function["name"] = event.name
                tool_calls = [call | {"function": function}]
                return self._text(event.choice, {"tool_calls": tool_calls}, None, role=None)
            case Done():
                return self._finish(event)
            case Error():
                return [self.error(event.code, event.message)]
            case Cancelled():
                return [self.error("cancelled", CANCELLED_MESSAGE)]
        return []

    def error(self, code: str, message: str) -> bytes:
        """The frame that ends the answer with an error, in OpenAI's shape."""
        self.ended = True
        return _data(error_body(status_of(code), code, message))

    def _text(
        self,
        index: int,
        delta: dict[str, Any],
        logprobs: dict[str, Any] | None,
        role: str | None = "",
    ) -> list[bytes]:
        frames = self._open(index, role)
        self.sent_text = True
        frames.append(self._chunk([_choice(index, delta, logprobs)]))
        return frames

    def _open(self, index: int, content: str | None = "", done: Done | None = None) -> list[bytes]:
        if index in self._opened:
            return []
        self._opened.add(index)
        if self._head is None:
            meta = self._meta or Meta()
            model, fingerprint = meta.model, meta.system_fingerprint
            if done is not None:  # an answer without text: its first chunk comes at the end
                model, fingerprint = model or done.model, fingerprint or done.system_fingerprint
            self._head = {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": model or self._requested,
                "system_fingerprint": fingerprint,
            }
        return [self._chunk([_choice(index, {"role": "assistant", "content": content}, None)])]

    def _finish(self, done: Done) -> list[bytes]:
        reasons = done.finish_reasons or [done.finish_reason]
        frames = []
        for index, reason in enumerate(reasons):
            frames += self._open(index, done=done)
            frames.append(self._chunk([_choice(index, {}, None, reason)]))
        if self.include_usage:
            frames.append(self._chunk([], done.usage))
        self.ended = True
        return [*frames, DONE]

    def _chunk(self, choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> bytes:
        assert self._head is not None
        body = {**self._head, "choices": choices}
        if self.include_usage:
            body["usage"] = usage
        return _data(body)


def _choice(
    index: int,
    delta: dict[str, Any],
    logprobs: dict[str, Any] | None,
    finish_reason: str | None = None,
) -> dict[str, Any]:
    return {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}


def _logprobs(event: Delta | Reasoning | Refusal) -> dict[str, Any] | None:
    if event.logprobs is None:
        return None
    if isinstance(event, Refusal):
        return {"content": None, "refusal": event.logprobs}
    return {"content": event.logprobs, "refusal": None}


def _data(body: dict[str, Any]) -> bytes:
    return (
        b"data: " + json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"
    )
