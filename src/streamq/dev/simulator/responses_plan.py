"""Planning a Responses API reply: its output items, decided from the request up front.

The reply is the one the equivalent chat request gets (see ``responses_request``): the same
text, reasoning, refusal or tool calls. Reasoning is on when the ``mode`` option says so or the
request has a ``reasoning`` object; ``max_output_tokens`` counts reasoning and text tokens as
OpenAI does, and a reply cut by it is ``incomplete``. Tool calls are not cut, as in chat.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from streamq.dev.simulator.config import SimulatorConfig
from streamq.dev.simulator.reply import (
    ToolCall,
    plan_choice,
    plan_tool_calls,
    resolve_mode,
    resolve_tools,
)
from streamq.dev.simulator.request import int_param
from streamq.dev.simulator.responses_request import chat_request, wants_reasoning
from streamq.dev.simulator.text import count_prompt_tokens

# chat delta field -> (output item type, content part type)
_KINDS = {
    "reasoning_content": ("reasoning", "summary_text"),
    "content": ("message", "output_text"),
    "refusal": ("message", "refusal"),
}


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def joined(pieces: Iterable[str]) -> str:
    """The text of streamed pieces, with surrogate pairs that ``split_surrogates`` cut rejoined."""
    return "".join(pieces).encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")


@dataclass(slots=True)
class OutputItem:
    """One item of ``output``: a reasoning summary, a message part or a function call."""

    type: str  # "reasoning", "message" or "function_call"
    part: str  # "summary_text", "output_text", "refusal" or "arguments"
    pieces: list[str]  # the deltas, one token each
    call: ToolCall | None = None
    id: str = ""

    def __post_init__(self) -> None:
        if not self.id:
            prefix = {"reasoning": "rs", "message": "msg", "function_call": "fc"}[self.type]
            self.id = _new_id(prefix)

    @property
    def text(self) -> str:
        """The item's whole text: summary, message text, refusal or call arguments."""
        return self.call.arguments if self.call is not None else joined(self.pieces)


@dataclass(slots=True)
class ResponsePlan:
    """One Responses API reply, fully decided from the request before anything is sent."""

    body: Mapping[str, Any]
    stream: bool
    options: SimulatorConfig
    fault: str | None
    input_tokens: int
    items: list[OutputItem]
    incomplete: bool
    id: str = field(default_factory=lambda: _new_id("resp"))
    created_at: int = field(default_factory=lambda: int(time.time()))

    @classmethod
    def build(
        cls,
        body: Mapping[str, Any],
        key: str,
        options: SimulatorConfig,
        fault: str | None,
        seed: int,
    ) -> ResponsePlan:
        """Plan the reply to ``body``; ``key`` is its chat messages' key."""
        chat: Mapping[str, Any] = chat_request(body)
        limit = int_param(body, "max_output_tokens", minimum=1)
        mode, chat = resolve_tools(resolve_mode(chat, options), chat)
        if mode == "text" and wants_reasoning(body) and options.reply_text is None:
            mode = "reasoning"
        if mode == "tools":
            calls = plan_tool_calls(chat, key, seed, 0, options)
            items = [OutputItem("function_call", "arguments", c.pieces, c) for c in calls]
            incomplete = False
        else:
            choice = plan_choice(chat, key, mode, seed, 0, None, options)
            assert choice.pieces is not None  # text modes always have pieces
            items = [
                OutputItem(*_KINDS[name], [text for _, text in group])
                for name, group in itertools.groupby(
                    itertools.islice(choice.pieces(), limit), key=lambda piece: piece[0]
                )
            ]
            incomplete = limit is not None and choice.count > limit
        return cls(
            body=body,
            stream=body.get("stream") is True,
            options=options,
            fault=fault,
            input_tokens=count_prompt_tokens(chat["messages"]),
            items=items,
            incomplete=incomplete,
        )

    @property
    def output_tokens(self) -> int:
        """Every streamed delta counts as one output token."""
        return sum(len(item.pieces) for item in self.items)

    def usage(self) -> dict[str, Any]:
        """The ``usage`` object of the finished response."""
        reasoning = sum(len(item.pieces) for item in self.items if item.type == "reasoning")
        return {
            "input_tokens": self.input_tokens,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": self.output_tokens,
            "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": self.input_tokens + self.output_tokens,
        }
