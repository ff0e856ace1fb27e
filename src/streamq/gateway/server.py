"""``streamq serve``: the gateway under uvicorn until a signal stops it.

``alongside`` runs something for as long as the server does (``streamq serve --demo`` runs an
in-process worker that way: :func:`streamq.dev.demo.serve_demo`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import uvicorn

from streamq.core._tasks import cancel_and_wait
from streamq.core.garbage_collection import pace_for_service
from streamq.core.settings import Settings
from streamq.gateway.app import create_app
from streamq.gateway.config import GatewayConfig
from streamq.gateway.memory import give_back_after_crowds
from streamq.gateway.sse import forget_frames
from streamq.gateway.timeouts import uvicorn_config

# Seconds open event streams get at shutdown; clients resume elsewhere with Last-Event-ID.
SHUTDOWN_GRACE = 5


def serve(
    settings: Settings,
    config: GatewayConfig,
    host: str,
    port: int,
    *,
    alongside: Callable[[Settings], AbstractAsyncContextManager[Any]] | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve the gateway until interrupted (SIGINT/SIGTERM), with ``alongside(settings)``
    entered on the same loop for as long."""
    pace_for_service()
    asyncio.run(_serve(settings, config, host, port, alongside=alongside, on_ready=on_ready))


async def _serve(
    settings: Settings,
    config: GatewayConfig,
    host: str,
    port: int,
    *,
    alongside: Callable[[Settings], AbstractAsyncContextManager[Any]] | None,
    on_ready: Callable[[str], None] | None,
) -> None:
    app = create_app(settings, config)
    server = uvicorn.Server(
        uvicorn_config(
            app,
            host,
            port,
            log_config=None,
            lifespan="on",
            timeout_graceful_shutdown=SHUTDOWN_GRACE,
        )
    )
    connections = server.server_state.connections
    keeper = asyncio.create_task(
        give_back_after_crowds(lambda: len(connections), forget=forget_frames)
    )
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(cancel_and_wait, [keeper])
        if alongside is not None:
            await stack.enter_async_context(alongside(settings))
        task = asyncio.create_task(server.serve())
        while not server.started and not task.done():  # noqa: ASYNC110 (uvicorn has no event)
            await asyncio.sleep(0.05)
        if server.started and on_ready is not None:
            on_ready(f"http://{host}:{port}/")
        await task
