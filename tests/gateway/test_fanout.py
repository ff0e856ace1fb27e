"""Fan-out: every response a gateway process serves follows its job through one shared
multiplexer; every subscriber still gets every entry once, in order, slow ones included."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import h11
import httpx2
import pytest
from redis.asyncio import Redis

from streamq import Settings
from streamq.core.request import chat_messages
from streamq.dev.simulator import simulated_text
from streamq.gateway import GatewayConfig, create_app
from streamq.gateway.direct_write import chunk_of
from streamq.gateway.state import Gateway
from tests.gateway.sse import Frame, frames, read_events, text_of
from tests.harness.gateway import TOKEN_A, TOKENS, GatewayThread
from tests.harness.waiting import poll_until

AUTH = {"Authorization": f"Bearer {TOKEN_A}"}
PACED = {"simulator": {"tokens_per_second": 40, "reply_tokens": 60}}
SUBSCRIBERS = 200
BOUND = 120  # seconds: a bound on a hang on a loaded machine, never a measure
LONG = 6000  # entries of the stalled subscriber's job: more than the kernel's buffers hold


@pytest.fixture
def fanout(settings: Settings) -> Iterator[GatewayThread]:
    """A gateway without per-tenant limits: one tenant holds hundreds of streams."""
    config = GatewayConfig(tokens=TOKENS, keepalive=1, max_streams=None, rate_limit=None)
    with GatewayThread(create_app(settings, config)) as server:
        yield server


def state(server: GatewayThread) -> Gateway:
    app: Any = server.server.config.app
    gateway: Gateway = app.state.gateway
    return gateway


@pytest.fixture
async def http(fanout: GatewayThread) -> AsyncIterator[httpx2.AsyncClient]:
    limits = httpx2.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx2.AsyncClient(
        base_url=fanout.url, headers=AUTH, timeout=BOUND, limits=limits
    ) as client:
        yield client


async def enqueue(client: httpx2.AsyncClient, prompt: str, extra: Mapping[str, object]) -> str:
    body = {"messages": chat_messages(prompt), "extra_body": extra}
    response = await client.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def assert_exact(events: list[Frame], prompt: str, length: int = 60) -> None:
    events = [frame for frame in events if frame.id is not None]  # not the job's queue places
    ids = [frame.id for frame in events]
    assert len(ids) == len(set(ids)), "an entry came twice"
    assert [frame.json()["seq"] for frame in events] == list(range(len(events)))
    assert events[-1].event == "done"
    assert text_of(events) == simulated_text(chat_messages(prompt), length=length)


@pytest.mark.usefixtures("worker")
async def test_two_hundred_subscribers_of_one_job_each_get_every_event_once(
    http: httpx2.AsyncClient, fanout: GatewayThread, redis: Redis, settings: Settings
) -> None:
    """200 SSE clients of one live job: each gets every entry once, in order, and the exact
    text; the gateway reads them all over a few Redis connections, and lets go of them after.
    Entries that come while a response waits go straight to its connection (direct_write.py),
    which uvicorn, as the gateway serves it, allows."""
    job_id = await enqueue(http, "fan out", PACED)
    url = f"/v1/jobs/{job_id}/events"
    readers = [asyncio.create_task(read_events(http, url)) for _ in range(SUBSCRIBERS)]
    await poll_until(lambda: state(fanout).subscribers > 0, BOUND, "subscribers to join")
    results = await asyncio.gather(*readers)
    for events in results:
        assert_exact(events, "fan out")
    assert state(fanout).written_directly > 0
    await poll_until(lambda: state(fanout).subscribers == 0, BOUND, "subscribers to be let go")


@pytest.mark.usefixtures("worker")
async def test_subscribers_of_many_jobs_at_once(http: httpx2.AsyncClient) -> None:
    """Twenty jobs, five subscribers each, all at once: each gets its own job's exact stream."""
    prompts = [f"job {i}" for i in range(20)]
    ids = await asyncio.gather(*(enqueue(http, prompt, PACED) for prompt in prompts))
    reads = [read_events(http, f"/v1/jobs/{job_id}/events") for job_id in ids for _ in range(5)]
    results = await asyncio.gather(*reads)
    for i, events in enumerate(results):
        assert_exact(events, prompts[i // 5])


@pytest.mark.usefixtures("worker")
async def test_two_hundred_jobs_five_subscribers_each_all_at_once(fanout: GatewayThread) -> None:
    """The benchmark's "200 jobs x 5 subscribers", fast: jobs enqueued and already streaming
    while a thousand subscribers join at once (joins race the long read, the join read and each
    other); each subscriber gets its own job's every entry once, in order."""
    jobs, per_job = 200, 5
    quick = {"simulator": {"tokens_per_second": 150, "reply_tokens": 30}}
    prompts = [f"many {i}" for i in range(jobs)]
    limits = httpx2.Limits(max_connections=20)
    async with httpx2.AsyncClient(base_url=fanout.url, headers=AUTH, limits=limits) as http:
        ids = await asyncio.gather(*(enqueue(http, prompt, quick) for prompt in prompts))
    results = await asyncio.gather(
        *(
            raw_events(fanout.port, f"/v1/jobs/{job_id}/events")
            for job_id in ids
            for _ in range(per_job)
        )
    )
    wrong = []
    for i, events in enumerate(results):
        try:
            assert_exact(events, prompts[i // per_job], 30)
        except (AssertionError, IndexError) as exc:
            wrong.append((i, exc))
    assert not wrong, f"{len(wrong)} of {len(results)} subscribers: {wrong[:3]}"
    await poll_until(lambda: state(fanout).subscribers == 0, BOUND, "subscribers to be let go")


def test_a_chunk_framed_once_is_what_h11_writes_for_a_chunked_body() -> None:
    """The chunk the multiplexer's sink writes as it is equals h11's own framing of the data
    (the bytes the server's ``send`` would write), and h11's state is what it would be."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
    assert isinstance(conn.next_event(), h11.Request)
    conn.send(h11.Response(status_code=200, headers=[("Content-Type", "text/event-stream")]))
    for data in (b"id: 1-0\ndata: {}\n\n", "é€😀".encode() * 300):
        assert chunk_of(data) == conn.send(h11.Data(data=data))
    assert conn.our_state is h11.SEND_BODY


@pytest.mark.usefixtures("worker")
async def test_http_1_0_subscribers_get_entries_written_directly_unframed(
    http: httpx2.AsyncClient, fanout: GatewayThread
) -> None:
    """What the multiplexer writes straight to an HTTP/1.0 client's connection is the frames
    alone (its body ends with the connection), not the HTTP/1.1 chunks the others get."""
    slow = {"simulator": {"tokens_per_second": 20, "reply_tokens": 60}}
    job_id = await enqueue(http, "one point oh", slow)
    url = f"/v1/jobs/{job_id}/events"
    results = await asyncio.gather(*(raw_response(fanout.port, url) for _ in range(20)))
    for raw in results:
        body = raw.partition(b"\r\n\r\n")[2]
        assert b"\r" not in body, body[:200]  # no chunk sizes: frames end in "\n\n" only
        assert_exact(parsed(raw), "one point oh")
    assert state(fanout).written_directly > 0


@pytest.mark.usefixtures("worker")
async def test_disconnects_mid_stream_resume_exactly_and_free_their_state(
    http: httpx2.AsyncClient, fanout: GatewayThread
) -> None:
    """Fifty subscribers leave mid-stream, each after a different number of entries: the
    multiplexer forgets them, and each resumes with Last-Event-ID to the exact stream."""
    slow = {"simulator": {"tokens_per_second": 20, "reply_tokens": 60}}
    job_id = await enqueue(http, "leave and resume", slow)
    url = f"/v1/jobs/{job_id}/events"

    async def leave_after(count: int) -> list[Frame]:
        seen: list[Frame] = []
        async with http.stream("GET", url) as response:
            async for frame in frames(response):
                if frame.data and frame.id is not None:  # entries, not the job's place
                    seen.append(frame)
                if len(seen) == count:
                    break
        return seen

    heads = await asyncio.gather(*(leave_after(1 + i % 10) for i in range(50)))
    await poll_until(lambda: state(fanout).subscribers == 0, BOUND, "left subscribers let go")
    tails = await asyncio.gather(
        *(read_events(http, url, headers={"Last-Event-ID": str(head[-1].id)}) for head in heads)
    )
    for head, tail in zip(heads, tails, strict=True):
        assert_exact(head + tail, "leave and resume")


@pytest.mark.usefixtures("worker")
async def test_a_subscriber_that_leaves_is_let_go_while_its_job_still_runs(
    http: httpx2.AsyncClient, fanout: GatewayThread
) -> None:
    """Leaving is noticed at once, not at the job's end or the next keep-alive: the client's
    disconnect stops its response, whose writer is let go."""
    endless = {"simulator": {"tokens_per_second": 2, "reply_tokens": 10_000}}
    job_id = await enqueue(http, "a very long answer", endless)
    async with http.stream("GET", f"/v1/jobs/{job_id}/events") as response:
        async for frame in frames(response):
            if frame.event == "delta":
                break
    await poll_until(lambda: state(fanout).subscribers == 0, BOUND, "the leaver let go")
    status = (await http.get(f"/v1/jobs/{job_id}")).json()
    assert status["state"] == "running"
    await http.delete(f"/v1/jobs/{job_id}")


@pytest.mark.usefixtures("worker")
async def test_a_stalled_subscriber_is_dropped_back_to_redis_and_still_gets_it_all(
    http: httpx2.AsyncClient, fanout: GatewayThread, redis: Redis, settings: Settings
) -> None:
    """A client that stops reading while a long job streams fills its socket; the gateway drops
    its backlog rather than buffering it, and once the client reads again it catches up from
    Redis by cursor: the whole stream, every entry once. A fast subscriber alongside is not
    held back.

    Entries go straight to a client's socket while it takes them, so the kernel's buffers for
    the connection fill first: the sender's alone may grow to `tcp_wmem`'s 4 MiB, which a
    4 MB stream did not always overflow. 6,000 entries with 20 top log probabilities each
    (~8 MB) are twice that."""
    state(fanout).max_backlog = 16
    body = {
        "messages": chat_messages("a long answer"),
        "logprobs": True,
        "top_logprobs": 20,
        "extra_body": {"simulator": {"reply_tokens": LONG}},
    }
    response = await http.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    stalled = await StalledClient.connect(fanout.port, f"/v1/jobs/{job_id}/events")
    fast = await read_events(http, f"/v1/jobs/{job_id}/events")
    assert_exact(fast, "a long answer", LONG)
    await poll_until(lambda: state(fanout).dropped > 0, BOUND, "the stalled client dropped")
    events = await stalled.read_to_end()
    assert_exact(events, "a long answer", LONG)
    await poll_until(lambda: state(fanout).subscribers == 0, BOUND, "subscribers to be let go")


class StalledClient:
    """An SSE client on a raw socket with a small receive buffer, reading nothing until told."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int, path: str) -> StalledClient:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: the window
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=2**16)
        # HTTP/1.0: the body ends with the connection, no chunks to take apart.
        request = f"GET {path} HTTP/1.0\r\nAuthorization: {AUTH['Authorization']}\r\n\r\n"
        writer.write(request.encode())
        await writer.drain()
        return cls(reader, writer)

    async def read_to_end(self) -> list[Frame]:
        raw = await self.reader.read()
        self.writer.close()
        return parsed(raw)


async def raw_events(port: int, path: str) -> list[Frame]:
    """Every data frame of an event stream, on a plain socket (HTTP/1.0: a thousand of them
    cost the test process far less than httpx streams would)."""
    return parsed(await raw_response(port, path))


async def raw_response(port: int, path: str) -> bytes:
    """The whole HTTP/1.0 response to ``GET path``, head and body."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), BOUND)
    try:
        request = f"GET {path} HTTP/1.0\r\nAuthorization: {AUTH['Authorization']}\r\n\r\n"
        writer.write(request.encode())
        return await asyncio.wait_for(reader.read(), BOUND)
    finally:
        writer.close()


def parsed(raw: bytes) -> list[Frame]:
    """The data frames of an HTTP/1.0 SSE response, head and all."""
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    events = []
    for block in body.decode().split("\n\n"):
        frame = Frame()
        for line in block.split("\n"):
            name, _, value = line.partition(": ")
            if name == "id":
                frame.id = value
            elif name == "event":
                frame.event = value
            elif name == "data":
                frame.data = value
        if frame.data:
            events.append(frame)
    return events
