"""The HTTP gateway under a real uvicorn server, on a loop thread of its own, for any suite."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import uvicorn
from starlette.applications import Starlette

from streamq import Settings
from streamq.dev.local_redis import free_port
from streamq.gateway.timeouts import uvicorn_config
from streamq.worker.arq_worker import running_worker
from tests.harness.loop_thread import ContextThread
from tests.harness.waiting import STARTUP, poll_until

TOKEN_A = "tenant-a-secret-token-0001"
TOKEN_B = "tenant-b-secret-token-0002"
TOKENS = {TOKEN_A: "tenant-a", TOKEN_B: "tenant-b"}


class GatewayThread(ContextThread[None]):
    """``with GatewayThread(app) as server: server.url`` serves ``app`` with uvicorn on a free
    loopback port, on a thread and event loop of its own (plus a worker, given ``worker``)."""

    def __init__(self, app: Starlette, *, worker: Settings | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn_config(
            app, "127.0.0.1", self.port, log_config=None, lifespan="on",
            timeout_graceful_shutdown=2,
        )  # fmt: skip
        self.server = uvicorn.Server(config)
        self._worker = worker
        super().__init__(self._serving, name="gateway")

    @contextlib.asynccontextmanager
    async def _serving(self) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            if self._worker is not None:
                await stack.enter_async_context(running_worker(self._worker))
            task = asyncio.create_task(self.server.serve())
            try:
                await poll_until(
                    lambda: self.server.started or task.done(), STARTUP, "uvicorn to listen"
                )
                yield
            finally:
                self.server.should_exit = True
                await task

    def start(self) -> GatewayThread:
        super().start()
        if not self.server.started:  # uvicorn exits (SystemExit) when it cannot listen
            self.stop()
            raise RuntimeError(f"the gateway did not start on port {self.port}")
        return self
