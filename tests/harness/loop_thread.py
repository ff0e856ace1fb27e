"""An event loop in a daemon thread, for what a test runs beside its own loop or blocking code.

Built on :class:`streamq.core._loop_thread.LoopThread` (which the simulator's server thread
uses too):

- :class:`BackgroundLoop` adds :meth:`~BackgroundLoop.call` (run a coroutine on the thread's
  loop from any thread) and re-raises from :meth:`~BackgroundLoop.stop` whatever ended the
  thread's work early, rather than only logging it;
- :class:`ContextThread` holds an async context manager open on that loop between ``start``
  and ``stop``: ``with worker_thread(settings):`` runs a worker while the test blocks freely.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from typing import Any, Generic, TypeVar

from arq import Worker

from streamq import Settings
from streamq.core._loop_thread import LoopThread
from streamq.worker.arq_worker import running_worker

T = TypeVar("T")

CALL_TIMEOUT = 60.0  # a bound on a hang: a call normally returns in milliseconds


class BackgroundLoop(LoopThread):
    """A :class:`LoopThread` whose subclasses implement :meth:`run` (not ``serve``)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._crash: Exception | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """The thread's work: set ``self._ready`` once it is up, return when ``stop`` is set."""
        raise NotImplementedError

    async def serve(self, stop: asyncio.Event) -> None:
        try:
            await self.run(stop)
        except Exception as exc:
            if self._ready.is_set():
                self._crash = exc  # re-raised by stop(); start() re-raises earlier failures
            raise

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float = CALL_TIMEOUT) -> T:
        """Run ``coroutine`` on the thread's loop and return its result (from another thread)."""
        if self._loop is None or self._thread is None:
            coroutine.close()
            raise RuntimeError(f"{type(self).__name__} is not running")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def stop(self) -> None:
        """Finish the thread's work and join it; raise what crashed it after it started."""
        super().stop()
        crash, self._crash = self._crash, None
        if crash is not None:
            raise crash


class ContextThread(BackgroundLoop, Generic[T]):
    """``with ContextThread(make_context) as thread: thread.value`` enters ``make_context()`` on
    the thread's loop, and leaves it on exit (its own cleanup runs on that loop)."""

    def __init__(
        self, context: Callable[[], AbstractAsyncContextManager[T]], name: str = "test-loop"
    ) -> None:
        super().__init__(name)
        self._context = context
        self._value: list[T] = []  # what the context gave, while it is entered

    @property
    def value(self) -> T:
        """What the context manager gave (while the thread runs)."""
        if not self._value:
            raise RuntimeError(f"{self._name} is not running")
        return self._value[0]

    async def run(self, stop: asyncio.Event) -> None:
        async with self._context() as value:
            self._value.append(value)
            self._ready.set()
            try:
                await stop.wait()
            finally:
                self._value.clear()


def worker_thread(settings: Settings) -> ContextThread[Worker]:
    """An in-process worker for ``settings`` on a loop of its own: the test's thread may block
    on Redis freely (sync clients, examples) while the worker serves."""
    return ContextThread(lambda: running_worker(settings), name="streamq-test-worker")
