"""Token log probabilities, for requests that ask for ``logprobs``.

Each content or refusal token gets an entry as OpenAI shapes it (``token``, ``logprob``,
``bytes``, ``top_logprobs``); the values are drawn from the token and its position, so the
same reply always carries the same ones. Reasoning and tool-call chunks carry none.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final

from streamq.dev.simulator.errors import HTTPFailure
from streamq.dev.simulator.text import digest

MAX_TOP_LOGPROBS: Final = 20
FIELDS: Final = {"content": "content", "refusal": "refusal"}  # delta field -> logprobs field


def requested(body: Mapping[str, Any]) -> int | None:
    """How many ``top_logprobs`` each token lists, or None when ``logprobs`` is not asked for."""
    if body.get("logprobs") is not True:
        return None
    top = body.get("top_logprobs")
    if top is None:
        return 0
    if not isinstance(top, int) or isinstance(top, bool) or not 0 <= top <= MAX_TOP_LOGPROBS:
        message = f"'top_logprobs' must be an integer from 0 to {MAX_TOP_LOGPROBS}."
        raise HTTPFailure(400, message, param="top_logprobs")
    return top


def token_entry(token: str, position: int, top: int) -> dict[str, Any]:
    """The log probability entry of ``token``, the ``position``-th piece of its choice."""
    draw = digest(token, 0, position, "logprob")
    logprob = -round(int.from_bytes(draw[:4], "big") / 2**32 * 2, 6)
    alternatives = [_entry(token, logprob)]
    alternatives += [_entry(f" alt{rank}", round(logprob - rank, 6)) for rank in range(1, top)]
    return {**_entry(token, logprob), "top_logprobs": alternatives[:top]}


def per_piece(pieces: Iterable[tuple[str, str]], top: int) -> Iterator[dict[str, Any] | None]:
    """The ``logprobs`` object of each ``(delta field, text)`` piece's chunk."""
    for position, (name, text) in enumerate(pieces):
        kind = FIELDS.get(name)
        if kind is None:
            yield None
            continue
        other = "refusal" if kind == "content" else "content"
        yield {kind: [token_entry(text, position, top)], other: None}


def joined(pieces: Iterable[tuple[str, str]], top: int) -> dict[str, Any]:
    """The ``logprobs`` object of a whole (non-streamed) choice."""
    entries: dict[str, list[dict[str, Any]] | None] = {"content": None, "refusal": None}
    for chunk in per_piece(pieces, top):
        for kind, tokens in (chunk or {}).items():
            if tokens is not None:
                entries[kind] = (entries[kind] or []) + tokens
    return entries


def _entry(token: str, logprob: float) -> dict[str, Any]:
    return {
        "token": token,
        "logprob": logprob,
        "bytes": list(token.encode("utf-8", "surrogatepass")),
    }
