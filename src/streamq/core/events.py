"""Wire format v1: the events of a job and how they are stored as Redis Stream entries.

Every entry has the fields ``v`` (format version, ``"1"``), ``type``, ``attempt``, ``seq`` and
``data``; ``choice`` is added only for choices other than 0 (requests with ``n > 1``), and
``logprobs`` only to text entries whose chunk carried log probabilities. ``data`` is the plain
text for ``delta``/``reasoning``/``refusal`` and a JSON object for every other type.
``docs/wire-format.md`` is the reference for readers in other languages.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from streamq.core.exceptions import EventDecodeError

WIRE_VERSION = "1"
TEXT_TYPES = frozenset({"delta", "reasoning", "refusal"})
TERMINAL_TYPES = frozenset({"done", "error", "cancelled"})


@dataclass(frozen=True, kw_only=True, slots=True)
class Event:
    """One entry of a job's stream. ``cursor`` is its entry id, usable to resume after it."""

    type: ClassVar[str] = ""
    cursor: str = ""
    attempt: int = 1
    seq: int = 0

    def data(self) -> str:
        """The ``data`` field as stored in Redis."""
        raise NotImplementedError


@dataclass(frozen=True, kw_only=True, slots=True)
class Start(Event):
    """A worker started an attempt at the job."""

    type: ClassVar[str] = "start"
    job_id: str
    model: str
    worker: str = ""
    started_at: float = 0.0

    def data(self) -> str:
        return _json(
            {
                "job_id": self.job_id,
                "model": self.model,
                "worker": self.worker,
                "started_at": self.started_at,
            }
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class Reset(Event):
    """A new attempt replaces the earlier ones: discard what they produced."""

    type: ClassVar[str] = "reset"
    reason: str = ""

    def data(self) -> str:
        return _json({"reason": self.reason})


@dataclass(frozen=True, kw_only=True, slots=True)
class Meta(Event):
    """What the upstream said of its answer, from its first chunk: at most one per attempt,
    before the attempt's first text. Any field may be None (servers differ)."""

    type: ClassVar[str] = "meta"
    model: str | None = None
    system_fingerprint: str | None = None
    id: str | None = None
    created: int | None = None

    def data(self) -> str:
        return _json(
            {
                "model": self.model,
                "system_fingerprint": self.system_fingerprint,
                "id": self.id,
                "created": self.created,
            }
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class _Text(Event):
    text: str
    choice: int = 0
    # The chunk's token log probabilities (its choice's ``logprobs.content`` or ``.refusal``).
    logprobs: list[dict[str, Any]] | None = None

    def data(self) -> str:
        return self.text


@dataclass(frozen=True, kw_only=True, slots=True)
class Delta(_Text):
    """A piece of the answer's content."""

    type: ClassVar[str] = "delta"


@dataclass(frozen=True, kw_only=True, slots=True)
class Reasoning(_Text):
    """A piece of reasoning text, for providers that send ``reasoning_content``."""

    type: ClassVar[str] = "reasoning"


@dataclass(frozen=True, kw_only=True, slots=True)
class Refusal(_Text):
    """A piece of a refusal message."""

    type: ClassVar[str] = "refusal"


@dataclass(frozen=True, kw_only=True, slots=True)
class ToolCallDelta(Event):
    """A fragment of tool call ``index``: id and name arrive once, arguments in pieces."""

    type: ClassVar[str] = "tool_call"
    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""
    choice: int = 0

    def data(self) -> str:
        body: dict[str, Any] = {"index": self.index, "arguments": self.arguments}
        if self.id is not None:
            body["id"] = self.id
        if self.name is not None:
            body["name"] = self.name
        return _json(body)


@dataclass(frozen=True, kw_only=True, slots=True)
class Queued(Event):
    """The job waits to start; not terminal, and says nothing of the answer.

    ``reason`` is ``queue`` (waiting in the queue; clients make these while the stream is
    still empty: they have no cursor) or why a worker that took the job waits for admission
    (entries the worker writes): ``concurrency`` (the model's fleet-wide limit), ``token_budget``,
    ``request_budget`` or ``rate_limited`` (the provider answered 429). ``ahead`` counts the
    jobs that start first and ``eta`` estimates the seconds until it starts, when known.
    """

    type: ClassVar[str] = "queued"
    reason: str = "queue"
    ahead: int | None = None
    eta: float | None = None
    model: str | None = None

    def data(self) -> str:
        body: dict[str, Any] = {"reason": self.reason}
        if self.ahead is not None:
            body["ahead"] = self.ahead
        if self.eta is not None:
            body["eta"] = self.eta
        if self.model is not None:
            body["model"] = self.model
        return _json(body)


@dataclass(frozen=True, kw_only=True, slots=True)
class Done(Event):
    """The job finished; terminal."""

    type: ClassVar[str] = "done"
    finish_reason: str | None
    usage: dict[str, Any] | None = None
    model: str | None = None
    finish_reasons: list[str | None] = field(default_factory=list)
    system_fingerprint: str | None = None

    def data(self) -> str:
        body = {
            "finish_reason": self.finish_reason,
            "finish_reasons": self.finish_reasons,
            "usage": self.usage,
            "model": self.model,
        }
        if self.system_fingerprint is not None:
            body["system_fingerprint"] = self.system_fingerprint
        return _json(body)


@dataclass(frozen=True, kw_only=True, slots=True)
class Error(Event):
    """The job failed; terminal. ``retryable`` says whether running it again could help."""

    type: ClassVar[str] = "error"
    code: str
    message: str
    retryable: bool = False
    retry_after: float | None = None  # seconds, when the upstream said when to try again

    def data(self) -> str:
        body: dict[str, Any] = {
            "code": self.code,
            "message": self.message,
            "retryable": self.retryable,
        }
        if self.retry_after is not None:
            body["retry_after"] = self.retry_after
        return _json(body)


@dataclass(frozen=True, kw_only=True, slots=True)
class Cancelled(Event):
    """The job was cancelled; terminal. ``deltas`` counts the content deltas sent before."""

    type: ClassVar[str] = "cancelled"
    reason: str = ""
    deltas: int = 0
    usage: dict[str, Any] | None = None

    def data(self) -> str:
        return _json({"reason": self.reason, "deltas": self.deltas, "usage": self.usage})


@dataclass(frozen=True, kw_only=True, slots=True)
class UnknownEvent(Event):
    """An entry of a type this version does not know (written by a newer streamq); skip it."""

    type: ClassVar[str] = "unknown"
    entry_type: str
    raw_data: str

    def data(self) -> str:
        return self.raw_data


def is_terminal(event: Event) -> bool:
    """Whether ``event`` ends the job's stream."""
    return event.type in TERMINAL_TYPES


def encode(event: Event, *, attempt: int, seq: int) -> dict[str, str]:
    """The stream entry fields for ``event``, stamped with its attempt and sequence number."""
    entry = {
        "v": WIRE_VERSION,
        "type": event.type,
        "attempt": str(attempt),
        "seq": str(seq),
        "data": event.data(),
    }
    choice = getattr(event, "choice", 0)
    if choice:
        entry["choice"] = str(choice)
    logprobs = getattr(event, "logprobs", None)
    if logprobs is not None:
        entry["logprobs"] = json.dumps(logprobs, ensure_ascii=False, separators=(",", ":"))
    return entry


def decode(cursor: str, fields: dict[str, str]) -> Event:
    """The event stored as entry ``cursor`` with ``fields`` (already decoded to ``str``)."""
    try:
        version = fields["v"]
        kind = fields["type"]
        base: dict[str, Any] = {
            "cursor": cursor,
            "attempt": int(fields["attempt"]),
            "seq": int(fields["seq"]),
        }
        data = fields["data"]
    except (KeyError, ValueError) as exc:
        raise EventDecodeError(f"entry {cursor} is not a streamq v1 event: {exc!r}") from None
    if version != WIRE_VERSION:
        raise EventDecodeError(
            f"entry {cursor} uses wire format v{version}; this streamq reads v{WIRE_VERSION}"
        )
    try:
        if kind in TEXT_TYPES:
            logprobs = json.loads(fields["logprobs"]) if "logprobs" in fields else None
            if logprobs is not None and not isinstance(logprobs, list):
                raise TypeError("logprobs is not a JSON array")
            text_class = _TEXT_CLASSES[kind]
            choice = int(fields.get("choice", 0))
            return text_class(text=data, choice=choice, logprobs=logprobs, **base)
        if kind not in _JSON_DECODERS:
            return UnknownEvent(entry_type=kind, raw_data=data, **base)
        body = json.loads(data)
        if not isinstance(body, dict):
            raise TypeError("data is not a JSON object")
        return _JSON_DECODERS[kind](body, base, fields)
    except (ValueError, TypeError, KeyError) as exc:
        raise EventDecodeError(f"entry {cursor} of type {kind!r} is malformed: {exc}") from None


def decode_entry(cursor: str, raw: Mapping[bytes, bytes]) -> Event:
    """:func:`decode` for an entry as Redis returns it (bytes), fastest for plain deltas."""
    if (
        raw.get(b"type") == b"delta"
        and raw.get(b"v") == b"1"
        and b"choice" not in raw
        and b"logprobs" not in raw
    ):
        try:
            return Delta(
                text=raw[b"data"].decode(),
                cursor=cursor,
                attempt=int(raw[b"attempt"]),
                seq=int(raw[b"seq"]),
            )
        except (KeyError, ValueError):
            pass  # let decode() say what is wrong
    try:
        fields = {key.decode(): value.decode() for key, value in raw.items()}
    except UnicodeDecodeError:
        raise EventDecodeError(f"entry {cursor} is not UTF-8") from None
    return decode(cursor, fields)


def _json(body: dict[str, Any]) -> str:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def _start(body: dict[str, Any], base: dict[str, Any], fields: dict[str, str]) -> Event:
    return Start(
        job_id=str(body["job_id"]),
        model=str(body["model"]),
        worker=str(body.get("worker", "")),
        started_at=float(body.get("started_at", 0.0)),
        **base,
    )


def _meta(body: dict[str, Any], base: dict[str, Any], fields: dict[str, str]) -> Event:
    created = body.get("created")
    return Meta(
        model=_optional_str(body.get("model")),
        system_fingerprint=_optional_str(body.get("system_fingerprint")),
        id=_optional_str(body.get("id")),
        created=created if isinstance(created, int) and not isinstance(created, bool) else None,
        **base,
    )


def _tool_call(body: dict[str, Any], base: dict[str, Any], fields: dict[str, str]) -> Event:
    return ToolCallDelta(
        index=int(body["index"]),
        id=_optional_str(body.get("id")),
        name=_optional_str(body.get("name")),
        arguments=str(body.get("arguments", "")),
        choice=int(fields.get("choice", 0)),
        **base,
    )


def _done(body: dict[str, Any], base: dict[str, Any], fields: dict[str, str]) -> Event:
    usage = body.get("usage")
    return Done(
        finish_reason=_optional_str(body.get("finish_reason")),
        finish_reasons=[_optional_str(r) for r in body.get("finish_reasons") or []],
        usage=usage if isinstance(usage, dict) else None,
        model=_optional_str(body.get("model")),
        system_fingerprint=_optional_str(body.get("system_fingerprint")),
        **base,
    )


def _queued(body: dict[str, Any], base: dict[str, Any], fields: dict[str, str]) -> Event:
    ahead = body.get("ahead")
    return Queued(
        reason=str(body.get("reason", "queue")),
        ahead=ahead if isinstance(ahead, int) and not isinstance(ahead, bool) else None,
        eta=_optional_seconds(body.get("eta")),
        model=_optional_str(body.get("model")),
        **base,
    )


def _reset(body: dict[str, Any], base: dict[str, Any], fields: dict[str, str]) -> Event:
    return Reset(reason=str(body.get("reason", "")), **base)


def _cancelled(body: dict[str, Any], base: dict[str, Any], fields: dict[str, str]) -> Event:
    usage = body.get("usage")
    return Cancelled(
        reason=str(body.get("reason", "")),
        deltas=int(body.get("deltas", 0)),
        usage=usage if isinstance(usage, dict) else None,
        **base,
    )


def _error(body: dict[str, Any], base: dict[str, Any], fields: dict[str, str]) -> Event:
    return Error(
        code=str(body["code"]),
        message=str(body["message"]),
        retryable=bool(body.get("retryable", False)),
        retry_after=_optional_seconds(body.get("retry_after")),
        **base,
    )


def _optional_seconds(value: object) -> float | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
    return float(value) if ok and math.isfinite(value) else None  # type: ignore[arg-type]


def _optional_str(value: object) -> str | None:
    return None if value is None else str(value)


_TEXT_CLASSES: dict[str, type[_Text]] = {"delta": Delta, "reasoning": Reasoning, "refusal": Refusal}
_JSON_DECODERS = {
    "start": _start,
    "meta": _meta,
    "reset": _reset,
    "queued": _queued,
    "tool_call": _tool_call,
    "done": _done,
    "error": _error,
    "cancelled": _cancelled,
}


def event_to_dict(event: Event) -> dict[str, Any]:
    """A JSON-friendly view of ``event``: its type, cursor, attempt, seq and own fields."""
    body: dict[str, Any] = {"type": event.type}
    if isinstance(event, UnknownEvent):
        body["type"] = event.entry_type
    for item in dataclasses.fields(event):
        body[item.name] = getattr(event, item.name)
    return body


def as_text(value: bytes | str) -> str:
    """A field, key or entry id from Redis as ``str``."""
    return value.decode() if isinstance(value, bytes) else value


def entry_order(entry_id: str) -> tuple[int, int]:
    """An entry id as a sortable ``(milliseconds, sequence)`` pair."""
    milliseconds, _, sequence = entry_id.partition("-")
    return int(milliseconds), int(sequence or 0)
