"""The OpenAI JSON of a Responses API reply: a ``response`` object or its typed SSE events.

A stream opens with ``response.created`` and ``response.in_progress``; each output item then
goes ``output_item.added``, its part's ``added``, one delta event per token, the part's
``done`` events and ``output_item.done``; ``response.completed`` (or ``response.incomplete``)
ends it, with no ``[DONE]`` line. Every event carries the next ``sequence_number`` from 0.

Faults act as in chat, ``after`` counting delta events: ``http_*`` answer with OpenAI's error
JSON before any event (429 with ``retry-after``); ``disconnect`` cuts the connection, ``stall``
goes silent, ``silent_end`` ends the body with no terminal event, ``bad_json`` and
``bad_utf8`` send an undecodable event. ``error_event`` ends the stream with
``response.failed`` (status ``failed``, error code ``server_error``), as OpenAI ends a stream
whose generation failed on its side; the ``error`` event is for requests refused once the
stream is open, which the simulator has no cause for. ``no_done`` changes nothing here.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, Final

from streamq.dev.simulator._http import json_bytes, sse_event
from streamq.dev.simulator.errors import SERVER_ERROR
from streamq.dev.simulator.responses_plan import OutputItem, ResponsePlan

# Request fields a response echoes, with the value OpenAI shows when the request leaves one out.
_ECHOED: Final[dict[str, Any]] = {
    "instructions": None,
    "max_output_tokens": None,
    "metadata": {},
    "parallel_tool_calls": True,
    "previous_response_id": None,
    "reasoning": {"effort": None, "summary": None},
    "store": True,
    "temperature": 1.0,
    "text": {"format": {"type": "text"}},
    "tool_choice": "auto",
    "tools": [],
    "top_p": 1.0,
    "truncation": "disabled",
    "user": None,
}


def response_object(
    plan: ResponsePlan, status: str, output: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The ``response`` object in ``status``; its ``output`` is every item done unless given."""
    finished = status in ("completed", "incomplete")
    if output is None:
        output = [item_object(item, done=True) for item in plan.items] if finished else []
    echoed = {name: plan.body.get(name, default) for name, default in _ECHOED.items()}
    return {
        "id": plan.id,
        "object": "response",
        "created_at": plan.created_at,
        "status": status,
        "background": False,
        "completed_at": int(time.time()) if status == "completed" else None,
        "error": {"code": "server_error", "message": SERVER_ERROR} if status == "failed" else None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "model": plan.body["model"],
        "output": output,
        "service_tier": "default",
        "usage": plan.usage() if finished else None,
        **echoed,
    }


def item_object(item: OutputItem, *, done: bool, cut: bool = False) -> dict[str, Any]:
    """An output item as ``output_item.added`` (empty) or ``.done`` (whole) shows it."""
    status = ("incomplete" if cut else "completed") if done else "in_progress"
    if item.call is not None:
        arguments = item.call.arguments if done else ""
        return {
            "id": item.id,
            "type": "function_call",
            "status": status,
            "arguments": arguments,
            "call_id": item.call.call_id,
            "name": item.call.name,
        }
    if item.type == "reasoning":
        return {"id": item.id, "type": "reasoning", "summary": [_part(item)] if done else []}
    content = [_part(item)] if done else []
    return {
        "id": item.id,
        "type": "message",
        "status": status,
        "content": content,
        "role": "assistant",
    }


def _part(item: OutputItem, text: str | None = None) -> dict[str, Any]:
    text = item.text if text is None else text
    if item.part == "output_text":
        return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}
    if item.part == "refusal":
        return {"type": "refusal", "refusal": text}
    return {"type": "summary_text", "text": text}


class ResponseEncoder:
    """Numbers and encodes the events of one streamed response."""

    def __init__(self, plan: ResponsePlan) -> None:
        self._plan = plan
        self._sequence = 0

    def event(self, type_: str, **fields: Any) -> bytes:
        """The next event, framed with its ``event:`` line."""
        payload = {"type": type_, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return sse_event(type_, json_bytes(payload))

    def bad_utf8(self) -> bytes:
        """A text delta event whose delta ends inside a UTF-8 sequence."""
        head = b'{"type":"response.output_text.delta","sequence_number":%d,' % self._sequence
        self._sequence += 1
        data = head + b'"item_id":"msg_0","output_index":0,"content_index":0,"delta":"\xe6\x97"}'
        return sse_event("response.output_text.delta", data)

    def failure(self) -> bytes:
        """``response.failed``: how OpenAI ends a stream whose generation failed on its side."""
        return self.event("response.failed", response=response_object(self._plan, "failed", []))

    def events(self) -> Iterator[tuple[bytes, bool, bool]]:
        """Events in order, as ``(event, carries_a_token, starts_a_token_step)``."""
        plan = self._plan
        for opening in ("response.created", "response.in_progress"):
            yield self.event(opening, response=response_object(plan, "in_progress")), False, False
        first = True
        for index, item in enumerate(plan.items):
            added = item_object(item, done=False)
            yield self.event("response.output_item.added", output_index=index, item=added), *_NO
            at = {"item_id": item.id, "output_index": index}
            opening_events, delta_type, extra, closing_events = _item_events(item, at)
            for type_, fields in opening_events:
                yield self.event(type_, **fields), *_NO
            for piece in item.pieces:
                yield self.event(delta_type, **at, delta=piece, **extra), True, not first
                first = False
            for type_, fields in closing_events:
                yield self.event(type_, **fields), *_NO
            cut = plan.incomplete and index == len(plan.items) - 1
            done = item_object(item, done=True, cut=cut)
            yield self.event("response.output_item.done", output_index=index, item=done), *_NO
        status = "incomplete" if plan.incomplete else "completed"
        yield self.event(f"response.{status}", response=response_object(plan, status)), *_NO


_NO: Final = (False, False)  # an event that carries no token
Events = list[tuple[str, dict[str, Any]]]


def _item_events(
    item: OutputItem, at: dict[str, Any]
) -> tuple[Events, str, dict[str, Any], Events]:
    """An item's events around its deltas: ``(opening, delta type, delta fields, closing)``;
    ``at`` (its ``item_id`` and ``output_index``) is updated with the part's index."""
    text = item.text
    if item.call is not None:
        done = [("response.function_call_arguments.done", {**at, "arguments": text})]
        return [], "response.function_call_arguments.delta", {}, done
    if item.type == "reasoning":
        at["summary_index"] = 0
        opening = [("response.reasoning_summary_part.added", {**at, "part": _part(item, "")})]
        closing = [
            ("response.reasoning_summary_text.done", {**at, "text": text}),
            ("response.reasoning_summary_part.done", {**at, "part": _part(item)}),
        ]
        return opening, "response.reasoning_summary_text.delta", {}, closing
    at["content_index"] = 0
    opening = [("response.content_part.added", {**at, "part": _part(item, "")})]
    part_done = ("response.content_part.done", {**at, "part": _part(item)})
    if item.part == "refusal":
        closing = [("response.refusal.done", {**at, "refusal": text}), part_done]
        return opening, "response.refusal.delta", {}, closing
    closing = [("response.output_text.done", {**at, "text": text, "logprobs": []}), part_done]
    return opening, "response.output_text.delta", {"logprobs": []}, closing
