"""When a failed attempt is tried again: exponential backoff with jitter, and ``retry-after``."""

from __future__ import annotations

import random
from dataclasses import dataclass

import openai


@dataclass(frozen=True)
class RetryPolicy:
    """Up to ``max_attempts`` attempts, ``base * 2**(n-1)`` apart (jittered), capped."""

    max_attempts: int = 3
    base: float = 0.5
    cap: float = 30.0

    def delay(self, attempt: int, error: BaseException | None = None) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based) before the next one."""
        backoff: float = min(self.cap, self.base * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
        hinted = retry_after(error)
        return min(self.cap, max(backoff, hinted)) if hinted is not None else backoff


def retry_after(error: BaseException | None) -> float | None:
    """The upstream's ``retry-after-ms`` / ``retry-after`` (seconds) header, if it sent one."""
    if not isinstance(error, openai.APIStatusError):
        return None
    headers = error.response.headers
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is not None:
            try:
                return max(0.0, float(value) * scale)
            except ValueError:
                continue  # an HTTP date: fall back to our own backoff
    return None
