"""Planning a reply: every choice of a chat completion, decided from the request up front."""

from __future__ import annotations

import functools
import itertools
import random
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from streamq.dev.simulator import canned, logprobs
from streamq.dev.simulator._http import json_bytes
from streamq.dev.simulator.config import SimulatorConfig
from streamq.dev.simulator.errors import HTTPFailure
from streamq.dev.simulator.request import int_param
from streamq.dev.simulator.text import (
    REFUSAL_TEXT,
    content_tokens,
    count_prompt_tokens,
    digest,
    json_reply,
    json_tokens,
    reasoning_length,
    reasoning_tokens,
    rng,
    tool_arguments,
)


@functools.lru_cache(maxsize=4096)
def _text_delta(kind: str, text: str) -> bytes:
    return json_bytes({kind: text})


@dataclass(slots=True)
class Choice:
    """One choice of a reply; its chunks are generated while streaming, never stored."""

    count: int  # content-bearing chunks, which usage reports as completion tokens
    deltas: Callable[[], Iterator[bytes]]  # the encoded delta object of each of those chunks
    message: Callable[[], dict[str, Any]]  # the non-streaming ``message``
    finish_reason: str
    reasoning_tokens: int = 0
    role_content: bytes = b'""'  # "content" in the role-only first delta
    # ``(delta field, text)`` of each content-bearing chunk, for text choices (log probabilities)
    pieces: Callable[[], Iterator[tuple[str, str]]] | None = None


def cut_pairs(pieces: Iterable[tuple[str, str]]) -> Iterator[tuple[str, str]]:
    """``(field, text)`` pieces cut by UTF-16 code units, as a JavaScript server cuts them: a
    character beyond the BMP that ends a piece leaves its low surrogate to the field's next one."""
    pending: tuple[str, str] | None = None
    for name, text in pieces:
        if pending is not None:
            last_name, last = pending
            if last_name == name and last and ord(last[-1]) > 0xFFFF:
                code = ord(last[-1]) - 0x10000
                high, low = chr(0xD800 + (code >> 10)), chr(0xDC00 + (code & 0x3FF))
                pending, text = (name, last[:-1] + high), low + text
            yield pending
        pending = (name, text)
    if pending is not None:
        yield pending


def _text_choice(
    pieces: Callable[[], Iterator[tuple[str, str]]],
    count: int,
    finish_reason: str,
    reasoning_tokens: int = 0,
    *,
    split_surrogates: bool = False,
) -> Choice:
    """A choice made of ``(delta field, text)`` pieces, such as ``("content", " word")``."""

    def cut() -> Iterator[tuple[str, str]]:
        return cut_pairs(pieces()) if split_surrogates else pieces()

    def deltas() -> Iterator[bytes]:
        return (_text_delta(name, text) for name, text in cut())

    def message() -> dict[str, Any]:
        texts: dict[str, list[str]] = {"content": [], "refusal": [], "reasoning_content": []}
        for name, text in pieces():
            texts[name].append(text)
        joined = {name: "".join(parts) if parts else None for name, parts in texts.items()}
        if joined["reasoning_content"] is None:
            del joined["reasoning_content"]
        return {"role": "assistant", **joined}

    return Choice(count, deltas, message, finish_reason, reasoning_tokens, pieces=cut)


def _resolve_tools(body: Mapping[str, Any], count: int) -> list[dict[str, Any]]:
    """The tool definition used by each of ``count`` calls, honouring a forced ``tool_choice``."""
    tools = body.get("tools")
    if not isinstance(tools, list) or not tools:
        raise HTTPFailure(400, "Simulator mode 'tools' needs a non-empty 'tools'.", param="tools")
    for tool in tools:
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise HTTPFailure(400, "Each tool needs function.name.", param="tools")
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        name = choice["function"].get("name")
        forced = next((t for t in tools if t["function"]["name"] == name), None)
        return [forced or {"type": "function", "function": {"name": str(name)}}] * count
    return [tools[i % len(tools)] for i in range(count)]


def _split_uneven(text: str, draw: random.Random) -> list[str]:
    pieces, start = [], 0
    while start < len(text):
        end = start + draw.randint(1, 7)
        pieces.append(text[start:end])
        start = end
    return pieces


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One planned function call: its arguments and the pieces they are streamed in."""

    call_id: str
    name: str
    arguments: str
    pieces: list[str]


def plan_tool_calls(
    body: Mapping[str, Any], key: str, seed: int, index: int, options: SimulatorConfig
) -> list[ToolCall]:
    """The ``tool_calls`` option's calls of choice ``index`` (``body`` in the chat shape)."""
    calls = []
    for call, tool in enumerate(_resolve_tools(body, options.tool_calls)):
        arguments = tool_arguments(key, tool, seed, index, call)
        pieces = _split_uneven(arguments, rng(key, seed, index, f"split{call}"))
        if options.split_surrogates:
            pieces = [text for _, text in cut_pairs(("arguments", p) for p in pieces)]
        call_id = f"call_{digest(key, seed, index, call).hex()[:24]}"
        calls.append(ToolCall(call_id, tool["function"]["name"], arguments, pieces))
    return calls


def _tool_choice(
    body: Mapping[str, Any], key: str, seed: int, index: int, options: SimulatorConfig
) -> Choice:
    deltas: list[bytes] = []
    calls: list[dict[str, Any]] = []
    for number, call in enumerate(plan_tool_calls(body, key, seed, index, options)):
        function = {"name": call.name, "arguments": call.arguments}
        calls.append({"id": call.call_id, "type": "function", "function": function})
        opening = {"name": call.name, "arguments": ""}
        first = {"index": number, "id": call.call_id, "type": "function", "function": opening}
        deltas.append(json_bytes({"tool_calls": [first]}))
        for piece in call.pieces:
            fragment = {"index": number, "function": {"arguments": piece}}
            deltas.append(json_bytes({"tool_calls": [fragment]}))
    message = {"role": "assistant", "content": None, "refusal": None, "tool_calls": calls}
    return Choice(
        len(deltas), lambda: iter(deltas), lambda: message, "tool_calls", role_content=b"null"
    )


def structured_schema(body: Mapping[str, Any]) -> tuple[bool, object]:
    """Whether ``response_format`` asks for JSON, and the schema the JSON must satisfy (``None``
    for ``json_object``)."""
    response_format = body.get("response_format")
    if not isinstance(response_format, dict):
        return False, None
    kind = response_format.get("type")
    if kind == "json_object":
        return True, None
    if kind != "json_schema":
        return False, None
    json_schema = response_format.get("json_schema")
    return True, json_schema.get("schema") if isinstance(json_schema, dict) else None


def plan_choice(
    body: Mapping[str, Any],
    key: str,
    mode: str,
    seed: int,
    index: int,
    max_tokens: int | None,
    options: SimulatorConfig,
) -> Choice:
    """Choice ``index`` of a chat reply in ``mode`` (``body`` in the chat shape)."""
    if mode == "tools":
        return _tool_choice(body, key, seed, index, options)
    if mode == "demo":
        return _canned_choice(canned.demo_pieces(body["messages"]), max_tokens, options)
    if options.reply_text is not None and mode == "text":
        scripted = [("content", token) for token in canned.text_tokens(options.reply_text)]
        return _canned_choice(scripted, max_tokens, options)
    if mode == "refusal":
        tokens = re.findall(r"\s*\S+", REFUSAL_TEXT)
        return _text_choice(
            lambda: (("refusal", t) for t in tokens),
            len(tokens),
            "stop",
            split_surrogates=options.split_surrogates,
        )
    length = options.reply_tokens
    structured, schema = structured_schema(body)
    # JSON instead of words, as many tokens as it takes
    pieces = json_tokens(json_reply(key, schema, seed, index)) if structured else []
    total = len(pieces) if structured else length
    count = total if max_tokens is None else min(total, max_tokens)
    finish = "stop" if count == total else "length"

    def content() -> Iterator[tuple[str, str]]:
        if structured:
            return (("content", token) for token in pieces[:count])
        return (("content", token) for token in content_tokens(key, seed, index, length, count))

    if mode != "reasoning":
        return _text_choice(content, count, finish, split_surrogates=options.split_surrogates)
    thinking = reasoning_length(length)

    def reasoning_then_content() -> Iterator[tuple[str, str]]:
        thoughts = reasoning_tokens(key, seed, index, length)
        return itertools.chain((("reasoning_content", t) for t in thoughts), content())

    return _text_choice(
        reasoning_then_content,
        thinking + count,
        finish,
        thinking,
        split_surrogates=options.split_surrogates,
    )


def _canned_choice(
    pieces: list[tuple[str, str]], max_tokens: int | None, options: SimulatorConfig
) -> Choice:
    """A choice of pieces written out in advance, cut after ``max_tokens`` of them."""
    count = len(pieces) if max_tokens is None else min(len(pieces), max_tokens)
    kept = pieces[:count]
    thinking = sum(1 for name, _ in kept if name == "reasoning_content")
    return _text_choice(
        lambda: iter(kept),
        count,
        "stop" if count == len(pieces) else "length",
        thinking,
        split_surrogates=options.split_surrogates,
    )


def resolve_tools(mode: str, body: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]]:
    """Mode ``demo`` asked to use a tool is mode ``tools``, with the demo's tool if ``body``
    declares none; any other mode and body stay as they are."""
    if mode == "demo" and canned.wants_tool(body):
        return "tools", canned.with_tool(body)
    return mode, body


def resolve_mode(body: Mapping[str, Any], options: SimulatorConfig) -> str:
    """The reply mode: the ``mode`` option if the request sets it, else tools when
    ``tool_choice`` forces a call, else the configured mode."""
    overrides = body.get("simulator")
    if isinstance(overrides, dict) and "mode" in overrides:
        return options.mode
    tool_choice = body.get("tool_choice")
    if body.get("tools") and (tool_choice == "required" or isinstance(tool_choice, dict)):
        return "tools"
    return options.mode


@dataclass(slots=True)
class Reply:
    """One chat completion, fully decided from the request before anything is sent."""

    model: str
    stream: bool
    include_usage: bool
    options: SimulatorConfig
    fault: str | None
    prompt_tokens: int
    choices: list[Choice]
    top_logprobs: int | None = None  # None: no log probabilities asked for
    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex[:24]}")
    created: int = field(default_factory=lambda: int(time.time()))

    @classmethod
    def build(
        cls,
        body: Mapping[str, Any],
        key: str,
        options: SimulatorConfig,
        fault: str | None,
        seed: int,
    ) -> Reply:
        n = int_param(body, "n", minimum=1) or 1
        if n > 128:
            raise HTTPFailure(400, "'n' must be <= 128.", param="n")
        max_tokens = int_param(body, "max_completion_tokens", minimum=1)
        if max_tokens is None:
            max_tokens = int_param(body, "max_tokens", minimum=1)
        stream_options = body.get("stream_options")
        include_usage = isinstance(stream_options, dict) and stream_options.get("include_usage")
        mode, body = resolve_tools(resolve_mode(body, options), body)
        return cls(
            model=body["model"],
            stream=body.get("stream") is True,
            include_usage=include_usage is True,
            options=options,
            fault=fault,
            prompt_tokens=count_prompt_tokens(body["messages"]),
            choices=[plan_choice(body, key, mode, seed, i, max_tokens, options) for i in range(n)],
            top_logprobs=logprobs.requested(body),
        )

    @property
    def longest(self) -> int:
        """The number of content-bearing chunks of the longest choice."""
        return max(choice.count for choice in self.choices)

    def usage(self) -> dict[str, Any]:
        """The ``usage`` object: completion tokens are the content-bearing chunks of all choices."""
        completion = sum(choice.count for choice in self.choices)
        usage: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
        }
        if reasoning := sum(choice.reasoning_tokens for choice in self.choices):
            usage["completion_tokens_details"] = {"reasoning_tokens": reasoning}
        return usage
