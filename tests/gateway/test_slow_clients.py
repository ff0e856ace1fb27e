"""Slowloris over real sockets: connections that dribble their head or body one byte at a time,
or send nothing, are closed by the gateway once their read timeout passes, while it keeps
serving everyone else."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx2
import pytest

from streamq import Settings
from streamq.gateway import GatewayConfig, create_app
from tests.harness.gateway import TOKEN_A, TOKENS, GatewayThread

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.5
CONNECTIONS = 200
DRIBBLE_INTERVAL = 0.2  # seconds between two bytes: the payloads below last far longer
PADDING = b"a" * 2000
AUTH = f"Authorization: Bearer {TOKEN_A}\r\n".encode()
MARGIN = 0.05  # for the clocks: the client's starts before the connect, the server's after
GIVE_UP = 60  # only so a regression fails instead of hanging; never reached when it works


@pytest.fixture
def slow_gateway(settings: Settings) -> Iterator[GatewayThread]:
    """Short read timeouts, and no rate limit: every slow client gets as far as reading."""
    config = GatewayConfig(
        tokens=TOKENS,
        header_timeout=HEADER_TIMEOUT,
        body_timeout=BODY_TIMEOUT,
        rate_limit=None,
    )
    with GatewayThread(create_app(settings, config)) as server:
        yield server


@dataclass
class Closed:
    """How a dribbling connection ended.

    On a loaded machine this process (the clients and the gateway share it) can lag by
    seconds, and a connection it lagged on may say nothing about the gateway's answer:
    ``late``, what it sends at once left after the header timeout could have run out;
    ``reset``, a byte of ours met the server's close, and TCP's reset drops what we had not
    read yet.
    """

    elapsed: float  # seconds from before the connect to the close
    answer: bytes  # everything read from the server
    late: bool
    reset: bool

    @property
    def judged(self) -> bool:
        """Whether its answer is what the gateway meant to send, in time."""
        return not self.late and (bool(self.answer) or not self.reset)


async def dribble(port: int, sent_at_once: bytes, dribbled: bytes) -> Closed:
    """Send ``sent_at_once``, then ``dribbled`` a byte at a time, until the server closes the
    connection."""
    started = time.monotonic()  # before the connect: the server's clock starts at its accept
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(sent_at_once)
    late = bool(sent_at_once) and time.monotonic() - started > HEADER_TIMEOUT - MARGIN

    sent = 0

    async def trickle() -> None:
        nonlocal sent
        for i in range(len(dribbled)):
            writer.write(dribbled[i : i + 1])
            await writer.drain()
            sent += 1
            await asyncio.sleep(DRIBBLE_INTERVAL)

    sender = asyncio.create_task(trickle())
    answer = bytearray()
    reset = False
    try:
        while chunk := await reader.read(65536):  # b"" once the server closed
            answer += chunk
    except (ConnectionResetError, BrokenPipeError):
        reset = True  # closed too, with a byte of ours arriving after the close
    finally:
        elapsed = time.monotonic() - started
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await sender
        writer.close()
    assert sent < len(dribbled) or not dribbled, "the payload ran out before the close"
    return Closed(elapsed, bytes(answer), late, reset)


def judged(results: list[Closed], what: str) -> list[Closed]:
    """The connections whose answers say something (at least one must)."""
    found = [closed for closed in results if closed.judged]
    assert found, f"every connection ({what}) lagged: {results[:3]}"
    return found


async def served_meanwhile(url: str) -> None:
    """A well-behaved client gets its answers while the slow ones hold their connections."""
    headers = {"Authorization": f"Bearer {TOKEN_A}"}
    async with httpx2.AsyncClient(base_url=url, headers=headers, timeout=30) as client:
        created = await client.post(
            "/v1/jobs", json={"messages": [{"role": "user", "content": "hi"}]}
        )
        assert created.status_code == 202, created.text
        status = await client.get(created.json()["url"])
        assert status.status_code == 200


async def test_slow_or_silent_request_heads_are_closed(slow_gateway: GatewayThread) -> None:
    """Heads sent a byte at a time, no head at all, a second head dribbled on a kept-alive
    connection, a body the app never reads: every connection closes after HEADER_TIMEOUT."""
    head = b"GET /v1/jobs/x HTTP/1.1\r\nHost: gateway\r\n" + AUTH + b"X-Pad: " + PADDING
    answered = b"GET /openapi.json HTTP/1.1\r\nHost: gateway\r\n\r\n"
    unread_body = b"GET /openapi.json HTTP/1.1\r\nHost: gateway\r\nContent-Length: 9999\r\n\r\n"
    kinds = [
        (b"", head),  # slowloris
        (b"", b""),  # connects, says nothing
        (answered, head),  # a first request answered, the next one dribbled
        (unread_body, PADDING),  # answered without reading the body, which keeps coming
    ]
    port = slow_gateway.port
    closing = [dribble(port, *kinds[i % len(kinds)]) for i in range(CONNECTIONS)]
    results, _ = await asyncio.wait_for(
        asyncio.gather(asyncio.gather(*closing), served_meanwhile(slow_gateway.url)), GIVE_UP
    )
    for i, closed in enumerate(results):
        assert closed.elapsed >= HEADER_TIMEOUT - MARGIN, (i, closed.elapsed)
    for kind, (first, _) in enumerate(kinds):
        mine = results[kind :: len(kinds)]
        if not first:  # nothing to answer: nothing sent, whoever lagged
            assert all(closed.answer == b"" for closed in mine), mine[:3]
            continue
        for closed in judged(mine, f"kind {kind}"):
            assert closed.answer.startswith(b"HTTP/1.1 200 "), closed.answer[:100]


async def test_slow_bodies_get_a_408_and_are_closed(slow_gateway: GatewayThread) -> None:
    """Bodies a byte at a time on both doors: 408 in the usual error shape, then the close."""
    body = b'{"messages": [{"role": "user", "content": "' + PADDING + b'"}]}'
    heads = [
        b"POST %s HTTP/1.1\r\nHost: gateway\r\n%sContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % (path, AUTH, len(body))
        for path in (b"/v1/jobs", b"/v1/chat/completions")
    ]
    closing = [dribble(slow_gateway.port, heads[i % 2], body) for i in range(CONNECTIONS)]
    results, _ = await asyncio.wait_for(
        asyncio.gather(asyncio.gather(*closing), served_meanwhile(slow_gateway.url)), GIVE_UP
    )
    for closed in results:  # a late head is timed out as a head
        timeout = HEADER_TIMEOUT if closed.late else BODY_TIMEOUT
        assert closed.elapsed >= timeout - MARGIN, closed
    for door, path in enumerate(("/v1/jobs", "/v1/chat/completions")):
        for closed in judged(results[door::2], path):
            head, _, payload = closed.answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 408 "), closed.answer[:200]
            assert b"connection: close" in head.lower()
            error = json.loads(payload)["error"]
            assert error["code"] == "request_timeout"
            assert error["type"] == "invalid_request_error"
