"""streamq: LLM chat completions behind an arq job queue, every token streamed through Redis.

The public API, by kind:

- clients: :class:`StreamQ`, :class:`ChatJob`, :class:`EventStream`, :class:`Multiplexer`,
  :class:`Settings` (blocking code: :mod:`streamq.sync`);
- results: :class:`ChatResult`, :class:`ChoiceResult`, :class:`ToolCall`, :class:`JobStatus`;
- events, the entries of a job's stream (data, not exceptions): :class:`Event` and its kinds
  :class:`Start`, :class:`Meta`, :class:`Delta`, :class:`Reasoning`, :class:`Refusal`,
  :class:`ToolCallDelta`, :class:`Reset`, :class:`Queued`, :class:`Done`, :class:`Error` (the
  ``error`` event), :class:`Cancelled`, :class:`UnknownEvent`;
- exceptions, all under :class:`StreamQError` (the tree: :mod:`streamq.core.exceptions`).
"""

from streamq.client import StreamQ
from streamq.core.events import (
    Cancelled,
    Delta,
    Done,
    Error,
    Event,
    Meta,
    Queued,
    Reasoning,
    Refusal,
    Reset,
    Start,
    ToolCallDelta,
    UnknownEvent,
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
    JobNotFound,
    JobRestarted,
    ReadTimeout,
    StreamQError,
)
from streamq.core.settings import Settings
from streamq.core.version import __version__
from streamq.job import (
    ChatJob,
    ChatResult,
    ChoiceResult,
    EventStream,
    JobStatus,
    ToolCall,
)
from streamq.multiplexer import Multiplexer

__all__ = [
    "Cancelled",
    "ChatJob",
    "ChatResult",
    "ChoiceResult",
    "ClientClosed",
    "ConfigError",
    "Delta",
    "Done",
    "Error",
    "Event",
    "EventStream",
    "InvalidCursor",
    "InvalidRequest",
    "JobCancelled",
    "JobFailed",
    "JobIdConflict",
    "JobIdTaken",
    "JobNotFound",
    "JobRestarted",
    "JobStatus",
    "Meta",
    "Multiplexer",
    "Queued",
    "ReadTimeout",
    "Reasoning",
    "Refusal",
    "Reset",
    "Settings",
    "Start",
    "StreamQ",
    "StreamQError",
    "ToolCall",
    "ToolCallDelta",
    "UnknownEvent",
    "__version__",
]
