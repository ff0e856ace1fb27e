"""The gateway under a real uvicorn server, and a small SSE reader for the tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import httpx2
import uvicorn
from starlette.applications import Starlette

from streamq import Settings
from streamq.gateway.timeouts import uvicorn_config
from streamq.local_redis import free_port
from streamq.worker import running_worker

TOKEN_A = "tenant-a-secret-token-0001"
TOKEN_B = "tenant-b-secret-token-0002"
TOKENS = {TOKEN_A: "tenant-a", TOKEN_B: "tenant-b"}


class GatewayThread:
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
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gateway", daemon=True)
        self._error: BaseException | None = None

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            self._error = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        async with contextlib.AsyncExitStack() as stack:
            if self._worker is not None:
                await stack.enter_async_context(running_worker(self._worker))
            task = asyncio.create_task(self.server.serve())
            while not self.server.started and not task.done():  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            self._ready.set()
            await task

    def __enter__(self) -> GatewayThread:
        self._thread.start()
        self._ready.wait(30)
        if not self.server.started:
            raise RuntimeError(f"the gateway did not start: {self._error!r}")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.server.should_exit = True
        self._thread.join(30)
        if self._error is not None:
            raise self._error


@dataclass
class Frame:
    """One SSE frame."""

    event: str = "message"
    data: str = ""
    id: str | None = None
    comments: list[str] = field(default_factory=list)

    def json(self) -> Any:
        return json.loads(self.data)


async def frames(response: httpx2.Response) -> AsyncIterator[Frame]:
    """The frames of an SSE response, as they arrive; a keep-alive comment is a frame of its own
    (``comments`` set, no data)."""
    frame = Frame()
    data: list[str] = []
    async for line in response.aiter_lines():
        if line == "":
            if data or frame.comments:
                frame.data = "\n".join(data)
                yield frame
            frame, data = Frame(), []
        elif line.startswith(":"):
            frame.comments.append(line[1:].strip())
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                data.append(value)
            elif name == "event":
                frame.event = value
            elif name == "id":
                frame.id = value


async def read_events(
    client: httpx2.AsyncClient, url: str, headers: dict[str, str] | None = None
) -> list[Frame]:
    """Every data frame of an event stream, until the server ends it."""
    async with client.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        return [frame async for frame in frames(response) if frame.data]


def text_of(events: list[Frame]) -> str:
    """The joined delta text of ``events``."""
    return "".join(frame.json()["text"] for frame in events if frame.event == "delta")


async def door_stream(
    client: httpx2.AsyncClient, body: dict[str, Any]
) -> tuple[httpx2.Response, list[Frame]]:
    """POST a streamed chat completion: the response and its frames, keep-alives included
    (none when it is not a 200)."""
    body = {**body, "stream": True}
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            await response.aread()
            return response, []
        return response, [frame async for frame in frames(response)]


def chunks_of(events: list[Frame]) -> list[dict[str, Any]]:
    """The JSON bodies of a door stream's data frames, before any ``[DONE]``."""
    bodies = []
    for frame in events:
        if frame.data == "[DONE]":
            break
        if frame.data:
            bodies.append(frame.json())
    return bodies
