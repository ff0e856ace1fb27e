"""Stored responses: what ``/v1/responses`` keeps of each response, under its tenant.

One JSON record per response in :meth:`Keys.response` (the job's hash tag), expiring with the
job's other keys: the tenant, the job, the fields a Response echoes, this turn's input items and
the conversation before it (``context``), so a next turn's ``previous_response_id`` costs one
record read and one read of the previous job's stream, never a walk down the chain. The output
is not stored: it is the job's stream, translated again on every read. The functions build and
parse records; :class:`ResponseStore` is a thin async shell around them.
"""

from __future__ import annotations

import copy
import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from streamq.core.events import Event, as_text, decode_entry
from streamq.core.exceptions import InvalidRequest, StreamQError
from streamq.core.keys import JOB_ID_PATTERN, Keys, check_job_id
from streamq.core.protocol import owner_ttl
from streamq.core.settings import Settings
from streamq.responses.events import ResponseStream, output_as_input
from streamq.responses.request import ResponsesRequest, build_responses_request

if TYPE_CHECKING:
    from redis.asyncio import Redis

ID_PREFIX = "resp_"
# Request parameters a Response does not echo.
NOT_ECHOED = frozenset({"extra_body", "include"})
RECORD_VERSION = 1
READ_BATCH = 1000
# OpenAI's id prefixes of the item types, for items a client sent without an id.
ITEM_ID_PREFIXES = {"message": "msg", "function_call": "fc", "function_call_output": "fco"}
DEFAULT_ITEM_PREFIX = "item"
# The prefixes of the ids streamq derives for output items (events.py), and the mark of a
# derived input item id: output ``{prefix}_{job}_{n}``, input ``{prefix}_{job}_in{n}``.
OUTPUT_ITEM_PREFIXES = frozenset({"msg", "fc", "rs"})
INPUT_INDEX_MARK = "in"
Order = Literal["asc", "desc"]


class ResponseNotFound(StreamQError, LookupError):
    """No stored response with this id for this tenant: never created, another tenant's, created
    with ``store: false``, deleted or expired."""

    def __init__(self, response_id: str) -> None:
        super().__init__(f"no response with id {response_id!r}")
        self.response_id = response_id


class ResponseInProgress(InvalidRequest):
    """A next turn named a response that has not ended: its output is not known yet."""

    def __init__(self, response_id: str, use: str = "previous_response_id") -> None:
        super().__init__(
            f"response {response_id!r} has not finished: wait for it (or cancel it) before "
            f"using it as {use}"
        )
        self.response_id = response_id


class ItemNotFound(StreamQError, LookupError):
    """An ``item_reference`` names no item of this tenant's stored responses."""

    def __init__(self, item_id: object) -> None:
        super().__init__(
            f"item_reference {item_id!r}: no such item in this tenant's stored responses"
        )
        self.item_id = item_id


@dataclass(frozen=True)
class ItemAddress:
    """Where a derived item id points: the ``index``-th output item (or, with ``input``, the
    ``index``-th input item) of job ``job_id``'s response."""

    job_id: str
    index: int
    input: bool = False


@dataclass(frozen=True)
class StoredResponse:
    """One response as stored: ``input`` is this turn's items as the client sent them (after
    validation), ``context`` the conversation before them; ``fields`` what the Response echoes
    (``created_at``, ``model``, ``instructions``, ``tools``, ``metadata``...)."""

    id: str
    tenant: str
    job_id: str
    fields: dict[str, Any] = field(default_factory=dict)
    input: list[dict[str, Any]] = field(default_factory=list)
    context: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> str:
        """The record as stored in Redis."""
        body = {"v": RECORD_VERSION, "id": self.id, "tenant": self.tenant, "job_id": self.job_id}
        body |= {"fields": self.fields, "input": self.input, "context": self.context}
        return json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: bytes | str) -> StoredResponse:
        """Parse a record written by :meth:`to_json`."""
        body = json.loads(as_text(raw))
        if not isinstance(body, dict) or body.get("v") != RECORD_VERSION:
            raise ValueError(f"not a stored response of version {RECORD_VERSION}")
        return cls(
            body["id"], body["tenant"], body["job_id"], body["fields"], body["input"],
            body["context"],
        )  # fmt: skip

    def conversation(self, output_items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """The input of a next turn's job before its own items: this response's context and
        input, then ``output_items`` (its output as input items)."""
        return [*self.context, *self.input, *output_items]


def new_record(
    tenant: str,
    job_id: str,
    request: ResponsesRequest,
    items: list[dict[str, Any]],
    context: list[dict[str, Any]],
    *,
    model: str,
    previous_response_id: str | None = None,
    store: bool = True,
    background: bool = False,
) -> StoredResponse:
    """The record of a new response: ``request`` is its job's (``context`` + ``items``),
    ``model`` the one it runs on when the request names none."""
    fields: dict[str, Any] = {
        "created_at": int(time.time()),
        "model": request.model or model,
        "instructions": request.instructions,
        "previous_response_id": previous_response_id,
        "store": store,
        "background": background,
    }
    fields |= {k: v for k, v in request.params.items() if k not in NOT_ECHOED}
    return StoredResponse(response_id(job_id), tenant, job_id, fields, items, context)


@dataclass(frozen=True)
class NewResponse:
    """A response about to be enqueued: its job id, its job's request and, unless it is not
    to be stored, its record."""

    job_id: str
    request: ResponsesRequest
    record: StoredResponse | None


def new_response(
    settings: Settings,
    items: list[dict[str, Any]],
    context: list[dict[str, Any]],
    *,
    tenant: str,
    job_id: str | None,
    model: str | None,
    instructions: str | None,
    params: dict[str, Any],
    options: dict[str, Any],
    previous_response_id: str | None,
    store: bool,
) -> NewResponse:
    """Validate a Python client's new response (``context`` + ``items``) and build its record,
    as the gateway's door does; raises :class:`InvalidRequest`."""
    request = build_responses_request(
        context + items, model, instructions, params, options, max_bytes=settings.max_request_bytes
    )
    job_id = uuid.uuid4().hex if job_id is None else check_job_id(job_id)
    record = None
    if store:
        record = new_record(
            tenant, job_id, request, items, context,
            model=settings.openai_model, previous_response_id=previous_response_id,
        )  # fmt: skip
    return NewResponse(job_id, request, record)


def checked_record(raw: bytes | None, tenant: str, response_id: str) -> StoredResponse:
    """The stored record ``raw`` if it is ``tenant``'s response ``response_id``, else
    :class:`ResponseNotFound`."""
    if raw is None:
        raise ResponseNotFound(response_id)
    record = StoredResponse.from_json(raw)
    if record.tenant != tenant or record.id != response_id:
        raise ResponseNotFound(response_id)
    return record


def finished_output(
    record: StoredResponse, events: Sequence[Event], job_exists: bool, use: str
) -> list[dict[str, Any]]:
    """The output items of ``record``'s response from its job's ``events``; it must have ended
    (:class:`ResponseInProgress`) and its job still be there (:class:`ResponseNotFound`)."""
    stream = replayed(record, events)
    if not events and not job_exists:
        raise ResponseNotFound(record.id)  # its job expired before the record
    if not stream.ended:
        raise ResponseInProgress(record.id, use)
    output: list[dict[str, Any]] = stream.snapshot()["output"]
    return output


def response_id(job_id: str) -> str:
    """The id of the response that job ``job_id`` answers."""
    return ID_PREFIX + job_id


def job_id_of(response_id: str) -> str:
    """The job behind ``response_id``; :class:`ResponseNotFound` if it cannot name one."""
    job_id = response_id.removeprefix(ID_PREFIX)
    if job_id == response_id or not JOB_ID_PATTERN.match(job_id):
        raise ResponseNotFound(response_id)
    return job_id


def replayed(record: StoredResponse, events: Sequence[Event]) -> ResponseStream:
    """The Responses translation of ``events`` (the job's, from its start), opening included:
    the same events give the same output, item ids and sequence numbers every time."""
    stream = ResponseStream(record.id, record.fields)
    stream.opening()
    for event in events:
        stream.feed(event)
    return stream


def listed_items(record: StoredResponse) -> list[dict[str, Any]]:
    """This turn's input items as ``GET /v1/responses/{id}/input_items`` lists them: each with
    an id (the client's, else one derived from the job and its place) and, for messages, its
    content as a list of parts."""
    items = []
    for index, item in enumerate(record.input):
        kind = item.get("type", "message")
        prefix = ITEM_ID_PREFIXES.get(kind, DEFAULT_ITEM_PREFIX)
        listed = {"id": f"{prefix}_{record.job_id}_{INPUT_INDEX_MARK}{index}", **item}
        if kind == "message":
            listed.setdefault("status", "completed")
            if isinstance(item.get("content"), str):
                part = "output_text" if item.get("role") == "assistant" else "input_text"
                listed["content"] = [{"type": part, "text": item["content"]}]
        items.append(listed)
    return items


def item_address(item_id: object) -> ItemAddress:
    """Parse an id streamq derived (``msg_{job}_{n}`` for output, ``msg_{job}_in{n}`` for
    input; job ids hold no ``_``); :class:`ItemNotFound` for any other id."""
    if not isinstance(item_id, str):
        raise ItemNotFound(item_id)
    prefix, _, rest = item_id.partition("_")
    job_id, _, place = rest.rpartition("_")
    listed = place.startswith(INPUT_INDEX_MARK)
    number = place.removeprefix(INPUT_INDEX_MARK)
    known = ITEM_ID_PREFIXES.values() if listed else OUTPUT_ITEM_PREFIXES
    ok = prefix in known or (listed and prefix == DEFAULT_ITEM_PREFIX)
    if not ok or not number.isdigit() or not JOB_ID_PATTERN.match(job_id):
        raise ItemNotFound(item_id)
    return ItemAddress(job_id, int(number), listed)


def referenced_item(item_id: str, items: Sequence[dict[str, Any]], index: int) -> dict[str, Any]:
    """``items[index]`` if it carries ``item_id``; :class:`ItemNotFound` otherwise."""
    if not 0 <= index < len(items) or items[index].get("id") != item_id:
        raise ItemNotFound(item_id)
    return items[index]


def items_page(
    items: Sequence[dict[str, Any]], *, limit: int, order: Order, after: str | None
) -> dict[str, Any]:
    """One page of ``items`` in OpenAI's list shape: ``order`` ``asc`` (as sent) or ``desc``,
    starting after the item with id ``after`` (:class:`InvalidRequest` if there is none)."""
    ordered = list(items) if order == "asc" else list(reversed(items))
    start = 0
    if after is not None:
        ids = [item.get("id") for item in ordered]
        if after not in ids:
            raise InvalidRequest(f"after: no input item with id {after!r} in this response")
        start = ids.index(after) + 1
    data = ordered[start : start + limit]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": start + limit < len(ordered),
    }


class ResponseStore:
    """Stored responses on ``redis`` (the queue's Redis, where the job owners are) and their
    jobs' events on ``streams`` (``STREAMQ_STREAMS_URL``'s, by default the same)."""

    def __init__(self, redis: Redis, settings: Settings, streams: Redis | None = None) -> None:
        self._redis = redis
        self._streams = redis if streams is None else streams
        self._keys = Keys(settings.key_prefix)
        # As long as the job's owner key: past that its stream, the output, is gone too.
        self.ttl = owner_ttl(settings)

    async def create(self, record: StoredResponse) -> StoredResponse:
        """Store ``record`` unless its job has one already; the stored one (a repeated
        Idempotency-Key finds the first request's, whichever tenant's it is: check)."""
        key = self._keys.response(record.job_id)
        if await self._redis.set(key, record.to_json(), nx=True, ex=self.ttl):
            return record
        raw = await self._redis.get(key)
        return record if raw is None else StoredResponse.from_json(raw)

    async def get(self, tenant: str, response_id: str) -> StoredResponse:
        """``tenant``'s response ``response_id``; :class:`ResponseNotFound` for anyone else's."""
        raw = await self._redis.get(self._keys.response(job_id_of(response_id)))
        return checked_record(raw, tenant, response_id)

    async def delete(self, record: StoredResponse, *, job_ended: bool, owner: bool = True) -> None:
        """Forget ``record`` and (``owner``) its job's owner, so the gateway finds neither; the
        job's own keys too once it has ended (a running one's expire with their TTL)."""
        keys = self._keys
        forget = [keys.response(record.job_id)] + ([keys.owner(record.job_id)] if owner else [])
        await self._redis.delete(*forget)
        if job_ended:  # EXPIRE 0 deletes too, and the gateway's ACL user may not DEL a job
            await self._redis.expire(keys.request(record.job_id), 0)
            async with self._streams.pipeline(transaction=False) as pipe:
                pipe.expire(keys.events(record.job_id), 0)
                pipe.expire(keys.state(record.job_id), 0)
                await pipe.execute()

    async def events(self, job_id: str) -> list[Event]:
        """Every event the job's stream holds now, oldest first."""
        key = self._keys.events(job_id)
        events: list[Event] = []
        start = "-"
        while True:
            batch = await self._streams.xrange(key, min=start, count=READ_BATCH)
            events += [decode_entry(as_text(cursor), raw) for cursor, raw in batch]
            if len(batch) < READ_BATCH:
                return events
            start = "(" + as_text(batch[-1][0])

    async def conversation(self, tenant: str, previous_id: str) -> list[dict[str, Any]]:
        """The input before a next turn's own items when it names ``previous_id``: that
        response's context, input and output. :class:`ResponseNotFound` if ``tenant`` has no
        such response, :class:`ResponseInProgress` if it has not ended."""
        previous = await self.get(tenant, previous_id)
        output = await self._finished_output(previous, "previous_response_id")
        return previous.conversation(output_as_input(output))

    async def resolve_references(self, tenant: str, items: Sequence[object]) -> list[object]:
        """``items`` with each ``item_reference`` replaced by the item it names, as an input
        item: an output item of one of ``tenant``'s stored, finished responses (none if it is a
        reasoning item no upstream can read again), or one of their listed input items. Other
        items pass unchanged. :class:`ItemNotFound` for an id naming nothing of ``tenant``'s,
        :class:`ResponseInProgress` for an output item of an unfinished response."""
        resolved: list[object] = []
        records: dict[str, StoredResponse] = {}
        outputs: dict[str, list[dict[str, Any]]] = {}
        for item in items:
            if not isinstance(item, dict) or item.get("type") != "item_reference":
                resolved.append(item)
                continue
            item_id = item.get("id")
            address = item_address(item_id)
            job_id = address.job_id
            if job_id not in records:
                try:
                    records[job_id] = await self.get(tenant, response_id(job_id))
                except ResponseNotFound:
                    raise ItemNotFound(item_id) from None
            record = records[job_id]
            assert isinstance(item_id, str)  # item_address checked it
            if address.input:
                referenced_item(item_id, listed_items(record), address.index)  # or raise
                resolved.append(copy.deepcopy(record.input[address.index]))
                continue
            if job_id not in outputs:
                try:
                    outputs[job_id] = await self._finished_output(record, "an item_reference")
                except ResponseNotFound:
                    raise ItemNotFound(item_id) from None
            found = referenced_item(item_id, outputs[job_id], address.index)
            resolved += output_as_input([found])
        return resolved

    async def _finished_output(self, record: StoredResponse, use: str) -> list[dict[str, Any]]:
        """The output items of ``record``'s response, which must have ended."""
        events = await self.events(record.job_id)
        exists = bool(events) or bool(await self._redis.exists(self._keys.request(record.job_id)))
        return finished_output(record, events, exists, use)
