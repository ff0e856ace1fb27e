"""The simulator's server-wide settings, which are also the defaults of the per-request options."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Final

from streamq.core.exceptions import ConfigError
from streamq.dev.simulator.text import DEFAULT_REPLY_TOKENS

DEFAULT_MODELS: Final = ("gpt-4o-mini", "gpt-4.1-mini", "streamq-simulator")
MODES: Final = ("text", "tools", "reasoning", "refusal", "demo")
STREAM_FAULTS: Final = (
    "disconnect", "stall", "silent_end", "no_done", "bad_json", "bad_utf8", "error_event",
)  # fmt: skip
HTTP_FAULT = re.compile(r"http_([45]\d\d)")

# Per-request option name -> accepted JSON types. Config fields of the same name are the defaults.
OPTION_TYPES: Final[dict[str, tuple[type, ...]]] = {
    "tokens_per_second": (int, float, type(None)),
    "time_to_first_token": (int, float),
    "reply_tokens": (int,),
    "mode": (str,),
    "fault": (str, type(None)),
    "after": (int,),
    "stall_seconds": (int, float, type(None)),
    "retry_after": (int, float),
    "fault_times": (int, type(None)),
    "fault_key": (str, type(None)),
    "tool_calls": (int,),
    "role_chunk": (bool,),
    "usage_in_last_choice_chunk": (bool,),
    "split_surrogates": (bool,),
    "reply_text": (str, type(None)),
}


def option_problem(name: str, value: object) -> str | None:
    """Why ``value`` is not acceptable for option ``name``, or None if it is."""
    types = OPTION_TYPES.get(name, (int,))
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        expected = " or ".join("null" if t is type(None) else t.__name__ for t in types)
        return f"{name} must be {expected}, got {value!r}"
    if isinstance(value, float) and not math.isfinite(value):
        return f"{name} must be finite, got {value!r}"
    if name == "mode" and value not in MODES:
        return f"mode must be one of {', '.join(MODES)}, got {value!r}"
    if (
        name == "fault"
        and isinstance(value, str)
        and value not in STREAM_FAULTS
        and not HTTP_FAULT.fullmatch(value)
    ):
        return f"fault must be http_4xx, http_5xx or one of {', '.join(STREAM_FAULTS)}: {value!r}"
    if isinstance(value, int | float) and not isinstance(value, bool):
        if name in ("reply_tokens", "tool_calls", "tokens_per_second") and value <= 0:
            return f"{name} must be > 0, got {value!r}"
        if name != "seed" and value < 0:
            return f"{name} must be >= 0, got {value!r}"
    return None


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    """Server-wide behaviour. Fields after ``api_key`` are defaults of the per-request options.

    ``after`` counts content-bearing chunks (content, reasoning, refusal or tool-call pieces;
    in a Responses stream, delta events) sent before a stream fault fires; ``stall_seconds=None``
    stalls until the client leaves; ``fault_times=None`` applies the fault to every request,
    otherwise only to the first N requests sharing ``fault_key`` (default: the fault name plus
    the request's messages).
    ``error_event`` ends a stream with the API's in-stream error (chat: an ``error`` object;
    Responses: ``response.failed``). Non-streaming requests honour the ``http_*``,
    ``disconnect`` and ``stall`` faults only.
    ``split_surrogates`` cuts text as a JavaScript server does, by UTF-16 code units: every
    character beyond the BMP (an emoji) ends one chunk with its high surrogate and opens the
    next with its low one, each a lone ``\\uXXXX`` escape in the chunk's JSON.
    ``mode="demo"`` is the demo's reply (it names the simulator, echoes the question, shows a
    list, a code block, and a tool call when asked: ``canned``); ``reply_text`` replaces the
    drawn words of mode ``text`` with that text, streamed word by word.
    """

    tokens_per_second: float | None = None
    time_to_first_token: float = 0.0
    seed: int = 0
    reply_tokens: int = DEFAULT_REPLY_TOKENS
    models: tuple[str, ...] = ()
    api_key: str | None = None
    mode: str = "text"
    fault: str | None = None
    after: int = 3
    stall_seconds: float | None = None
    retry_after: float = 1
    fault_times: int | None = None
    fault_key: str | None = None
    tool_calls: int = 1
    role_chunk: bool = True
    usage_in_last_choice_chunk: bool = False
    split_surrogates: bool = False
    reply_text: str | None = None

    def __post_init__(self) -> None:
        for name in ("seed", *OPTION_TYPES):
            problem = option_problem(name, getattr(self, name))
            if problem:
                raise ConfigError(f"SimulatorConfig.{problem}")
        if not all(isinstance(model, str) for model in self.models):
            raise ConfigError(f"SimulatorConfig.models must be a tuple of str: {self.models!r}")
