"""``create_app``: the gateway as a Starlette application."""

from __future__ import annotations

from pathlib import Path

from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from streamq.core import metrics
from streamq.core.exceptions import ConfigError
from streamq.core.settings import Settings
from streamq.gateway import admin, jobs, models, openai_compat, responses_door
from streamq.gateway.config import GatewayConfig
from streamq.gateway.errors import EXCEPTION_HANDLERS
from streamq.gateway.openapi import openapi_schema
from streamq.gateway.request_id import HEADER as REQUEST_ID_HEADER
from streamq.gateway.request_id import RequestId
from streamq.gateway.sse import SERVER_SEND
from streamq.gateway.state import Gateway
from streamq.gateway.timeouts import BodyTimeout

STATIC = Path(__file__).parent / "static"
# The page loads nothing but its own files.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def create_app(
    settings: Settings | None = None,
    config: GatewayConfig | None = None,
    *,
    redis: Redis | None = None,
) -> Starlette:
    """The gateway app: serve it with uvicorn, or mount it in a Starlette/FastAPI app.

    ``settings`` and ``config`` default to :meth:`Settings.from_env` and
    :meth:`GatewayConfig.from_env`. ``redis``: a client of your own (not closed by the app);
    by default the app opens one on first use and closes it at lifespan shutdown.
    """
    settings = settings or Settings.from_env()
    config = config or GatewayConfig.from_env()
    if not config.tokens and not config.allow_anonymous:
        raise ConfigError(
            "the gateway needs STREAMQ_GATEWAY_TOKENS (TOKEN=TENANT,...); to serve without "
            "authentication use `streamq serve --open` (or GatewayConfig(allow_anonymous=True))"
        )
    gateway = Gateway(settings, config, redis)
    schema = openapi_schema()

    async def page(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)

    async def favicon(request: Request) -> Response:
        return FileResponse(STATIC / "favicon.ico", media_type="image/x-icon")

    async def openapi(request: Request) -> Response:
        return JSONResponse(schema)

    routes: list[BaseRoute] = [
        Route("/", page, methods=["GET"]),
        Route("/favicon.ico", favicon, methods=["GET"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
        Route("/openapi.json", openapi, methods=["GET"]),
        *jobs.routes(gateway),
        *openai_compat.routes(gateway),
        *responses_door.routes(gateway),
        *models.routes(gateway),
        *admin.routes(gateway),
    ]
    middleware = [Middleware(BodyTimeout, seconds=config.body_timeout)]
    if metrics.available():  # the metrics extra is installed: GET /metrics, request metrics
        from streamq.gateway.metrics import RequestMetrics, route

        routes.append(route(gateway))
        middleware.append(Middleware(RequestMetrics))
    if config.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=config.cors_origins,
                allow_methods=["GET", "POST", "DELETE"],
                allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID"],
                expose_headers=["Location", openai_compat.JOB_ID_HEADER, REQUEST_ID_HEADER],
            )
        )
    app = _App(
        routes=routes,
        middleware=middleware,
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=gateway.lifespan,
    )
    app.state.gateway = gateway
    return app


class _App(Starlette):
    """Starlette with the request id outside even its server-error handler, so a 500 has one,
    and the server's own ``send`` kept in the scope for event streams' body chunks
    (:class:`~streamq.gateway.sse.EventStreamResponse`)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[SERVER_SEND] = send
        await super().__call__(scope, receive, send)

    def build_middleware_stack(self) -> ASGIApp:
        return RequestId(super().build_middleware_stack())
