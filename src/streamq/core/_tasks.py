"""Stopping background tasks for good."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

logger = logging.getLogger("streamq")


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and wait until every one has ended.

    Cancelling once is not always enough: redis-py can swallow a cancel that lands in the
    middle of a command (redis-py #2028), and a loop that goes on would keep the process alive.
    """
    pending = [task for task in tasks if not task.done()]
    while pending:
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=0.1)
        pending = [task for task in pending if not task.done()]
    for task in tasks:
        if task.done() and not task.cancelled() and (error := task.exception()) is not None:
            logger.warning("background task %s had failed: %r", task.get_name(), error)
