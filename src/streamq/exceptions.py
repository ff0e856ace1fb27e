"""Errors raised by streamq.

StreamQError
├── ConfigError          a setting has a value streamq cannot use
├── InvalidRequest       a chat request (or job id, or cursor) failed validation
│   └── InvalidCursor    a resume cursor is not a stream entry id
├── JobNotFound          no job with this id exists (never existed, or expired)
├── JobFailed            the job ended with an ``error`` event
├── ReadTimeout          a reader waited longer than its timeout for the next event
└── ClientClosed         a closed ``StreamQ`` client was used
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streamq.events import Cancelled, Error


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


class JobFailed(StreamQError):
    """The job ended with an ``error`` event, available as ``.error``."""

    def __init__(self, job_id: str, error: Error) -> None:
        super().__init__(f"job {job_id!r} failed: [{error.code}] {error.message}")
        self.job_id = job_id
        self.error = error


class JobCancelled(StreamQError):
    """The job ended with a ``cancelled`` event, available as ``.event``."""

    def __init__(self, job_id: str, event: Cancelled) -> None:
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
