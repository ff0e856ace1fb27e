"""Routes whose response follows a job hold one of the caller's streams while they last."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import request_response
from starlette.types import Receive, Scope, Send

from streamq.gateway.state import Gateway


class HeldStream:
    """The ASGI app of a route whose response follows a job: it holds one of the caller's
    streams from the start of the request to the end of the response (or the disconnect)."""

    def __init__(
        self, gateway: Gateway, endpoint: Callable[[Request], Awaitable[Response]]
    ) -> None:
        self.gateway = gateway
        self.app = request_response(endpoint)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        tenant = self.gateway.tenant(Request(scope, receive))
        with self.gateway.limits.stream(tenant):
            await self.app(scope, receive, send)
