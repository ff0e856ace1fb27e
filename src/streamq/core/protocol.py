"""The clients' sans-IO core: everything the async and the sync client do alike, minus the I/O.

Request validation and the enqueue script's call, the cursor rules, the way through a job's
stream (how long to block, when to resume, where it ends), a status from the state hash, and
the result assembled from the events. Nothing here sends a command, sleeps or awaits:
:mod:`streamq.client` and :mod:`streamq.job` drive it with ``await``,
:mod:`streamq.sync` with blocking calls, as httpx-sse's ``iter_sse`` and ``aiter_sse`` drive
one decoder.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Generic, Literal, Protocol, Self, TypeVar, cast

from arq.constants import expires_extra_ms
from arq.utils import timestamp_ms
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from streamq.core.events import (
    TERMINAL_TYPES,
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
    as_text,
    decode_entry,
    encode,
    entry_order,
    is_terminal,
)
from streamq.core.exceptions import (
    ClientClosed,
    ConfigError,
    InvalidCursor,
    InvalidRequest,
    JobCancelled,
    JobFailed,
    JobIdConflict,
    JobIdTaken,
    JobRestarted,
    ReadTimeout,
)
from streamq.core.keys import (
    DEFAULT_TENANT,
    Keys,
    check_job_id,
    check_tenant,
    fair_clock,
    fair_order,
    fair_tenants,
    wake_channel,
)
from streamq.core.queue import arq_job
from streamq.core.request import build_request, chat_messages
from streamq.core.settings import Settings

if TYPE_CHECKING:
    from redis import Redis as SyncRedis
    from redis.asyncio import Redis
    from redis.typing import KeyT, StreamIdT

# The Redis client a shell drives (redis.asyncio's or redis-py's blocking one), and its handle.
R = TypeVar("R", bound="Redis | SyncRedis")
J = TypeVar("J", bound="JobBase[Any]")
E = TypeVar("E")  # what enqueueing returns: the job handle, or (async) an awaitable of it
CancelOutcome = Literal[
    "cancelled", "cancelling", "already_done", "already_error", "already_cancelled"
]
# Both parts of an entry id are unsigned 64-bit integers: at most 20 ASCII digits each (``\d``
# would also take other scripts' digits, which Redis refuses).
CURSOR_PATTERN = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")
MAX_ID_PART = 2**64 - 1
READ_BATCH = 1000
# Longest single XREAD BLOCK: between calls the reader re-checks that the job still exists.
MAX_BLOCK_SECONDS = 5.0
RECONNECT_BACKOFF = 0.05
MAX_RECONNECT_BACKOFF = 2.0
STREAM_GONE = "its stream is gone: expired, or Redis lost it"


def lease_member(attempt: int | str, job_id: str) -> str:
    """A running attempt's member in the ``running`` sorted set (:meth:`Keys.running`)."""
    return f"{attempt}:{job_id}"


def lease_parts(member: str) -> tuple[str, str]:
    """``(attempt, job_id)`` of a :func:`lease_member` (as read back, unchecked)."""
    attempt, _, job_id = member.partition(":")
    return attempt, job_id


# Enqueueing


def validated_job(
    settings: Settings,
    messages: Sequence[Mapping[str, Any]],
    model: str | None,
    job_id: str | None,
    params: Mapping[str, Any],
    options: Mapping[str, Any],
) -> tuple[str, str]:
    """The job's id (a new one when None) and its request as stored; raises InvalidRequest.
    ``params`` are OpenAI's, ``options`` streamq's (``deadline``, ``idle_timeout``,
    ``buffered``), as :func:`~streamq.core.request.build_request` takes them."""
    request = build_request(messages, model, params, options, max_bytes=settings.max_request_bytes)
    return uuid.uuid4().hex if job_id is None else check_job_id(job_id), request.to_json()


def enqueue_call(
    settings: Settings, job_id: str, request: str, now_ms: int
) -> tuple[list[str], list[str | bytes | int]]:
    """The first KEYS and ARGV of :data:`scripts.ENQUEUE` (:func:`fair_share_call` adds the
    rest): store the request and queue the job as arq would, in one round trip (the script
    answers 0 if the id exists already)."""
    keys = Keys(settings.key_prefix)
    arq_id = keys.arq_job_id(job_id)
    script_keys = [
        keys.request(job_id),
        keys.arq_job(job_id),
        keys.arq_result(job_id),
        settings.queue_name,
    ]
    args: list[str | bytes | int] = [request, settings.stream_ttl, arq_id, arq_job(now_ms)]
    args += [expires_extra_ms, now_ms, wake_channel(settings.queue_name)]
    return script_keys, args


def fair_share_call(
    settings: Settings, job_id: str, tenant: str | None
) -> tuple[list[str], list[str | bytes | int]]:
    """The KEYS and ARGV of :data:`scripts.ENQUEUE` after :func:`enqueue_call`'s: the job's
    place among ``tenant``'s (None: :data:`DEFAULT_TENANT`) in the fair order, by the tenant's
    weight (``STREAMQ_TENANT_WEIGHTS``). A tenant given also claims the job as its owner, as
    the gateway's tenants do: an id nobody owns becomes the tenant's, another tenant's is
    refused (:class:`JobIdTaken`). Raises :class:`InvalidRequest` for a malformed tenant name."""
    name = DEFAULT_TENANT if tenant is None else check_tenant(tenant)
    queue = settings.queue_name
    keys = [fair_order(queue), fair_tenants(queue), fair_clock(queue)]
    keys.append(Keys(settings.key_prefix).owner(job_id))
    args: list[str | bytes | int] = [name, repr(1 / settings.tenant_weight(name))]
    args += [owner_ttl(settings), "" if tenant is None else "1"]
    return keys, args


def fair_requeue_call(
    queue_name: str, ttl: int, arq_id: str
) -> tuple[list[str], list[str | bytes | int]]:
    """KEYS and ARGV of :data:`scripts.FAIR_REQUEUE`: a job queued in arq's queue again goes
    to the front of the fair order (which keeps ``ttl``, ``STREAMQ_STREAM_TTL``)."""
    keys = [fair_order(queue_name), fair_clock(queue_name), queue_name]
    return keys, [arq_id, ttl]


def owner_ttl(settings: Settings) -> int:
    """Seconds a job's owner key lives: a job's keys expire STREAM_TTL after its last write,
    which comes at most JOB_TIMEOUT after it starts; the owner outlives them."""
    return settings.stream_ttl + int(settings.job_timeout)


def enqueued(job_id: str, args: Sequence[str | bytes | int], reply: Any) -> bool:
    """Whether :data:`scripts.ENQUEUE`, called with ``args`` (of :func:`enqueue_call`), created
    the job: True when it is new, False when the id exists with the same request. Raises
    :class:`JobIdConflict` when the id holds another request (compared as JSON: key order and
    spacing do not count), :class:`JobIdTaken` when it is another tenant's job."""
    if reply == -1:
        raise JobIdTaken(job_id)
    if isinstance(reply, int):
        return bool(reply)
    if _what_is_asked(reply) != _what_is_asked(args[0]):
        raise JobIdConflict(job_id)
    return False


def _what_is_asked(stored: str | bytes | int) -> Any:
    """A stored request without ``buffered``, which says how the answer is fetched, not what
    is asked: a streamed replay of a non-streamed request at the door is the same request."""
    body = json.loads(stored if isinstance(stored, str | bytes) else str(stored))
    if isinstance(body, dict) and isinstance(body.get("options"), dict):
        body["options"].pop("buffered", None)
    return body


# Reading a job's stream


def check_cursor(cursor: str | None) -> str:
    """The stream id to read after: ``"0-0"`` for the beginning, else a validated entry id.

    Raises :class:`InvalidCursor` unless both parts are decimal integers in 0..2^64-1, the
    range Redis accepts, so a bad cursor fails here and never as a Redis error mid-stream.
    """
    if cursor is None or cursor in ("", "0", "0-0"):
        return "0-0"
    # fullmatch: `$` would let a trailing newline through. The pattern bounds the length
    # before int() sees it.
    match = CURSOR_PATTERN.fullmatch(cursor) if isinstance(cursor, str) else None
    if match is None or any(int(part) > MAX_ID_PART for part in match.groups()):
        shown = repr(cursor)
        if len(shown) > 60:  # the message may reach logs and HTTP responses
            shown = f"{shown[:40]}... ({len(shown)} characters)"
        raise InvalidCursor(
            f"invalid cursor {shown}: expected an entry id like 1700000000000-0, "
            "two integers below 2^64"
        )
    return f"{int(match[1])}-{int(match[2])}"  # canonical: no leading zeros


def ended_at_or_before(cursor: str, newest: list[Any]) -> bool:
    """Whether ``newest`` (``XREVRANGE key + - COUNT 1``) is a terminal entry at or before
    ``cursor``."""
    if not newest:
        return False
    entry_id, fields = newest[0]
    ended = as_text(fields.get(b"type", b"")) in TERMINAL_TYPES
    return ended and entry_order(cursor) >= entry_order(as_text(entry_id))


def read_interrupted(exc: BaseException) -> bool:
    """Whether a failed read should resume from its cursor: the link dropped or timed out, or
    another client ended the blocked read (``CLIENT UNBLOCK <id> ERROR`` answers it with an
    ``UNBLOCKED`` error)."""
    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        return True
    return isinstance(exc, ResponseError) and str(exc).startswith("UNBLOCKED")


def max_block(redis: Redis | SyncRedis) -> float:
    """The longest XREAD BLOCK for ``redis``: a client-side socket timeout would cut a longer
    one short with an error. Reads the client's options; sends nothing."""
    pool = getattr(redis, "connection_pool", None)  # a cluster client has one per node
    kwargs = pool.connection_kwargs if pool is not None else redis.get_connection_kwargs()
    socket_timeout = kwargs.get("socket_timeout")
    if socket_timeout:
        return max(0.001, min(MAX_BLOCK_SECONDS, float(socket_timeout) * 0.8))
    return MAX_BLOCK_SECONDS


class ReadWait:
    """A reader's wait for the next event: how long each XREAD may block, the reconnect
    backoff, and :class:`ReadTimeout` after ``timeout`` seconds without an event."""

    def __init__(self, job_id: str, timeout: float, max_block: float) -> None:
        self._job_id, self._timeout, self._max_block = job_id, timeout, max_block
        self._idle, self._began, self._backoff = 0.0, 0.0, RECONNECT_BACKOFF

    def next_block_ms(self) -> int:
        """Milliseconds the next read may block; raises :class:`ReadTimeout` once time is up."""
        if self._idle >= self._timeout:
            raise ReadTimeout(f"no event from job {self._job_id!r} for {self._timeout:g}s")
        self._began = time.monotonic()
        return max(1, int(min(self._timeout - self._idle, self._max_block) * 1000))

    def link_failed(self) -> float:
        """Seconds to pause before reading again after the link dropped (doubling each time)."""
        delay, self._backoff = self._backoff, min(self._backoff * 2, MAX_RECONNECT_BACKOFF)
        self._idle += time.monotonic() - self._began + delay
        return delay

    def answered(self, with_events: bool) -> bool:
        """Count a read that Redis answered; returns ``with_events``."""
        self._backoff = RECONNECT_BACKOFF
        self._idle = 0.0 if with_events else self._idle + time.monotonic() - self._began
        return with_events


class StreamReader:
    """One reader's way through a job's stream, after cursor ``after``: the XREAD to send next
    (:meth:`next_read`), the pause after a failed one (:meth:`failed`), the events of a reply
    (:meth:`received`), and :attr:`ended` once the terminal event was handed out."""

    def __init__(self, job_id: str, key: str, after: str, timeout: float, max_block: float):
        self.key, self.cursor, self.ended = key, after, False
        self._wait = ReadWait(job_id, timeout, max_block)

    def next_read(self) -> tuple[dict[KeyT, StreamIdT], int]:
        """The streams (``{key: cursor}``) and block (ms) of the next XREAD; raises
        :class:`ReadTimeout` once the reader has waited ``timeout`` seconds for an event."""
        return {self.key: self.cursor}, self._wait.next_block_ms()

    def failed(self, exc: Exception) -> float:
        """Seconds to pause after the read failed with ``exc`` (Redis restarted, the link
        dropped, or another client ended the read), then resume from the cursor: no gap, no
        dupe. Raises ``exc`` when the failure is not one a read resumes after."""
        if not read_interrupted(exc):
            raise exc
        return self._wait.link_failed()

    def received(self, reply: Any) -> Iterator[Event]:
        """The events of an XREAD's ``reply``, up to the terminal one; moves the cursor."""
        if not self._wait.answered(bool(reply)):
            return
        for entry_id, fields in reply[0][1]:
            self.cursor = as_text(entry_id)
            event = decode_entry(self.cursor, fields)
            self.ended = is_terminal(event)
            yield event
            if self.ended:
                return


# Status and cancelling


@dataclass(frozen=True)
class JobStatus:
    """Where a job stands. ``stalled``: running, but its worker's lease has run out (no
    heartbeat): the worker is gone or cut off, and another will start the job again soon.
    ``ahead`` and ``eta``: while queued, the jobs that start before it and the estimated
    seconds until it starts (:mod:`streamq.core.queue_position`), when known."""

    state: Literal["queued", "running", "done", "error", "cancelled"]
    attempt: int
    stalled: bool = False
    lease_remaining: float | None = None
    ahead: int | None = None
    eta: float | None = None


def stored_status(state: dict[bytes, bytes]) -> JobStatus:
    """The status the state hash tells: ended, queued (attempt 0: the job may also be unknown)
    or running (the caller adds the lease, :func:`with_lease`)."""
    attempt = int(state.get(b"attempt", 0))
    terminal = state.get(b"terminal")
    if terminal:
        return JobStatus(cast(Any, terminal.decode()), attempt)
    return JobStatus("running", attempt) if attempt else JobStatus("queued", 0)


def with_lease(running: JobStatus, expiry: float | None, redis_time: tuple[int, int]) -> JobStatus:
    """A running status with its lease: ``expiry`` (ms) from the running set, Redis ``TIME``."""
    seconds, microseconds = redis_time
    now_ms = int(seconds) * 1000 + int(microseconds) // 1000
    remaining = None if expiry is None else (float(expiry) - now_ms) / 1000
    stalled = remaining is None or remaining <= 0
    return replace(running, stalled=stalled, lease_remaining=remaining)


def cancel_call(keys: Keys, job_id: str, stream_ttl: int) -> tuple[list[str], list[str]]:
    """KEYS and ARGV of :data:`scripts.CANCEL` for ``job_id``."""
    entry = encode(Cancelled(reason="cancelled before it started"), attempt=0, seq=0)
    args = [str(stream_ttl), keys.cancel_channel(), job_id]
    args += [item for pair in entry.items() for item in pair]
    return [keys.state(job_id), keys.events(job_id)], args


# Results


@dataclass
class ToolCall:
    """A tool call assembled from its fragments."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass
class ChoiceResult:
    """The assembled output of one choice."""

    index: int
    text: str = ""
    reasoning: str = ""
    refusal: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None


@dataclass
class ChatResult:
    """A finished job: its text, finish reason, usage and tool calls (of the final attempt)."""

    job_id: str
    choices: list[ChoiceResult]
    usage: dict[str, Any] | None
    model: str | None
    attempt: int
    cursor: str

    @property
    def text(self) -> str:
        """The content of the first choice."""
        return self.choices[0].text

    @property
    def finish_reason(self) -> str | None:
        """The first choice's finish reason (``stop``, ``length``, ``tool_calls``, ...)."""
        return self.choices[0].finish_reason

    @property
    def tool_calls(self) -> list[ToolCall]:
        """The first choice's tool calls."""
        return self.choices[0].tool_calls

    @property
    def reasoning(self) -> str:
        """The first choice's reasoning text, where the provider sent it."""
        return self.choices[0].reasoning


def text_of(job_id: str, event: Event, *, yielded: bool) -> str | None:
    """The text ``event`` adds to ``for chunk in job``, or None. Raises :class:`JobFailed`,
    :class:`JobCancelled`, and :class:`JobRestarted` on a restart after text was ``yielded``."""
    if isinstance(event, Delta) and event.choice == 0:
        return event.text
    if isinstance(event, Reset) and yielded:
        raise JobRestarted(job_id, event.attempt, event.cursor)
    _raise_if_failed(job_id, event)
    return None


def _raise_if_failed(job_id: str, event: Event) -> None:
    if isinstance(event, Error):
        raise JobFailed(job_id, event)
    if isinstance(event, Cancelled):
        raise JobCancelled(job_id, event)


class ResultBuilder:
    """Assembles one attempt's events into choices."""

    def __init__(self) -> None:
        self.choices: dict[int, ChoiceResult] = {}
        self.calls: dict[tuple[int, int], ToolCall] = {}

    def take(self, job_id: str, event: Event) -> ChatResult | None:
        """Add the next event of the stream; the result once it is ``done``. Raises
        :class:`JobFailed` or :class:`JobCancelled` when the job ended so."""
        _raise_if_failed(job_id, event)
        if isinstance(event, Reset | Start):
            self.choices, self.calls = {}, {}  # a new attempt starts over
        elif isinstance(event, Done):
            return self.finish(job_id, event)
        else:
            self.add(event)
        return None

    def add(self, event: Event) -> None:
        """Add a content, reasoning, refusal or tool call fragment to its choice."""
        index = getattr(event, "choice", 0)
        choice = self.choices.setdefault(index, ChoiceResult(index))
        match event:
            case Delta():
                choice.text += event.text
            case Reasoning():
                choice.reasoning += event.text
            case Refusal():
                choice.refusal = (choice.refusal or "") + event.text
            case ToolCallDelta():
                call = self.calls.get((index, event.index))
                if call is None:
                    call = self.calls[index, event.index] = ToolCall(event.index)
                    choice.tool_calls.append(call)
                call.id = event.id or call.id
                call.name = event.name or call.name
                call.arguments += event.arguments

    def finish(self, job_id: str, done: Done) -> ChatResult:
        """The result the choices make, with ``done``'s finish reasons and usage."""
        for i, reason in enumerate(done.finish_reasons or [done.finish_reason]):
            self.choices.setdefault(i, ChoiceResult(i)).finish_reason = reason
        for choice in self.choices.values():
            choice.tool_calls.sort(key=lambda call: call.index)
        return ChatResult(
            job_id=job_id,
            choices=[self.choices[i] for i in sorted(self.choices)] or [ChoiceResult(0)],
            usage=done.usage,
            model=done.model,
            attempt=done.attempt,
            cursor=done.cursor,
        )


# What both clients hold


class StoredRequest(Protocol):
    """A validated request of either API, as a job stores it."""

    def to_json(self) -> str:
        """The request as stored in Redis."""
        ...


class ClientBase(Generic[R, J, E]):
    """What the async and the sync ``StreamQ`` share: settings, key names, ``enqueue`` and
    ``enqueue_chat`` (validation and the script call), job handles, and the refusal to work once
    closed. ``R`` is the Redis client the shell drives (it opens one with :meth:`_connect`),
    ``J`` its ``ChatJob``, ``E`` what enqueueing returns: ``J``, or an awaitable of it. The
    shell says how the enqueue script is sent (:meth:`_submit`)."""

    _job_type: type[J]

    def __init__(self, redis: R, settings: Settings | None = None) -> None:
        """Wrap an existing client (``decode_responses`` must be off); it is not closed here."""
        if redis.connection_pool.connection_kwargs.get("decode_responses"):
            raise ConfigError("StreamQ needs a Redis client with decode_responses=False")
        self.settings = settings or Settings()
        self._redis = redis
        self._owns_redis = False
        self._closed = False
        self._keys = Keys(self.settings.key_prefix)

    @classmethod
    def _connect(cls, url: str) -> R:
        """A new client (with its own pool) on the Redis at ``url``."""
        raise NotImplementedError

    @classmethod
    def from_url(cls, url: str, settings: Settings | None = None) -> Self:
        """A client with its own connection pool to the Redis at ``url``."""
        settings = (settings or Settings()).replace(redis_url=url)
        client = cls(cls._connect(url), settings)
        client._owns_redis = True
        return client

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        env_file: str | os.PathLike[str] | None = None,
    ) -> Self:
        """A client configured by :meth:`Settings.from_env`."""
        settings = Settings.from_env(environ, env_file=env_file)
        return cls.from_url(settings.redis_url, settings)

    def enqueue_chat(
        self,
        user_message: str,
        *,
        system_prompt: str | None = None,
        history: Sequence[Mapping[str, Any]] | None = None,
        model: str | None = None,
        job_id: str | None = None,
        deadline: float | None = None,
        idle_timeout: float | None = None,
        buffered: bool = False,
        upstream_api: Literal["chat", "responses"] | None = None,
        tenant: str | None = None,
        **params: Any,
    ) -> E:
        """Enqueue one user turn, after an optional system prompt and history (await it on the
        async client); the rest as :meth:`enqueue`."""
        messages = chat_messages(user_message, system_prompt=system_prompt, history=history)
        return self.enqueue(
            messages, model, job_id, deadline, idle_timeout, buffered, upstream_api,
            tenant=tenant, **params,
        )  # fmt: skip

    def enqueue(
        self,
        messages: Sequence[Mapping[str, Any]],
        model: str | None = None,
        job_id: str | None = None,
        deadline: float | None = None,
        idle_timeout: float | None = None,
        buffered: bool = False,
        upstream_api: Literal["chat", "responses"] | None = None,
        *,
        tenant: str | None = None,
        **params: Any,
    ) -> E:
        """Enqueue a chat completion over ``messages`` (await it on the async client); extra
        OpenAI parameters travel with it.

        ``job_id`` is the idempotency key: enqueueing an id that exists with the same request
        returns the same job and starts nothing; with a different request it raises
        :class:`~streamq.JobIdConflict`. Invalid input raises :class:`~streamq.InvalidRequest`
        before anything reaches Redis. ``model`` defaults to the worker's ``OPENAI_MODEL``;
        ``deadline`` (total seconds, retries included) and ``idle_timeout`` (seconds without
        upstream data) default to the worker's ``STREAMQ_JOB_TIMEOUT`` and ``STREAMQ_IDLE_TIMEOUT``.
        ``buffered`` asks the upstream for the whole answer at once (``stream=false``): the stream
        then carries each choice in one piece, and the usage of servers that report it only so.
        ``upstream_api`` runs the job against the upstream's Chat Completions or Responses API
        (default: the worker's ``STREAMQ_UPSTREAM_API``).
        ``tenant`` shares the queue fairly with other tenants' jobs (by ``STREAMQ_TENANT_WEIGHTS``;
        None: the default tenant ``anonymous``); a tenant given is also recorded as the job's
        owner, as the gateway records its tenants', and an id another tenant owns raises
        :class:`~streamq.JobIdTaken`.
        """
        self._check_open()
        options: dict[str, Any] = {"deadline": deadline, "idle_timeout": idle_timeout}
        options |= {"buffered": buffered, "upstream_api": upstream_api}
        job_id, request = validated_job(self.settings, messages, model, job_id, params, options)
        return self._submit(job_id, *self._enqueue_call(job_id, request, tenant))

    def enqueue_request(
        self, request: StoredRequest, job_id: str | None = None, *, tenant: str | None = None
    ) -> E:
        """Enqueue a request built (and so validated) by :func:`~streamq.core.request.build_request`
        or :func:`~streamq.responses.request.build_responses_request`; the rest as
        :meth:`enqueue`. The worker validates it again."""
        self._check_open()
        job_id = uuid.uuid4().hex if job_id is None else check_job_id(job_id)
        stored = request.to_json()
        limit = self.settings.max_request_bytes
        if len(stored.encode()) > limit:
            raise InvalidRequest(f"request is over {limit} bytes (STREAMQ_MAX_REQUEST_BYTES)")
        return self._submit(job_id, *self._enqueue_call(job_id, stored, tenant))

    def _enqueue_call(
        self, job_id: str, request: str, tenant: str | None
    ) -> tuple[list[str], list[str | bytes | int]]:
        """All KEYS and ARGV of :data:`scripts.ENQUEUE` for this job of ``tenant``."""
        fair_keys, fair_args = fair_share_call(self.settings, job_id, tenant)
        keys, args = enqueue_call(self.settings, job_id, request, timestamp_ms())
        return keys + fair_keys, args + fair_args

    def _submit(self, job_id: str, keys: list[str], args: list[str | bytes | int]) -> E:
        """Run the enqueue script (``keys``, ``args``) and return the job's handle; its reply
        goes through :func:`enqueued`."""
        raise NotImplementedError

    def job(self, job_id: str) -> J:
        """A handle on an existing job, e.g. one enqueued by another process."""
        self._check_open()
        return self._job_type(
            self._redis,
            self._keys,
            check_job_id(job_id),
            read_timeout=self.settings.read_timeout,
            stream_ttl=self.settings.stream_ttl,
            **self._job_options(),
        )

    def _job_options(self) -> dict[str, Any]:
        """What the shell's ``ChatJob`` takes beyond what every handle does."""
        return {"queue_name": self.settings.queue_name}

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosed("this StreamQ client was closed; create a new one")


class JobBase(Generic[R]):
    """What the async and the sync ``ChatJob`` share: the job's id and key names, the read
    timeout and stream TTL its reads and cancel use, and the queue it waits in."""

    def __init__(
        self,
        redis: R,
        keys: Keys,
        job_id: str,
        *,
        read_timeout: float,
        stream_ttl: int = 86_400,
        queue_name: str | None = None,
    ) -> None:
        """``queue_name`` is the queue the job waits in (``STREAMQ_QUEUE``; the prefix's
        default queue when None)."""
        self.id = job_id
        self._redis = redis
        self._keys = keys
        self._read_timeout = read_timeout
        self._stream_ttl = stream_ttl
        self.queue_name = keys.default_queue() if queue_name is None else queue_name

    def __repr__(self) -> str:
        return f"ChatJob(id={self.id!r})"

    def _timeout(self, timeout: float | None) -> float:
        """``timeout``, or ``STREAMQ_READ_TIMEOUT`` when None."""
        return self._read_timeout if timeout is None else timeout

    def _reader(self, after: str, timeout: float, max_block: float) -> StreamReader:
        """The reader of this job's stream after (checked) cursor ``after``."""
        return StreamReader(self.id, self._keys.events(self.id), after, timeout, max_block)
