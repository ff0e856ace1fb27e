"""``streamq serve``: the gateway under uvicorn, and with ``--demo`` everything it needs.

``--demo`` adds what is missing, as ``streamq demo`` does: a throwaway ``redis-server`` when
``REDIS_URL`` does not answer, the simulator when no upstream is configured, and an in-process
worker; without tokens configured it serves without authentication.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import uuid
from collections.abc import Callable

import uvicorn

from streamq.gateway.app import create_app
from streamq.gateway.config import GatewayConfig
from streamq.local_redis import LocalRedis, redis_answers
from streamq.settings import Settings
from streamq.simulator import SimulatorConfig, SimulatorThread
from streamq.worker import running_worker

DEMO_TOKENS_PER_SECOND = 40.0
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
            settings = _demo_parts(stack, settings)
        asyncio.run(_serve(settings, config, host, port, demo=demo, on_ready=on_ready))


def _demo_parts(stack: contextlib.ExitStack, settings: Settings) -> Settings:
    if not redis_answers(settings.redis_url):
        server = stack.enter_context(LocalRedis())
        notice(f"{settings.redis_url} is not answering: using a throwaway {server.url}")
        settings = settings.replace(redis_url=server.url)
    if settings.openai_api_key is None and settings.openai_base_url is None:
        config = SimulatorConfig(
            tokens_per_second=DEMO_TOKENS_PER_SECOND, reply_tokens=DEMO_REPLY_TOKENS
        )
        simulator = stack.enter_context(SimulatorThread(config))
        notice(f"no OPENAI_API_KEY: answering with the built-in simulator at {simulator.base_url}")
        settings = settings.replace(openai_base_url=simulator.base_url)
    # A queue of the demo's own, so only the demo's worker takes the demo's jobs.
    return settings.replace(queue_name=f"streamq:demo:{uuid.uuid4().hex[:8]}")


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
        uvicorn.Config(
            app,
            host=host,
            port=port,
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
