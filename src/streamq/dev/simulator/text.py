"""Deterministic reply content: the words, reasoning and tool arguments a request gets.

Every value is drawn from a hash of the request's messages, the seed, the choice index and a salt
naming what is drawn, so the same request always gets the same reply and tests can compute it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final

DEFAULT_REPLY_TOKENS: Final = 24
REFUSAL_TEXT: Final = "I'm sorry, but I can't help with that request."

_WORDS: Final = (
    "queue", "stream", "token", "worker", "message", "river", "signal", "packet", "buffer",
    "event", "cursor", "batch", "window", "replica", "shard", "cache", "thread", "socket",
    "channel", "pipeline", "harbor", "lantern", "meadow", "orbit", "quartz", "ember", "tide",
    "falcon", "cedar", "marble", "canyon", "willow",
)  # fmt: skip
_NON_ASCII_WORDS: Final = ("café", "日本", "naïve", "Zürich", "façade", "東京", "🚀", "smörgåsbord")


def messages_key(messages: object) -> str:
    """The canonical JSON of a request's messages, from which all of its reply is drawn."""
    return json.dumps(messages, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def digest(key: str, seed: int, choice: int, salt: str | int) -> bytes:
    """The SHA-256 behind one drawn value (``salt`` names the value)."""
    return hashlib.sha256(f"{seed}\0{choice}\0{salt}\0{key}".encode()).digest()


def rng(key: str, seed: int, choice: int, salt: str) -> random.Random:
    """A random generator seeded by :func:`digest`."""
    return random.Random(int.from_bytes(digest(key, seed, choice, salt)[:8], "big"))


def _words(key: str, seed: int, choice: int, salt: str, length: int) -> Iterator[str]:
    """``length`` tokens of sentence-like text, generated lazily so long replies stay cheap."""
    draw = rng(key, seed, choice, salt)
    capitalize, after_punct = True, True
    for i in range(length):
        if length > 1 and i == length - 1:
            yield "."
            return
        if not after_punct and i < length - 2 and draw.random() < 0.12:
            mark = draw.choice(",,.!?")
            yield mark
            capitalize, after_punct = mark != ",", True
            continue
        # A fixed position always gets a non-ASCII word so every reply exercises UTF-8 paths.
        word = draw.choice(_NON_ASCII_WORDS if i % 11 == 5 else _WORDS)
        if capitalize:
            word = word[0].upper() + word[1:]
        yield word if i == 0 else " " + word
        capitalize, after_punct = False, False


def content_tokens(
    key: str, seed: int, choice: int, length: int, max_tokens: int | None = None
) -> Iterator[str]:
    """The content tokens of one choice: the first ``max_tokens`` of a ``length``-token reply."""
    return itertools.islice(_words(key, seed, choice, "content", length), max_tokens)


def reasoning_length(length: int) -> int:
    """How many reasoning tokens come before a ``length``-token reply in reasoning mode."""
    return max(1, length // 2)


def reasoning_tokens(key: str, seed: int, choice: int, length: int) -> Iterator[str]:
    """The ``reasoning_content`` tokens of one choice in reasoning mode."""
    return _words(key, seed, choice, "reasoning", reasoning_length(length))


def simulated_tokens(
    messages: Sequence[Mapping[str, Any]],
    *,
    seed: int = 0,
    max_tokens: int | None = None,
    choice: int = 0,
    length: int = DEFAULT_REPLY_TOKENS,
) -> list[str]:
    """The content tokens the simulator streams for these messages, one token per chunk.

    ``seed`` is the request's ``seed`` (or the config's), ``length`` the ``reply_tokens``
    option, ``max_tokens`` the request's ``max_tokens``/``max_completion_tokens``.
    """
    return list(content_tokens(messages_key(messages), seed, choice, length, max_tokens))


def simulated_text(
    messages: Sequence[Mapping[str, Any]],
    *,
    seed: int = 0,
    max_tokens: int | None = None,
    choice: int = 0,
    length: int = DEFAULT_REPLY_TOKENS,
) -> str:
    """The reply text: ``"".join(simulated_tokens(...))``."""
    tokens = simulated_tokens(
        messages, seed=seed, max_tokens=max_tokens, choice=choice, length=length
    )
    return "".join(tokens)


def simulated_reasoning(
    messages: Sequence[Mapping[str, Any]],
    *,
    seed: int = 0,
    choice: int = 0,
    length: int = DEFAULT_REPLY_TOKENS,
) -> list[str]:
    """The ``reasoning_content`` tokens of reasoning mode: ``max(1, length // 2)`` of them."""
    return list(reasoning_tokens(messages_key(messages), seed, choice, length))


def _fake_value(schema: object, draw: random.Random) -> Any:
    """A plausible value for a JSON-schema fragment."""
    if not isinstance(schema, dict):
        return draw.choice(_WORDS)
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return draw.choice(schema["enum"])
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind in ("integer", "number"):
        return draw.randint(1, 100) if kind == "integer" else round(draw.uniform(0, 100), 2)
    if kind == "boolean":
        return draw.random() < 0.5
    if kind == "array":
        return [_fake_value(schema.get("items"), draw) for _ in range(draw.randint(1, 3))]
    if kind == "object":
        properties = schema.get("properties")
        if not isinstance(properties, dict):
            return {}
        return {str(name): _fake_value(sub, draw) for name, sub in properties.items()}
    return f"{draw.choice(_NON_ASCII_WORDS)} {draw.choice(_WORDS)}"


def tool_arguments(key: str, tool: Mapping[str, Any], seed: int, choice: int, call: int) -> str:
    """The JSON ``arguments`` of tool call ``call``, made up from the tool's schema."""
    draw = rng(key, seed, choice, f"tool{call}")
    function = tool.get("function")
    parameters = function.get("parameters") if isinstance(function, dict) else None
    if not isinstance(parameters, dict) or not isinstance(parameters.get("properties"), dict):
        parameters = {"type": "object", "properties": {"query": {"type": "string"}}}
    return json.dumps(_fake_value(parameters, draw), ensure_ascii=False)


def simulated_tool_arguments(
    messages: Sequence[Mapping[str, Any]],
    tool: Mapping[str, Any],
    *,
    seed: int = 0,
    choice: int = 0,
    call_index: int = 0,
) -> str:
    """The JSON ``arguments`` of tool call ``call_index``, made up from the tool's schema."""
    return tool_arguments(messages_key(messages), tool, seed, choice, call_index)


def _message_words(message: Mapping[str, Any]) -> int:
    content = message.get("content")
    if isinstance(content, str):
        return len(content.split())
    if isinstance(content, list):
        texts = (p.get("text") for p in content if isinstance(p, dict))
        return sum(len(text.split()) for text in texts if isinstance(text, str))
    return 0


def count_prompt_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    """``usage.prompt_tokens``: words in the message texts plus 3 per message."""
    return sum(_message_words(message) + 3 for message in messages)
