"""A small SSE reader for the gateway's tests (the gateway itself: tests.harness.gateway)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx2


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
    client: httpx2.AsyncClient,
    url: str,
    headers: dict[str, str] | None = None,
    *,
    queued: bool = False,
) -> list[Frame]:
    """Every data frame of an event stream, until the server ends it; ``queued`` frames (the
    job's place while it waits, no entries) only when asked."""
    async with client.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        return [
            frame
            async for frame in frames(response)
            if frame.data and (queued or frame.event != "queued")
        ]


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
