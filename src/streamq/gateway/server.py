"""``streamq serve``: the gateway under uvicorn, and with ``--demo`` everything it needs.

``--demo`` adds what is missing, as ``streamq demo`` does: a throwaway ``redis-server`` when
``REDIS_URL`` does not answer, the simulator when no upstream is configured, and an in-process
worker; without tokens configured it serves without authentication.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Callable

import uvicorn

from streamq.demo import throwaway_parts
from streamq.gateway.app import create_app
from streamq.gateway.config import GatewayConfig
from streamq.gateway.timeouts import uvicorn_config
from streamq.settings import Settings
from streamq.worker import running_worker

DEMO_REPLY_TOKENS = 120
# Seconds open event streams get at shutdown; clients resume elsewhere with Last-Event-ID.
SHUTDOWN_GRACE = 5


def serve(
    settings: Settings,
    config: GatewayConfig,
    host: str,
    port: int,
    *,
    demo: bool = False,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve the gateway until interrupted (SIGINT/SIGTERM)."""
    with contextlib.ExitStack() as stack:
        if demo:
            settings = throwaway_parts(stack, settings, DEMO_REPLY_TOKENS, notice)
        asyncio.run(_serve(settings, config, host, port, demo=demo, on_ready=on_ready))


async def _serve(
    settings: Settings,
    config: GatewayConfig,
    host: str,
    port: int,
    *,
    demo: bool,
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
    async with contextlib.AsyncExitStack() as stack:
        if demo:
            await stack.enter_async_context(running_worker(settings))
        task = asyncio.create_task(server.serve())
        while not server.started and not task.done():  # noqa: ASYNC110 (uvicorn has no event)
            await asyncio.sleep(0.05)
        if server.started and on_ready is not None:
            on_ready(f"http://{host}:{port}/")
        await task


def notice(message: str) -> None:
    """One line on stderr."""
    print(f"streamq serve: {message}", file=sys.stderr, flush=True)
