"""An event loop of its own in a daemon thread, for servers that tests and demos run aside."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from types import TracebackType
from typing import Self

logger = logging.getLogger("streamq")


class LoopThread:
    """Runs :meth:`serve` on its own event loop in a daemon thread until :meth:`stop`.

    ``serve`` sets ``self._ready`` once it listens and returns when ``stop`` is set;
    :meth:`start` returns at that point, or raises what kept ``serve`` from getting there.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    async def serve(self, stop: asyncio.Event) -> None:
        """The thread's work: listen, set ``self._ready``, run until ``stop`` is set."""
        raise NotImplementedError

    def start(self) -> Self:
        """Start the thread; return once it serves, or raise why it could not."""
        if self._thread is not None:
            raise RuntimeError(f"{type(self).__name__} already started")
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            self._thread = None
            raise self._error
        return self

    def stop(self) -> None:
        """Ask :meth:`serve` to finish and join the thread."""
        if self._thread is None:
            return
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already finished
                self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join()
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception as exc:
            if self._ready.is_set():
                logger.exception("%s crashed", self._name)
            else:
                self._error = exc  # re-raised by start()
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        await self.serve(self._stop)
