"""streamq: LLM chat completions behind an arq job queue, every token streamed through Redis."""

from streamq.consumer import (
    ChatJob,
    ChatResult,
    ChoiceResult,
    EventStream,
    JobStatus,
    ToolCall,
)
from streamq.events import (
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
from streamq.exceptions import (
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
from streamq.multiplexer import Multiplexer
from streamq.producer import StreamQ
from streamq.settings import Settings
from streamq.version import __version__

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
