"""streamq: LLM chat completions behind an arq job queue, every token streamed through Redis."""

from streamq.client import StreamQ
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
    UnknownEvent,
)
from streamq.core.exceptions import (
    ClientClosed,
    ConfigError,
    InvalidCursor,
    InvalidRequest,
    JobCancelled,
    JobFailed,
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
    "JobNotFound",
    "JobRestarted",
    "JobStatus",
    "Meta",
    "Multiplexer",
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
