"""An in-process worker on an event loop of its own thread, for tests of blocking code."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator

from streamq import Settings
from streamq.worker import running_worker


@contextlib.contextmanager
def worker_thread(settings: Settings) -> Iterator[None]:
    """A worker running while the block runs; the caller's thread may block on Redis freely."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="streamq-test-worker", daemon=True)
    thread.start()
    worker = running_worker(settings)
    try:
        asyncio.run_coroutine_threadsafe(worker.__aenter__(), loop).result(timeout=30)
        try:
            yield
        finally:
            stop = worker.__aexit__(None, None, None)
            asyncio.run_coroutine_threadsafe(stop, loop).result(timeout=60)
    finally:
        asyncio.run_coroutine_threadsafe(loop.shutdown_asyncgens(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
