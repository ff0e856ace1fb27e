"""A job's wire events said as OpenAI Responses API stream events and a Response object.

Pure: the gateway's ``/v1/responses`` door feeds :class:`ResponseStream` the events it reads and
sends what comes back. The same wire events always give the same Responses events, item ids and
sequence numbers, so a reader resuming with ``starting_after`` replays the job's stream through a
fresh :class:`ResponseStream` and skips what it has already seen.

Where the two APIs differ:

- The Response's ``model`` is the requested one from start to end: ``meta`` and ``done`` may name
  the upstream's own, which would change the model mid-stream and from one attempt to the next.
- Reasoning text is a reasoning item's summary (``response.reasoning_summary_*``): the Vercel AI
  SDK reads only those (not ``response.reasoning_text.*``) and the openai SDK accepts them.
- A cancelled job ends with ``response.incomplete`` whose response has status ``cancelled`` and no
  ``incomplete_details``: neither SDK knows a ``response.cancelled`` event, both take
  ``response.incomplete`` as an end that keeps the partial answer, while ``response.failed`` would
  make the AI SDK report an error for a stop the client asked for.
- Items cut short (error, cancel, finish reason ``length`` or ``content_filter``) end
  ``incomplete``; a function call cut short gets no ``.done`` events, as the AI SDK runs the tool on
  ``output_item.done`` and its arguments are truncated.
- A new attempt after output was sent fails the response (``server_error``): the client never sees
  two attempts' output mixed. Before any output, a new attempt is invisible.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from streamq.core.events import (
    Cancelled,
    Delta,
    Done,
    Error,
    Event,
    Queued,
    Reasoning,
    Refusal,
    Reset,
    Start,
    ToolCallDelta,
    is_terminal,
)

RESTARTED = (
    "the worker running this response restarted after it had begun to answer; the new "
    "attempt's answer cannot follow the output already sent: create the response again"
)
# Wire error codes with a closer ResponseError code than server_error.
ERROR_CODES = {
    "upstream_rate_limited": "rate_limit_exceeded",
    "invalid_request": "invalid_prompt",
    "upstream_bad_request": "invalid_prompt",
}
# Finish reasons that leave a response incomplete, with the reason the Responses API gives.
INCOMPLETE_REASONS = {"length": "max_output_tokens", "content_filter": "content_filter"}
# OpenAI's values for the Response fields a request left out (required ones first).
DEFAULTS: dict[str, Any] = {
    "tools": [],
    "tool_choice": "auto",
    "parallel_tool_calls": True,
    "metadata": {},
    "text": {"format": {"type": "text"}},
    "instructions": None,
    "temperature": None,
    "top_p": None,
    "max_output_tokens": None,
    "previous_response_id": None,
    "reasoning": None,
}
_OWN = frozenset(
    {"id", "object", "status", "output", "error", "incomplete_details", "usage", "completed_at"}
)
_ID_PREFIX = {"message": "msg", "reasoning": "rs", "function_call": "fc"}


@dataclass
class _Part:
    kind: str  # output_text, refusal or summary_text
    pieces: list[str] = field(default_factory=list)
    logprobs: list[dict[str, Any]] = field(default_factory=list)

    def text(self) -> str:
        return "".join(self.pieces)

    def render(self) -> dict[str, Any]:
        if self.kind == "refusal":
            return {"type": "refusal", "refusal": self.text()}
        if self.kind == "summary_text":
            return {"type": "summary_text", "text": self.text()}
        return {
            "type": "output_text",
            "text": self.text(),
            "annotations": [],
            "logprobs": list(self.logprobs),
        }


@dataclass
class _Item:
    kind: str  # message, reasoning or function_call
    index: int = -1  # output index; -1 for a function call not shown yet (no name so far)
    status: str = "in_progress"
    parts: list[_Part] = field(default_factory=list)
    call_id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)
    id: str = ""

    def render(self) -> dict[str, Any]:
        if self.kind == "message":
            content = [part.render() for part in self.parts]
            return {
                "id": self.id,
                "type": "message",
                "status": self.status,
                "role": "assistant",
                "content": content,
            }
        if self.kind == "reasoning":
            summary = [part.render() for part in self.parts]
            return {"id": self.id, "type": "reasoning", "summary": summary, "status": self.status}
        return {
            "id": self.id,
            "type": "function_call",
            "status": self.status,
            "call_id": self.call_id,
            "name": self.name,
            "arguments": "".join(self.arguments),
        }


class ResponseStream:
    """Follows one job's wire events and says them as Responses events."""

    def __init__(self, response_id: str, fields: Mapping[str, Any]) -> None:
        self.response_id = response_id
        self._job = response_id.removeprefix("resp_")
        self._fields = copy.deepcopy(dict(fields))
        self._seq = 0
        self._attempt = 0
        self._status = "queued" if fields.get("background") else "in_progress"
        self._started = False
        self._ended = False
        self._items: list[_Item] = []  # shown, in output order
        self._open: list[_Item] = []  # message or reasoning, or function calls
        self._calls: dict[int, _Item] = {}  # by wire index
        self._error: dict[str, Any] | None = None
        self._incomplete: dict[str, Any] | None = None
        self._usage: dict[str, Any] | None = None
        self._completed_at: int | None = None

    @property
    def ended(self) -> bool:
        """Whether the response reached its last event."""
        return self._ended

    def opening(self) -> list[dict[str, Any]]:
        """``response.created`` (and ``response.queued`` in the background): call once, first."""
        out = [self._lifecycle("response.created")]
        if self._fields.get("background"):
            out.append(self._lifecycle("response.queued"))
        return out

    def feed(self, event: Event) -> list[dict[str, Any]]:
        """The Responses events ``event`` adds, often none.

        A ``queued`` event adds none, whether a reader made it or a worker wrote it, and counts
        for nothing (not even its attempt): every reader numbers the same events the same way,
        however many places it was told (the gateway sends them as SSE comments)."""
        if self._ended or isinstance(event, Queued):
            return []
        out: list[dict[str, Any]] = []
        # A terminal entry is the stream's last whatever its attempt (cancel before start has 0).
        if event.attempt < self._attempt and not is_terminal(event):
            return out
        if isinstance(event, Reset) or (self._attempt and event.attempt > self._attempt):
            self._restart(out)
        self._attempt = max(self._attempt, event.attempt)
        if self._ended or getattr(event, "choice", 0) != 0:
            return out
        if isinstance(event, Start):
            if not self._started:
                self._started = True
                self._status = "in_progress"
                out.append(self._lifecycle("response.in_progress"))
        elif isinstance(event, Delta | Refusal):
            kind = "output_text" if isinstance(event, Delta) else "refusal"
            self._text(out, kind, event.text, event.logprobs)
        elif isinstance(event, Reasoning):
            self._reasoning(out, event.text)
        elif isinstance(event, ToolCallDelta):
            self._tool_call(out, event)
        elif isinstance(event, Done):
            self._done(out, event)
        elif isinstance(event, Error):
            code = ERROR_CODES.get(event.code, "server_error")
            error = {"code": code, "message": event.message, "type": event.code}
            self._fail(out, error)
        elif isinstance(event, Cancelled):
            self._close_all(out, finished=False)
            self._usage = responses_usage(event.usage)
            self._end(out, "cancelled", "response.incomplete")
        return out

    def snapshot(self) -> dict[str, Any]:
        """The Response object as of now."""
        given = {k: v for k, v in self._fields.items() if k not in _OWN}
        body: dict[str, Any] = {
            "id": self.response_id,
            "object": "response",
            "created_at": 0,
            "status": self._status,
            "model": "",
        }
        body |= copy.deepcopy(DEFAULTS) | copy.deepcopy(given)
        body |= {
            "output": [item.render() for item in self._items],
            "error": copy.deepcopy(self._error),
            "incomplete_details": copy.deepcopy(self._incomplete),
            "usage": copy.deepcopy(self._usage),
        }
        if self._completed_at is not None:
            body["completed_at"] = self._completed_at
        return body

    # Events

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        self._seq += 1
        return {"type": kind, "sequence_number": self._seq - 1, **fields}

    def _emit(self, out: list[dict[str, Any]], kind: str, **fields: Any) -> None:
        out.append(self._event(kind, **fields))

    def _lifecycle(self, kind: str) -> dict[str, Any]:
        return self._event(kind, response=self.snapshot())

    def _end(self, out: list[dict[str, Any]], status: str, kind: str) -> None:
        self._status = status
        self._ended = True
        out.append(self._lifecycle(kind))

    def _restart(self, out: list[dict[str, Any]]) -> None:
        if self._items:
            self._fail(out, {"code": "server_error", "message": RESTARTED})
        else:  # nothing shown: forget the unnamed calls the earlier attempt began
            self._open.clear()
            self._calls.clear()

    def _fail(self, out: list[dict[str, Any]], error: dict[str, Any]) -> None:
        self._close_all(out, finished=False)
        self._error = error
        self._end(out, "failed", "response.failed")

    def _done(self, out: list[dict[str, Any]], event: Done) -> None:
        reason = INCOMPLETE_REASONS.get(event.finish_reason or "")
        self._close_all(out, finished=reason is None)
        self._usage = responses_usage(event.usage)
        if reason is not None:
            self._incomplete = {"reason": reason}
            self._end(out, "incomplete", "response.incomplete")
            return
        self._completed_at = _cursor_seconds(event.cursor)
        self._end(out, "completed", "response.completed")

    # Items

    def _item(self, out: list[dict[str, Any]], kind: str) -> _Item:
        """The open item of ``kind``, after closing the open items of other kinds."""
        if self._open and self._open[0].kind != kind:
            self._close_all(out, finished=True)
        if self._open and kind != "function_call":
            return self._open[0]
        item = _Item(kind)
        self._open.append(item)
        if kind != "function_call":
            self._show(out, item)
        return item

    def _show(self, out: list[dict[str, Any]], item: _Item) -> None:
        item.index = len(self._items)
        item.id = f"{_ID_PREFIX[item.kind]}_{self._job}_{item.index}"
        if item.kind == "function_call" and not item.call_id:
            item.call_id = f"call_{self._job}_{item.index}"
        self._items.append(item)
        arguments, item.arguments = item.arguments, []
        self._emit(out, "response.output_item.added", output_index=item.index, item=item.render())
        if arguments:
            self._arguments(out, item, "".join(arguments))

    def _text(
        self, out: list[dict[str, Any]], kind: str, text: str, logprobs: list[dict[str, Any]] | None
    ) -> None:
        if not text:
            return
        item = self._item(out, "message")
        part = item.parts[-1] if item.parts else None
        if part is None or part.kind != kind:
            if part is not None:
                self._close_part(out, item, finished=True)
            part = _Part(kind)
            item.parts.append(part)
            self._emit(
                out,
                "response.content_part.added",
                **self._where(item),
                content_index=len(item.parts) - 1,
                part=part.render(),
            )
        part.pieces.append(text)
        where = self._where(item) | {"content_index": len(item.parts) - 1}
        if kind == "refusal":
            self._emit(out, "response.refusal.delta", **where, delta=text)
            return
        converted = _logprobs(logprobs)
        part.logprobs += converted
        self._emit(out, "response.output_text.delta", **where, delta=text, logprobs=converted)

    def _reasoning(self, out: list[dict[str, Any]], text: str) -> None:
        if not text:
            return
        item = self._item(out, "reasoning")
        where = self._where(item) | {"summary_index": 0}
        if not item.parts:
            item.parts.append(_Part("summary_text"))
            part = item.parts[0].render()
            self._emit(out, "response.reasoning_summary_part.added", **where, part=part)
        item.parts[0].pieces.append(text)
        self._emit(out, "response.reasoning_summary_text.delta", **where, delta=text)

    def _tool_call(self, out: list[dict[str, Any]], event: ToolCallDelta) -> None:
        item = self._calls.get(event.index)
        if item is None:
            item = self._calls[event.index] = self._item(out, "function_call")
        elif item.status != "in_progress":
            return  # its item was closed when another kind began; output items cannot reopen
        if item.index < 0:
            item.call_id = item.call_id or event.id or ""
            item.name = item.name or event.name or ""
            item.arguments.append(event.arguments)
            if item.name:
                self._show(out, item)
        elif event.arguments:
            self._arguments(out, item, event.arguments)

    def _arguments(self, out: list[dict[str, Any]], item: _Item, delta: str) -> None:
        item.arguments.append(delta)
        self._emit(out, "response.function_call_arguments.delta", **self._where(item), delta=delta)

    def _close_all(self, out: list[dict[str, Any]], *, finished: bool) -> None:
        for item in sorted(self._open, key=lambda item: item.index < 0):
            self._close(out, item, finished=finished)
        self._open.clear()

    def _close(self, out: list[dict[str, Any]], item: _Item, *, finished: bool) -> None:
        status = "completed" if finished else "incomplete"
        if item.kind == "function_call":
            if not finished:
                item.status = status  # no .done: a client would run it with cut arguments
                return
            if item.index < 0:
                self._show(out, item)
            arguments = "".join(item.arguments)
            self._emit(
                out,
                "response.function_call_arguments.done",
                **self._where(item),
                arguments=arguments,
                name=item.name,
            )
        elif item.kind == "message" and item.parts:
            self._close_part(out, item, finished=finished)
        elif item.kind == "reasoning" and item.parts:
            where = self._where(item) | {"summary_index": 0}
            part = item.parts[0].render()
            self._emit(out, "response.reasoning_summary_text.done", **where, text=part["text"])
            extra = {} if finished else {"status": "incomplete"}
            self._emit(out, "response.reasoning_summary_part.done", **where, part=part, **extra)
        item.status = status
        self._emit(out, "response.output_item.done", output_index=item.index, item=item.render())

    def _close_part(self, out: list[dict[str, Any]], item: _Item, *, finished: bool) -> None:
        part = item.parts[-1]
        where = self._where(item) | {"content_index": len(item.parts) - 1}
        body = part.render()
        if part.kind == "refusal":
            self._emit(out, "response.refusal.done", **where, refusal=body["refusal"])
        else:
            text, logprobs = body["text"], body["logprobs"]
            self._emit(out, "response.output_text.done", **where, text=text, logprobs=logprobs)
        self._emit(out, "response.content_part.done", **where, part=body)

    @staticmethod
    def _where(item: _Item) -> dict[str, Any]:
        return {"item_id": item.id, "output_index": item.index}


def output_as_input(output: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """A finished response's output items as input items for the next turn."""
    items: list[dict[str, Any]] = []
    for item in output:
        kind = item.get("type")
        if kind == "message":
            content = [_input_part(part) for part in item.get("content") or []]
            if content:
                items.append({"type": "message", "role": "assistant", "content": content})
        elif kind == "function_call":
            names = ("call_id", "name", "arguments")
            items.append({"type": "function_call"} | {name: item[name] for name in names})
        elif kind == "reasoning":
            if item.get("encrypted_content"):  # only the upstream can read it again
                names = ("id", "summary", "encrypted_content")
                items.append({"type": "reasoning"} | {k: item[k] for k in names if k in item})
        else:
            items.append(copy.deepcopy(dict(item)))
    return items


def responses_usage(usage: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Chat-shaped (or Responses-shaped) usage as the Responses API's, 0 where unknown."""
    if usage is None:
        return None
    if "input_tokens" in usage or "output_tokens" in usage:
        names = ("input_tokens", "output_tokens", "input_tokens_details", "output_tokens_details")
    else:
        names = (
            "prompt_tokens",
            "completion_tokens",
            "prompt_tokens_details",
            "completion_tokens_details",
        )
    given, made, given_details, made_details = (usage.get(name) for name in names)
    given_details = given_details if isinstance(given_details, Mapping) else {}
    made_details = made_details if isinstance(made_details, Mapping) else {}
    inputs, outputs = _count(given), _count(made)
    return {
        "input_tokens": inputs,
        "input_tokens_details": {
            "cached_tokens": _count(given_details.get("cached_tokens")),
            "cache_write_tokens": _count(given_details.get("cache_write_tokens")),
        },
        "output_tokens": outputs,
        "output_tokens_details": {"reasoning_tokens": _count(made_details.get("reasoning_tokens"))},
        "total_tokens": _count(usage.get("total_tokens")) or inputs + outputs,
    }


def _input_part(part: Mapping[str, Any]) -> dict[str, Any]:
    if part.get("type") == "refusal":
        return {"type": "refusal", "refusal": str(part.get("refusal", ""))}
    annotations = copy.deepcopy(list(part.get("annotations") or []))
    return {"type": "output_text", "text": str(part.get("text", "")), "annotations": annotations}


def _logprobs(entries: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """A chat chunk's token log probabilities in the shape both Responses types accept."""
    converted = []
    for entry in entries or []:
        token = _logprob(entry)
        if token is not None:
            tops = [_logprob(top) for top in entry.get("top_logprobs") or []]
            token["top_logprobs"] = [top for top in tops if top is not None]
            converted.append(token)
    return converted


def _logprob(entry: object) -> dict[str, Any] | None:
    if not isinstance(entry, Mapping):
        return None
    token, logprob, raw = entry.get("token"), entry.get("logprob"), entry.get("bytes")
    if not isinstance(token, str) or not _finite(logprob):
        return None
    if not isinstance(raw, list) or not all(isinstance(b, int) and 0 <= b < 256 for b in raw):
        raw = []
    return {"token": token, "logprob": float(logprob), "bytes": list(raw)}


def _count(value: object) -> int:
    return int(value) if _finite(value) and value >= 0 else 0


def _finite(value: object) -> TypeGuard[int | float]:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    return ok and math.isfinite(value)  # type: ignore[arg-type]


def _cursor_seconds(cursor: str) -> int | None:
    """The Unix time of a stream entry id (its milliseconds part), if it is one."""
    milliseconds = cursor.partition("-")[0]
    return int(milliseconds) // 1000 if milliseconds.isdigit() else None
