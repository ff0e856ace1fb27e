"""The simulator server: request routing, and running it in a task or a background thread."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from typing import Any, Final, Self

from streamq.dev.simulator._http import HTTPServer, Request, ServerThread, json_response, sse_head
from streamq.dev.simulator.config import DEFAULT_MODELS, SimulatorConfig
from streamq.dev.simulator.errors import HTTPFailure
from streamq.dev.simulator.faults import FaultCounter, http_fault
from streamq.dev.simulator.reply import Reply
from streamq.dev.simulator.request import int_param, parse_body, request_options
from streamq.dev.simulator.responses_plan import ResponsePlan
from streamq.dev.simulator.responses_request import chat_request, parse_responses_body
from streamq.dev.simulator.send import (
    send_completion,
    send_response,
    send_response_stream,
    send_stream,
)
from streamq.dev.simulator.stats import SimulatorStats, in_flight
from streamq.dev.simulator.text import messages_key

logger = logging.getLogger("streamq.simulator")

_OWNER: Final = "streamq-simulator"
_MODEL_CREATED: Final = 1_700_000_000


def _model_object(model: str) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": _MODEL_CREATED, "owned_by": _OWNER}


class Simulator(HTTPServer):
    """The simulator server on the running event loop; use ``async with`` or start/aclose."""

    def __init__(
        self, config: SimulatorConfig | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        super().__init__(host, port)
        self.config = config or SimulatorConfig()
        self.stats = SimulatorStats()
        self._faults = FaultCounter()

    @property
    def base_url(self) -> str:
        """The ``base_url`` for an openai client, e.g. ``http://127.0.0.1:8080/v1``."""
        return f"{self.origin}/v1"

    async def start(self) -> Self:
        """Bind and start accepting connections."""
        await super().start()
        logger.info("streamq simulator listening on %s", self.base_url)
        return self

    def connection_opened(self) -> None:
        self.stats.connections += 1

    def bad_request(self, reason: str) -> bytes:
        return HTTPFailure(400, reason).response(keep_alive=False)

    async def handle(
        self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        self.stats.requests += 1
        headers = [("x-request-id", f"req_{uuid.uuid4().hex}")]
        method, path = request.method, request.path
        try:
            if path == "/v1/chat/completions" and method == "POST":
                self._check_auth(request)
                return await self._chat(request, reader, writer, headers) and request.keep_alive
            if path == "/v1/responses" and method == "POST":
                self._check_auth(request)
                keep = await self._responses(request, reader, writer, headers)
                return keep and request.keep_alive
            if path == "/v1/models" and method == "GET":
                self._check_auth(request)
                data = [_model_object(m) for m in self.config.models or DEFAULT_MODELS]
                payload: dict[str, Any] = {"object": "list", "data": data}
            elif path.startswith("/v1/models/") and method == "GET":
                self._check_auth(request)
                payload = _model_object(self._check_model(path.removeprefix("/v1/models/")))
            else:
                raise HTTPFailure(404, f"Invalid URL ({method} {path})")
        except HTTPFailure as failure:
            writer.write(failure.response(request.keep_alive, headers))
            return request.keep_alive
        writer.write(json_response(200, payload, keep_alive=request.keep_alive, headers=headers))
        return request.keep_alive

    def _check_auth(self, request: Request) -> None:
        if self.config.api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or token != self.config.api_key:
            shown = f"{token[:4]}****" if token else "none"
            message = f"Incorrect API key provided: {shown}."
            raise HTTPFailure(401, message, code="invalid_api_key")

    def _check_model(self, model: str) -> str:
        if self.config.models and model not in self.config.models:
            message = f"The model `{model}` does not exist or you do not have access to it."
            raise HTTPFailure(404, message, param="model", code="model_not_found")
        return model

    def _admit(self, body: dict[str, Any], key: str) -> tuple[SimulatorConfig, str | None, int]:
        """The request's options, fault and seed; raises its ``http_*`` fault if it has one."""
        options = request_options(self.config, body)
        self._check_model(body["model"])
        fault = self._faults.active(options, key)
        if fault is not None and fault.startswith("http_"):
            raise http_fault(fault, options.retry_after)
        seed = int_param(body, "seed", minimum=-(2**63))
        return options, fault, self.config.seed if seed is None else seed

    async def _chat(
        self,
        request: Request,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        headers: list[tuple[str, str]],
    ) -> bool:
        body = parse_body(request.body)
        key = messages_key(body["messages"])
        reply = Reply.build(body, key, *self._admit(body, key))
        self.stats.serve(reply.model, reply.usage()["total_tokens"])
        with in_flight(self.stats, reply.model):
            if not reply.stream:
                return await send_completion(
                    reply, reader, writer, keep_alive=request.keep_alive, headers=headers
                )
            writer.write(sse_head(headers))
            return await send_stream(reply, reader, writer, self.stats)

    async def _responses(
        self,
        request: Request,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        headers: list[tuple[str, str]],
    ) -> bool:
        body = parse_responses_body(request.body)
        key = messages_key(chat_request(body)["messages"])
        plan = ResponsePlan.build(body, key, *self._admit(body, key))
        self.stats.serve(body["model"], plan.usage()["total_tokens"])
        with in_flight(self.stats, body["model"]):
            if not plan.stream:
                return await send_response(
                    plan, reader, writer, keep_alive=request.keep_alive, headers=headers
                )
            writer.write(sse_head(headers))
            return await send_response_stream(plan, reader, writer, self.stats)


async def serve(
    config: SimulatorConfig | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Run the simulator until cancelled; ``on_ready`` receives the base URL once listening."""
    async with Simulator(config, host, port) as simulator:
        if on_ready is not None:
            on_ready(simulator.base_url)
        await asyncio.Event().wait()


class SimulatorThread(ServerThread[Simulator]):
    """The simulator on its own event loop in a daemon thread: ``with SimulatorThread() as sim``."""

    def __init__(
        self, config: SimulatorConfig | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        super().__init__(Simulator(config, host, port), name="streamq-simulator")

    @property
    def base_url(self) -> str:
        """The ``base_url`` for an openai client."""
        return self.server.base_url

    @property
    def port(self) -> int:
        """The bound port (known once started)."""
        return self.server.port

    @property
    def stats(self) -> SimulatorStats:
        """The server's live counters."""
        return self.server.stats

    @property
    def config(self) -> SimulatorConfig:
        """The server-wide configuration."""
        return self.server.config
