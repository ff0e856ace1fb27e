"""The OpenAI JSON of a reply: a ``chat.completion`` object or ``chat.completion.chunk`` events."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any, Final

from streamq.dev.simulator import logprobs
from streamq.dev.simulator._http import json_bytes, sse_chunk
from streamq.dev.simulator.errors import SERVER_ERROR
from streamq.dev.simulator.reply import Choice, Reply

FINGERPRINT: Final = "fp_streamqsim"


def completion(reply: Reply) -> dict[str, Any]:
    """The non-streaming ``chat.completion`` object."""
    choices = [
        {
            "index": i,
            "message": c.message(),
            "logprobs": _choice_logprobs(c, reply.top_logprobs),
            "finish_reason": c.finish_reason,
        }
        for i, c in enumerate(reply.choices)
    ]
    return {
        "id": reply.id,
        "object": "chat.completion",
        "created": reply.created,
        "model": reply.model,
        "system_fingerprint": FINGERPRINT,
        "choices": choices,
        "usage": reply.usage(),
    }


class ChunkEncoder:
    """Pre-encodes what every chunk of one response shares, so a chunk costs a few joins."""

    def __init__(self, reply: Reply) -> None:
        self._reply = reply
        self._head = (
            b'{"id":"%s","object":"chat.completion.chunk","created":%d,"model":%s,'
            b'"system_fingerprint":"%s","choices":['
            % (reply.id.encode(), reply.created, json_bytes(reply.model), FINGERPRINT.encode())
        )
        self._heads = [self._head + b'{"index":%d,"delta":' % i for i in range(len(reply.choices))]
        self._usage_null = b',"usage":null' if reply.include_usage else b""
        self._after_logprobs = b',"finish_reason":null}]' + self._usage_null + b"}"
        self._tail = b',"logprobs":null' + self._after_logprobs

    def delta(self, index: int, delta: bytes, logprobs: bytes | None = None) -> bytes:
        """A chunk carrying the encoded delta object ``delta`` (and ``logprobs`` object) for
        choice ``index``."""
        if logprobs is None:
            return self._heads[index] + delta + self._tail
        return self._heads[index] + delta + b',"logprobs":' + logprobs + self._after_logprobs

    def finish(self, index: int, reason: str, *, with_usage: bool) -> bytes:
        """The chunk that ends choice ``index``, optionally carrying the usage."""
        usage = b',"usage":' + json_bytes(self._reply.usage()) if with_usage else self._usage_null
        end = b'{},"logprobs":null,"finish_reason":"%s"}]%b}' % (reason.encode(), usage)
        return self._heads[index] + end

    def bad_utf8(self) -> bytes:
        """A content chunk whose content ends inside a UTF-8 sequence."""
        return sse_chunk(self.delta(0, b'{"content":"\xe6\x97"}'))

    def failure(self) -> bytes:
        """An ``error`` object in the stream, as OpenAI sends one when generation fails."""
        error = {"message": SERVER_ERROR, "type": "server_error", "param": None, "code": None}
        return sse_chunk(json_bytes({"error": error}))

    def events(self) -> Iterator[tuple[bytes, bool, bool]]:
        """Chunk payloads in order, as ``(payload, carries_content, starts_a_token_step)``."""
        reply, options, choices = self._reply, self._reply.options, self._reply.choices
        if options.role_chunk:
            for i, choice in enumerate(choices):
                role = b'{"role":"assistant","content":%b}' % choice.role_content
                yield self.delta(i, role), False, False
        usage_on_finish = options.usage_in_last_choice_chunk
        last = max(range(len(choices)), key=lambda i: (choices[i].count, i))
        deltas = [choice.deltas() for choice in choices]
        top = reply.top_logprobs
        probs = [_chunk_logprobs(choice, top) for choice in choices]
        # Choices are interleaved: step k carries token k of every choice that still has one.
        for step in range(reply.longest + 1):
            first = step > 0
            for i, choice in enumerate(choices):
                if step < choice.count:
                    yield self.delta(i, next(deltas[i]), next(probs[i])), True, first
                    first = False
                elif step == choice.count:
                    with_usage = usage_on_finish and i == last
                    yield self.finish(i, choice.finish_reason, with_usage=with_usage), False, False
        if reply.include_usage and not usage_on_finish:
            yield self._head + b'],"usage":' + json_bytes(reply.usage()) + b"}", False, False


def _chunk_logprobs(choice: Choice, top: int | None) -> Iterator[bytes | None]:
    """The encoded ``logprobs`` object of each content-bearing chunk (None: ``null``)."""
    if top is None or choice.pieces is None:
        return itertools.repeat(None)
    return (
        None if entry is None else json_bytes(entry)
        for entry in logprobs.per_piece(choice.pieces(), top)
    )


def _choice_logprobs(choice: Choice, top: int | None) -> dict[str, Any] | None:
    if top is None:
        return None
    if choice.pieces is None:
        return {"content": None, "refusal": None}
    return logprobs.joined(choice.pieces(), top)
