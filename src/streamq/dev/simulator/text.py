"""Deterministic reply content: the words, reasoning, tool arguments and JSON a request gets.

Every value is drawn from a hash of the request's messages, the seed, the choice index and a salt
naming what is drawn, so the same request always gets the same reply and tests can compute it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import re
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


def _fake_value(schema: object, draw: random.Random, root: object = None) -> Any:
    """A plausible value for a JSON-schema fragment; ``root`` is the whole schema, against which
    local ``$ref`` pointers (``#/$defs/Name``) resolve."""
    root = schema if root is None else root
    if not isinstance(schema, dict):
        return draw.choice(_WORDS)
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#"):
        target: object = root
        for name in filter(None, ref[1:].split("/")):
            target = target.get(name) if isinstance(target, dict) else None
        return _fake_value(target, draw, root)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return draw.choice(schema["enum"])
    for combinator in ("anyOf", "oneOf", "allOf"):
        variants = schema.get(combinator)
        if isinstance(variants, list) and variants:
            usable = [v for v in variants if not (isinstance(v, dict) and v.get("type") == "null")]
            return _fake_value(draw.choice(usable or variants), draw, root)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind is None and isinstance(schema.get("properties"), dict):
        kind = "object"
    if kind in ("integer", "number"):
        return draw.randint(1, 100) if kind == "integer" else round(draw.uniform(0, 100), 2)
    if kind == "boolean":
        return draw.random() < 0.5
    if kind == "null":
        return None
    if kind == "array":
        least, most = schema.get("minItems"), schema.get("maxItems")
        least = least if isinstance(least, int) else 1
        most = max(least, most if isinstance(most, int) else 3)
        count = draw.randint(least, most)
        return [_fake_value(schema.get("items"), draw, root) for _ in range(count)]
    if kind == "object":
        properties = schema.get("properties")
        properties = properties if isinstance(properties, dict) else {}
        required = schema.get("required")
        missing = [n for n in required if n not in properties] if isinstance(required, list) else []
        value = {str(name): _fake_value(sub, draw, root) for name, sub in properties.items()}
        return value | {str(name): _fake_value(None, draw, root) for name in missing}
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


# The schema of a ``json_object`` reply, which names none.
_JSON_OBJECT_SCHEMA: Final = {
    "type": "object",
    "properties": {"answer": {"type": "string"}, "confidence": {"type": "number"}},
}
# One JSON token: a structural character, or a run of other non-blank text, with the blanks before.
_JSON_TOKEN: Final = re.compile(r"\s*(?:[{}\[\],:]|[^\s{}\[\],:]+)")


def json_reply(key: str, schema: object, seed: int, choice: int) -> str:
    """The JSON text of a structured-output reply: a value satisfying ``schema`` (a small object
    for ``json_object``, which has none)."""
    if not isinstance(schema, dict):
        schema = _JSON_OBJECT_SCHEMA
    return json.dumps(_fake_value(schema, rng(key, seed, choice, "json")), ensure_ascii=False)


def json_tokens(text: str) -> list[str]:
    """The pieces a JSON reply streams in, one token each: ``"".join`` gives ``text`` back."""
    return _JSON_TOKEN.findall(text)


def simulated_json(
    messages: Sequence[Mapping[str, Any]],
    schema: Mapping[str, Any] | None,
    *,
    seed: int = 0,
    choice: int = 0,
) -> str:
    """The reply text to a structured-output request: JSON made up from ``schema`` (the
    ``json_schema``'s ``schema``; ``None`` for ``json_object``)."""
    plain = None if schema is None else dict(schema)
    return json_reply(messages_key(messages), plain, seed, choice)


def simulated_json_tokens(
    messages: Sequence[Mapping[str, Any]],
    schema: Mapping[str, Any] | None,
    *,
    seed: int = 0,
    choice: int = 0,
) -> list[str]:
    """The content tokens of a structured-output reply, one per chunk (and completion token)."""
    return json_tokens(simulated_json(messages, schema, seed=seed, choice=choice))


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
