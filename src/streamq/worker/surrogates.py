"""Joining UTF-16 surrogate pairs that an upstream split between two chunks.

A server written in JavaScript that cuts text by string index cuts by UTF-16 code units, so an
emoji can arrive as ``"\\ud83d"`` at the end of one chunk and ``"\\ude80"`` at the start of the
next. Each chunk's JSON decodes to a string with a lone surrogate, which is not Unicode text:
it cannot be encoded as UTF-8, so it could not be written to Redis nor sent to a reader.
"""

from __future__ import annotations

import re
from collections.abc import Hashable

REPLACEMENT = "\ufffd"
_SURROGATE = re.compile("[\ud800-\udfff]")


def _is_high(char: str) -> bool:
    return "\ud800" <= char <= "\udbff"


def repair(text: str) -> str:
    """``text`` with surrogate pairs joined into their characters and lone ones as U+FFFD."""
    if text.isascii() or not _SURROGATE.search(text):
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


class SurrogateJoiner:
    """Holds a trailing high surrogate of each text field until that field's next piece."""

    def __init__(self) -> None:
        self._held: dict[Hashable, str] = {}

    def join(self, field: Hashable, piece: str) -> str:
        """The text of ``piece`` that is complete now (possibly ``""``); the rest is held."""
        held = self._held.pop(field, None)
        if held is not None:
            piece = held + piece
        elif piece.isascii():
            return piece
        if piece and _is_high(piece[-1]):
            self._held[field] = piece[-1]
            piece = piece[:-1]
        return repair(piece)

    def rest(self) -> list[tuple[Hashable, str]]:
        """What is still held when the stream ends, each as U+FFFD; forgets it."""
        rest = [(field, REPLACEMENT) for field in self._held]
        self._held.clear()
        return rest
