"""Waiting for a condition, never for a guessed length of time.

``poll_until`` checks a condition until it holds and fails with what it was waiting for once
``timeout`` has passed. The timeout is a bound on a hang, not a measure of how long the thing
takes: make it generous (a loaded machine may take ten times as long as an idle one), since a
condition that holds returns at once however large the bound.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable

INTERVAL = 0.02
# Bound on a Python process getting ready (imports, connecting): ~1 s on an idle machine, over
# 12 s seen on a loaded one.
STARTUP = 90.0

Condition = Callable[[], object]
GiveUp = Callable[[], str | None]


class WaitTimeout(AssertionError):
    """A condition did not hold within its bound (or ``give_up`` said it never will)."""


async def poll_until(
    condition: Condition,
    timeout: float,
    what: str,
    *,
    interval: float = INTERVAL,
    give_up: GiveUp | None = None,
) -> float:
    """Await ``condition()`` (sync or async) until it is truthy; the seconds it took.

    ``give_up`` is asked each round; a message from it ends the wait at once (say, the process
    that should get there has exited). Raises :class:`WaitTimeout` after ``timeout`` seconds.
    """
    began = time.monotonic()
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return time.monotonic() - began
        _check(began, timeout, what, give_up)
        await asyncio.sleep(interval)


def poll_until_sync(
    condition: Condition,
    timeout: float,
    what: str,
    *,
    interval: float = INTERVAL,
    give_up: GiveUp | None = None,
) -> float:
    """:func:`poll_until` for code without an event loop (fixtures, threads)."""
    began = time.monotonic()
    while not condition():
        _check(began, timeout, what, give_up)
        time.sleep(interval)
    return time.monotonic() - began


def _check(began: float, timeout: float, what: str, give_up: GiveUp | None) -> None:
    if give_up is not None and (reason := give_up()) is not None:
        raise WaitTimeout(f"gave up waiting for {what}: {reason}")
    if time.monotonic() - began > timeout:
        raise WaitTimeout(f"timed out after {timeout:g}s waiting for {what}")
