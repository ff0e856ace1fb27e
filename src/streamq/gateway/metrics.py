"""``GET /metrics`` and per-request metrics, when the ``metrics`` extra is installed.

``/metrics`` takes the same bearer tokens as the API (none with ``--open``); its numbers are
the process's (or, with ``PROMETHEUS_MULTIPROC_DIR``, every process's) and carry no tenant,
job id or text.
"""

from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from streamq.core import metrics
from streamq.core._prometheus import Recorder, registry
from streamq.gateway.state import Gateway

UNMATCHED = "unmatched"  # the route label of a request no route took (a 404)


def route(gateway: Gateway) -> BaseRoute:
    """The ``/metrics`` route, in Prometheus' text format."""

    async def scrape(request: Request) -> Response:
        gateway.tenant(request)  # 401 without a token
        return Response(generate_latest(registry()), media_type=CONTENT_TYPE_LATEST)

    return Route("/metrics", scrape, methods=["GET"])


class RequestMetrics:
    """ASGI middleware: counts requests by method, route template and status, and times them
    to the response's start (an event stream's lasts as long as it is open, counted in
    ``streamq_gateway_requests_in_progress``)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.recorder: Recorder = metrics.enable()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        answered = False

        def record(status: int) -> None:
            path = getattr(scope.get("route"), "path", UNMATCHED)
            seconds = time.perf_counter() - started
            self.recorder.request_ended(scope["method"], path, status, seconds)

        async def send_recorded(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.start" and not answered:
                answered = True
                record(message["status"])
            await send(message)

        with self.recorder.requests_in_progress.track_inprogress():
            try:
                await self.app(scope, receive, send_recorded)
            except BaseException:
                if not answered:
                    record(500)  # Starlette's outermost middleware answers it
                raise
