"""Errors raised by streamq.

StreamQError
├── ConfigError          a setting has a value streamq cannot use
├── InvalidRequest       a chat request (or job id, or cursor) failed validation
│   └── InvalidCursor    a resume cursor is not a stream entry id
├── JobNotFound          no job with this id exists (never existed, or expired)
├── JobIdConflict        a job id (idempotency key) was reused for a different request
├── JobIdTaken           a job id given with a tenant is another tenant's job
├── JobFailed            the job ended with an ``error`` event
├── JobCancelled         the job ended with a ``cancelled`` event
├── JobRestarted         a new attempt replaced the one whose text was already yielded
├── ReadTimeout          a reader waited longer than its timeout for the next event
├── ClientClosed         a closed ``StreamQ`` client was used
├── EventDecodeError     a stream entry does not follow the wire format
└── (inside a worker, never raised to a client)
    ├── Fenced           another attempt took over the job, or it ended: stop writing
    ├── PublishFailed    entries could not be written to Redis within the retry window
    └── EntryRejected    this job's entry cannot be encoded, or Redis refused it

Events are data, not errors: :class:`streamq.Error` is the ``error`` event that
:class:`JobFailed` carries. This module imports nothing of streamq's, so every part can use it.
"""

from __future__ import annotations

from typing import Any, Protocol


class ErrorEvent(Protocol):
    """What :class:`JobFailed` carries: the job's ``error`` event (:class:`streamq.Error`)."""

    @property
    def code(self) -> str: ...
    @property
    def message(self) -> str: ...
    @property
    def retryable(self) -> bool: ...
    @property
    def retry_after(self) -> float | None: ...
    @property
    def cursor(self) -> str: ...
    @property
    def attempt(self) -> int: ...


class CancelledEvent(Protocol):
    """What :class:`JobCancelled` carries: the ``cancelled`` event (:class:`streamq.Cancelled`)."""

    @property
    def reason(self) -> str: ...
    @property
    def deltas(self) -> int: ...
    @property
    def usage(self) -> dict[str, Any] | None: ...
    @property
    def cursor(self) -> str: ...
    @property
    def attempt(self) -> int: ...


class StreamQError(Exception):
    """Base class of every error streamq raises."""


class ConfigError(StreamQError, ValueError):
    """A setting has a value streamq cannot use; the message names it and the accepted values."""


class InvalidRequest(StreamQError, ValueError):
    """A chat request failed validation; nothing was enqueued."""


class InvalidCursor(InvalidRequest):
    """A cursor is not a Redis stream entry id such as ``1700000000000-0``."""


class JobNotFound(StreamQError, LookupError):
    """No job with this id exists: it never did, or its stream expired."""

    def __init__(self, job_id: str, reason: str = "never enqueued, or expired") -> None:
        super().__init__(f"no job with id {job_id!r} ({reason})")
        self.job_id = job_id


class JobIdConflict(StreamQError, ValueError):
    """A job id, the idempotency key, was already used for a different request.

    The same request again returns the same job; another request needs another id (as with
    Stripe's idempotency keys). Nothing was enqueued.
    """

    def __init__(self, job_id: str) -> None:
        super().__init__(
            f"job id {job_id!r} was already used for a different request: use a new id for a "
            "new request (the same request again returns the same job)"
        )
        self.job_id = job_id


class JobIdTaken(StreamQError, ValueError):
    """A job id enqueued with a tenant is another tenant's job (its recorded owner, as the
    gateway records its tenants'). Nothing was enqueued."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job id {job_id!r} is another tenant's job: use another id")
        self.job_id = job_id


class JobFailed(StreamQError):
    """The job ended with an ``error`` event, available as ``.error``."""

    def __init__(self, job_id: str, error: ErrorEvent) -> None:
        super().__init__(f"job {job_id!r} failed: [{error.code}] {error.message}")
        self.job_id = job_id
        self.error = error


class JobCancelled(StreamQError):
    """The job ended with a ``cancelled`` event, available as ``.event``."""

    def __init__(self, job_id: str, event: CancelledEvent) -> None:
        super().__init__(f"job {job_id!r} was cancelled")
        self.job_id = job_id
        self.event = event


class JobRestarted(StreamQError):
    """A new attempt replaced the one whose text was already yielded.

    Discard that text; ``job.text(after=exc.cursor)`` streams the new attempt from its start.
    """

    def __init__(self, job_id: str, attempt: int, cursor: str) -> None:
        super().__init__(f"job {job_id!r} restarted as attempt {attempt}; discard earlier text")
        self.job_id = job_id
        self.attempt = attempt
        self.cursor = cursor


class ReadTimeout(StreamQError, TimeoutError):
    """A reader waited longer than its timeout without seeing a new event."""


class ClientClosed(StreamQError, RuntimeError):
    """The ``StreamQ`` client was closed and cannot be used again."""


class EventDecodeError(StreamQError):
    """A stream entry does not follow the wire format."""


class Fenced(StreamQError):
    """Another attempt took over this job, or it already ended: this writer must stop."""


class PublishFailed(StreamQError):
    """Entries could not be written to Redis within the retry window."""


class EntryRejected(StreamQError):
    """This job's entry cannot be written: it cannot be encoded, or Redis refused it."""
