"""Read timeouts for slow clients: a request's head and its body each have a deadline.

uvicorn bounds only the idle time between two requests (``timeout_keep_alive``); a client that
sends its head one byte at a time, or never sends it, keeps its connection (and its slot in
every limit) forever. :func:`uvicorn_config` serves the gateway with :class:`HeadTimeoutH11`,
which closes a connection whose request head is not complete ``header_timeout`` seconds after
the server started waiting for it. :class:`BodyTimeout`, part of every app (also when you serve
or mount it yourself), answers **408** and closes the connection when a body is not complete
``body_timeout`` seconds after the request started.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from streamq.gateway.config import GatewayConfig
from streamq.gateway.errors import ApiError

logger = logging.getLogger("streamq.gateway")


class HeadTimeoutH11(H11Protocol):
    """uvicorn's h11 protocol, closing connections whose request head comes too slowly.

    The clock starts when the connection opens and again when a response ends (with the
    shorter ``timeout_keep_alive`` still closing idle connections first); it stops when the
    whole head has arrived. Use :func:`head_timeout_protocol` for a given timeout.
    """

    header_timeout: float = 10.0
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._watch_head()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch_head()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def _watch_head(self) -> None:
        # No request in progress (none yet, or the last one answered): a head is due. After
        # an upgrade the connection belongs to the WebSocket protocol.
        waiting = self.cycle is None or self.cycle.response_complete
        upgraded = self.transport.get_protocol() is not self
        if not waiting or upgraded or self.transport.is_closing():
            self._stop_head_timer()
        elif self._head_timer is None:
            self._head_timer = self.loop.call_later(self.header_timeout, self._head_too_slow)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            logger.debug("closing %s: no request head within %ss", self.client, self.header_timeout)
            self.transport.close()


def head_timeout_protocol(seconds: float) -> type[HeadTimeoutH11]:
    """:class:`HeadTimeoutH11` with a head deadline of ``seconds``."""
    return type("HeadTimeoutH11", (HeadTimeoutH11,), {"header_timeout": seconds})


def uvicorn_config(app: Starlette, host: str, port: int, **options: Any) -> uvicorn.Config:
    """uvicorn's configuration for the gateway ``app`` (from :func:`create_app`): its
    :class:`GatewayConfig`'s header timeout on the h11 protocol, plus ``options``."""
    config: GatewayConfig = app.state.gateway.config
    protocol = head_timeout_protocol(config.header_timeout)
    return uvicorn.Config(app, host=host, port=port, http=protocol, **options)


class BodyTimeout:
    """ASGI middleware: the request body must be complete within ``seconds`` of the request's
    start, or reading it raises a 408 :class:`ApiError` (answered with ``Connection: close``)."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.seconds
        complete = False

        async def receive_in_time() -> Message:
            nonlocal complete
            if complete:  # the body is in; what follows is the wait for a disconnect
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise ApiError(
                    408,
                    "request_timeout",
                    f"the request body did not arrive within {self.seconds:g}s",
                    {"Connection": "close"},
                ) from None
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        await self.app(scope, receive_in_time, send)
