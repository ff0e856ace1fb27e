"""A place in the queue over HTTP: ``GET /v1/jobs/{id}`` and the job's SSE tell it; many
readers of one queued job cost one lookup a tick; the chat and Responses doors read past a
worker's ``queued`` entry (and the Responses door tells places as SSE comments)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx2
from openai import AsyncOpenAI
from redis.asyncio import Redis

from streamq import ChatJob, Done, Queued, Settings, Start, StreamQ
from streamq.core.events import Delta, Event, encode
from streamq.core.keys import Keys
from streamq.dev.local_redis import LocalRedis
from streamq.gateway import GatewayConfig, create_app
from streamq.gateway.openai_compat import JOB_ID_HEADER
from streamq.worker.arq_worker import running_worker
from tests.gateway.sse import Frame, frames
from tests.harness.gateway import TOKEN_A, TOKENS, GatewayThread
from tests.harness.waiting import STARTUP, poll_until

STALL = {"simulator": {"fault": "stall", "after": 1}}  # streams until cancelled
AUTH = {"Authorization": f"Bearer {TOKEN_A}"}


async def enqueue(client: httpx2.AsyncClient, content: str, **body: Any) -> str:
    messages = [{"role": "user", "content": content}]
    response = await client.post("/v1/jobs", json={"messages": messages, **body})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


async def next_data(stream: AsyncIterator[Frame]) -> Frame:
    async for frame in stream:
        if frame.data:
            return frame
    raise AssertionError("the stream ended")


async def test_get_and_sse_tell_the_fifth_job_four_ahead_then_fewer_then_its_text(
    sq: StreamQ, settings: Settings, client: httpx2.AsyncClient
) -> None:
    """All five of one tenant (fair shares order tenants' jobs among each other)."""
    ahead = [sq.job(await enqueue(client, f"ahead {i}", extra_body=STALL)) for i in range(4)]
    job_id = await enqueue(client, "the fifth")
    status = (await client.get(f"/v1/jobs/{job_id}")).json()
    assert (status["state"], status["ahead"]) == ("queued", 4)
    async with client.stream("GET", f"/v1/jobs/{job_id}/events") as response:
        stream = frames(response)
        first = await next_data(stream)
        assert (first.event, first.id, first.json()["ahead"]) == ("queued", None, 4)
        seen = [4]
        async with running_worker(settings.replace(concurrency=1)):
            for job in ahead:  # one at a time, each running until cancelled here
                frame = await asyncio.wait_for(next_data(stream), STARTUP)
                assert (frame.event, frame.id) == ("queued", None)
                seen.append(frame.json()["ahead"])
                assert (await client.get(f"/v1/jobs/{job_id}")).json()["ahead"] == seen[-1]
                await job.cancel()
            rest = [frame async for frame in stream if frame.data]
    assert seen == [4, 3, 2, 1, 0]
    assert next(f.event for f in rest) == "start"
    assert "queued" not in [f.event for f in rest]
    assert rest[-1].event == "done"
    text = "".join(f.json()["text"] for f in rest if f.event == "delta")
    assert text == (await sq.job(job_id).result()).text
    status = (await client.get(f"/v1/jobs/{job_id}")).json()
    assert (status["state"], status["ahead"], status["eta"]) == ("done", None, None)


async def test_many_readers_of_one_queued_job_cost_one_lookup_a_tick(settings: Settings) -> None:
    """20 SSE readers of one queued job, on a Redis of the test's own: each round of lookups is
    two ZRANKs (the job's fair-share rank and its arq rank), not forty."""
    readers = 20
    with LocalRedis() as server:
        own = settings.replace(redis_url=server.url)
        app = create_app(own, GatewayConfig(tokens=TOKENS, keepalive=0.2))
        async with StreamQ.from_url(server.url, own) as sq:
            job = await sq.enqueue_chat("waits")
            with GatewayThread(app) as gateway:
                async with httpx2.AsyncClient(base_url=gateway.url, headers=AUTH) as http:
                    created = await http.post(
                        "/v1/jobs", json={"messages": [{"role": "user", "content": "me"}]}
                    )
                    job_id = created.json()["id"]
                    gate: Any = app.state.gateway
                    async with Redis.from_url(server.url) as redis:
                        await _count_lookups(http, gate, redis, job_id, readers)
            await job.cancel()


async def _count_lookups(
    http: httpx2.AsyncClient, gate: Any, redis: Redis, job_id: str, readers: int
) -> None:
    told = asyncio.Event()
    heard: list[int] = []

    async def read() -> None:
        async with http.stream("GET", f"/v1/jobs/{job_id}/events") as response:
            stream = frames(response)
            heard.append((await next_data(stream)).json()["ahead"])
            await told.wait()

    tasks = [asyncio.create_task(read()) for _ in range(readers)]
    try:
        await poll_until(lambda: len(heard) == readers, STARTUP, "every reader's place")
        assert heard == [heard[0]] * readers
        before, lookups = await _zranks(redis), gate._mux.place_lookups
        await poll_until(
            lambda: gate._mux.place_lookups >= lookups + 3, STARTUP, "three more ticks"
        )
        after, done = await _zranks(redis), gate._mux.place_lookups
        rounds = done - lookups
        print(f"{readers} readers, {rounds} rounds of lookups: {after - before} ZRANK calls")
        assert after - before == 2 * rounds
    finally:
        told.set()
        await asyncio.gather(*tasks)


async def _zranks(redis: Redis) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_zrank", {}).get("calls", 0))


# A worker's entries for a job that waited for admission, as the worker encodes them.
WAITED: list[Event] = [
    Start(job_id="", model="sim-model"),
    Queued(reason="concurrency", ahead=2, model="sim-model"),
    Delta(text="after "),
    Delta(text="waiting"),
    Done(finish_reason="stop", usage=None, model="sim-model", finish_reasons=["stop"]),
]


async def write_waited(redis: Redis, settings: Settings, job_id: str) -> None:
    key = Keys(settings.key_prefix).events(job_id)
    for seq, event in enumerate(WAITED):
        if isinstance(event, Start):
            event = Start(job_id=job_id, model="sim-model")
        await redis.xadd(key, encode(event, attempt=1, seq=seq))  # type: ignore[arg-type]
    await redis.expire(key, 600)


async def only_queued_job(redis: Redis, settings: Settings) -> str:
    """The id of the one job in the test's queue, once it is there."""
    found: list[bytes] = []

    async def queued() -> bool:
        found[:] = await redis.zrange(settings.queue_name, 0, -1)
        return bool(found)

    await poll_until(queued, STARTUP, "the job in the queue")
    return Keys(settings.key_prefix).job_id_from_arq(found[0].decode())


async def test_the_chat_door_reads_past_a_workers_queued_entry(
    sdk: AsyncOpenAI, redis: Redis, settings: Settings
) -> None:
    messages: Any = [{"role": "user", "content": "wait for it"}]

    async def chat() -> str:
        stream = await sdk.chat.completions.create(
            model="sim-model", messages=messages, stream=True
        )
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    answer = asyncio.create_task(chat())
    await write_waited(redis, settings, await only_queued_job(redis, settings))
    assert await asyncio.wait_for(answer, STARTUP) == "after waiting"


async def test_the_responses_door_numbers_every_read_alike_past_a_queued_entry(
    sdk: AsyncOpenAI, client: httpx2.AsyncClient, redis: Redis, settings: Settings
) -> None:
    async def live() -> list[Any]:
        stream = await sdk.responses.create(model="sim-model", input="wait for it", stream=True)
        return [event async for event in stream]

    reading = asyncio.create_task(live())
    job_id = await only_queued_job(redis, settings)
    await write_waited(redis, settings, job_id)
    events = await asyncio.wait_for(reading, STARTUP)
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == "after waiting"
    numbers = [(e.type, e.sequence_number) for e in events]
    assert [n for _, n in numbers] == list(range(len(numbers)))

    response_id = events[-1].response.id
    replayed = await sdk.responses.retrieve(response_id, stream=True)
    assert [(e.type, e.sequence_number) async for e in replayed] == numbers
    # Raw: the worker's queued entry is a comment, which the SDK skipped above.
    url = f"/v1/responses/{response_id}?stream=true"
    async with client.stream("GET", url) as response:
        comments = [c for f in [f async for f in frames(response)] for c in f.comments]
    assert 'queued {"reason":"concurrency","ahead":2,"eta":null,"model":"sim-model"}' in comments


async def test_the_responses_stream_tells_a_queued_jobs_place_in_comments(
    sq: StreamQ, client: httpx2.AsyncClient, settings: Settings
) -> None:
    await enqueue(client, "ahead", extra_body=STALL)
    created = await client.post(
        "/v1/responses", json={"model": "sim-model", "input": "me", "background": True}
    )
    response_id = created.json()["id"]
    url = f"/v1/responses/{response_id}?stream=true"
    async with client.stream("GET", url) as response:
        stream = frames(response)
        async for frame in stream:
            if any(c.startswith("queued ") for c in frame.comments):
                break
    assert 'queued {"reason":"queue","ahead":1,"eta":null}' in frame.comments
    assert response.headers[JOB_ID_HEADER]
    job: ChatJob = sq.job(response.headers[JOB_ID_HEADER])
    assert (await job.status()).ahead == 1
