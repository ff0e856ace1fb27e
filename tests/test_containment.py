"""Poison stays contained: no payload, delta or upstream hurts a worker, a batch or a neighbour."""

from __future__ import annotations

import asyncio
import json
import pickle
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from arq.jobs import deserialize_job_raw
from arq.utils import ms_to_datetime
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio import Redis

from streamq import Delta, InvalidRequest, JobFailed, Settings, StreamQ
from streamq import sync as streamq_sync
from streamq.core.exceptions import EntryRejected
from streamq.core.keys import Keys, check_job_id
from streamq.core.queue import JOB_FUNCTION, REJECTED_FUNCTION, deserialize_worker_job
from streamq.core.request import ChatRequest, chat_messages
from streamq.dev.simulator import simulated_text
from streamq.worker.arq_worker import running_worker
from streamq.worker.publisher import Publisher, StreamWriter
from tests.harness.processes import worker_processes
from tests.harness.upstreams import data_frames, scripted_upstream, sse_response

ROCKET = "\U0001f680"
ENDLESS = 3600.0  # a publisher retry window no test may wait out


def prompts_with_an_emoji(count: int, length: int) -> list[str]:
    """Prompts whose simulated answer of ``length`` tokens holds an emoji."""
    found: list[str] = []
    i = 0
    while len(found) < count:
        prompt = f"emoji {i}"
        if ROCKET in simulated_text(chat_messages(prompt), length=length):
            found.append(prompt)
        i += 1
    return found


@pytest.mark.slow
async def test_js_split_emoji_jobs_do_not_stall_their_neighbours(settings: Settings) -> None:
    """20 ordinary jobs beside 5 whose upstream cuts emoji into UTF-16 halves, on one worker
    process: all 25 end with the exact text at their first attempt."""
    length = 60
    split = {"simulator": {"split_surrogates": True, "reply_tokens": length}}
    emoji_prompts = prompts_with_an_emoji(5, length)
    with worker_processes(settings, 1):
        async with Redis.from_url(settings.redis_url) as redis, StreamQ(redis, settings) as sq:
            ordinary = [await sq.enqueue_chat(f"plain {i}") for i in range(20)]
            emoji = [await sq.enqueue_chat(p, extra_body=split) for p in emoji_prompts]
            results = await asyncio.gather(*(job.result() for job in [*ordinary, *emoji]))
    expected = [simulated_text(chat_messages(f"plain {i}")) for i in range(20)]
    expected += [simulated_text(chat_messages(p), length=length) for p in emoji_prompts]
    assert [r.text for r in results] == expected
    assert {r.attempt for r in results} == {1}


@pytest.fixture
async def publisher(redis: Redis, settings: Settings) -> AsyncIterator[Publisher]:
    """A started publisher on the test's Redis that would retry an outage for an hour."""
    chain = Keys(settings.key_prefix).publisher("test")
    publisher = Publisher(redis, ttl=60, chain_key=chain, retry_for=ENDLESS)
    publisher.start()
    yield publisher
    await publisher.aclose()


async def writer_for(redis: Redis, settings: Settings, publisher: Publisher, job: str) -> Any:
    """A writer of attempt 1 of ``job``, claimed as the claim script would."""
    keys = Keys(settings.key_prefix)
    await redis.hset(keys.state(job), mapping={"attempt": 1})  # type: ignore[misc]
    await redis.expire(keys.state(job), 60)
    return StreamWriter(publisher, keys.events(job), keys.state(job), 1)


async def test_an_unencodable_entry_fails_only_its_own_job(
    redis: Redis, settings: Settings, publisher: Publisher
) -> None:
    """A lone surrogate is refused at once for its job; the same batch's others are written."""
    bad = await writer_for(redis, settings, publisher, "bad")
    good = await writer_for(redis, settings, publisher, "zgood")
    await good.emit(Delta(text="before"))
    with pytest.raises(EntryRejected, match="UTF-8"):
        await bad.emit(Delta(text="half \ud83d"))
    await good.emit(Delta(text="after"))
    await good.sync()
    await bad.emit(Delta(text="the job can still end"))
    await bad.sync()
    assert await redis.xlen(good.events_key) == 2
    assert await redis.xlen(bad.events_key) == 1


async def test_redis_refusing_one_job_fails_only_that_job(
    redis: Redis, settings: Settings, publisher: Publisher
) -> None:
    """A script error on one job's keys (its stream is not a stream) is not an outage: the job
    alone fails, at once, and its batch neighbours are written."""
    broken = await writer_for(redis, settings, publisher, "broken")
    neighbours = [await writer_for(redis, settings, publisher, f"n{i}") for i in range(5)]
    await redis.set(broken.events_key, "not a stream", ex=60)
    await broken.emit(Delta(text="x"))
    for writer in neighbours:
        await writer.emit(Delta(text="y"))
    for writer in neighbours:
        await writer.sync()
        assert await redis.xlen(writer.events_key) == 1
    with pytest.raises(EntryRejected, match="WRONGTYPE"):
        await broken.sync()


@pytest.fixture
async def hostile_upstream() -> AsyncIterator[str]:
    """An OpenAI-compatible server whose answer to "poison" has an unencodable usage key."""

    def answer(body: dict[str, Any]) -> bytes:
        poison = body["messages"][-1]["content"] == "poison"
        usage = {"\ud800bad": 1} if poison else {"total_tokens": 2}
        chunks = [
            {"choices": [{"index": 0, "delta": {"content": "fine"}}]},
            {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": usage},
        ]
        return sse_response(data_frames(chunks))

    async with scripted_upstream(answer) as base_url:
        yield base_url


async def test_an_unencodable_upstream_answer_ends_its_job_with_an_error(
    redis: Redis, settings: Settings, hostile_upstream: str
) -> None:
    """An answer that cannot be stored ends its job with one `error`, not retried; the jobs
    beside it finish."""
    hostile = settings.replace(openai_base_url=hostile_upstream)
    async with StreamQ(redis, hostile) as sq, running_worker(hostile):
        jobs = [await sq.enqueue_chat("poison" if i % 3 == 0 else f"ok {i}") for i in range(9)]
        outcomes = await asyncio.gather(*(job.result() for job in jobs), return_exceptions=True)
    for i, outcome in enumerate(outcomes):
        if i % 3:
            assert not isinstance(outcome, BaseException)
            assert (outcome.text, outcome.attempt) == ("fine", 1)
        else:
            assert isinstance(outcome, JobFailed)
            assert outcome.error.code == "unpublishable"
            assert not outcome.error.retryable


ENVELOPE_FIELDS = st.sampled_from(["f", "a", "k", "t", "et", "x"])
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(), children),
    max_leaves=6,
)


@given(st.dictionaries(ENVELOPE_FIELDS, JSON_VALUES | st.just(JOB_FUNCTION)) | JSON_VALUES)
def test_any_envelope_becomes_one_arq_can_run(envelope: object) -> None:
    """Whatever JSON is queued, arq gets an envelope it handles without an exception."""
    raw = json.dumps(envelope).encode()
    function, args, kwargs, job_try, enqueued = deserialize_job_raw(
        raw, deserializer=deserialize_worker_job
    )
    assert function in (JOB_FUNCTION, REJECTED_FUNCTION)
    assert function == REJECTED_FUNCTION or envelope == deserialize_worker_job(raw)
    hash(function)
    assert isinstance(args, list)
    assert isinstance(kwargs, dict)
    assert job_try is None or job_try >= 0
    ms_to_datetime(enqueued)


def test_bytes_that_are_not_json_never_run(tmp_path: Path) -> None:
    """Garbage and a crafted pickle become a rejection; the pickle's code never runs."""
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (marker.touch, ())  # type: ignore[return-value]

    for raw in (pickle.dumps(Exploit()), b"\x80\x04garbage", b"[" * 100_000):
        assert deserialize_worker_job(raw)["f"] == REJECTED_FUNCTION
    assert not marker.exists()


HOSTILE_ENVELOPES = {
    "function-list": {"f": [JOB_FUNCTION], "a": [], "k": {}, "t": 1, "et": 1},
    "try-string": {"f": JOB_FUNCTION, "a": [], "k": {}, "t": "2", "et": 1},
    "time-string": {"f": JOB_FUNCTION, "a": [], "k": {}, "t": 1, "et": "now"},
    "time-huge": {"f": JOB_FUNCTION, "a": [], "k": {}, "t": 1, "et": 10**30},
    "args": {"f": JOB_FUNCTION, "a": [1, 2], "k": {"x": 1}, "t": 1, "et": 1},
    "other-function": {"f": "os.system", "a": ["touch /tmp/x"], "k": {}, "t": 1, "et": 1},
}


@pytest.mark.slow
async def test_hostile_envelopes_kill_no_worker_and_end_their_jobs(
    redis: Redis, settings: Settings, tmp_path: Path
) -> None:
    """Wrong-typed envelopes, garbage and a pickle on the queue: both worker processes live
    on, each streamq job behind such an envelope ends with `invalid_job`, nothing runs, and
    the next job completes."""
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (marker.touch, ())  # type: ignore[return-value]

    keys = Keys(settings.key_prefix)
    payloads = {name: json.dumps(body).encode() for name, body in HOSTILE_ENVELOPES.items()}
    payloads |= {"pickled": pickle.dumps(Exploit()), "garbage": b"\xff\x00not json"}
    request = ChatRequest(chat_messages("hi")).to_json()
    with worker_processes(settings, 2) as workers:
        async with StreamQ(redis, settings) as sq:
            for name, payload in payloads.items():
                await redis.set(keys.request(name), request, ex=60)
                await redis.set(f"arq:job:{keys.arq_job_id(name)}", payload, ex=60)
                await redis.zadd(settings.queue_name, {keys.arq_job_id(name): 1})
            for name in payloads:
                with pytest.raises(JobFailed) as failed:
                    await sq.job(name).result()
                assert failed.value.error.code == "invalid_job", name
                assert "malformed" in failed.value.error.message
            job = await sq.enqueue_chat("still alive?")
            assert (await job.result()).text == simulated_text(chat_messages("still alive?"))
        assert [w.poll() for w in workers.processes] == [None, None]
    assert not marker.exists()


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"a": value}
    return value


async def test_a_request_too_deep_to_parse_ends_its_job(
    redis: Redis, settings: Settings, worker: None
) -> None:
    """A stored request nested 5,000 deep ends its job with one `invalid_request` event."""
    keys = Keys(settings.key_prefix)
    deep = '{"v": 1, "messages": [{"role": "user", "content": "hi"}], "params": {"extra_body": '
    raw = deep + '{"a": ' * 5000 + "1" + "}" * 5000 + "}}"
    async with StreamQ(redis, settings) as sq:
        await redis.set(keys.request("deep"), raw, ex=60)
        await redis.set(f"arq:job:{keys.arq_job_id('deep')}", _envelope(), ex=60)
        await redis.zadd(settings.queue_name, {keys.arq_job_id("deep"): 1})
        with pytest.raises(JobFailed) as failed:
            await sq.job("deep").result()
        events = [event.type async for event in sq.job("deep").events()]
    assert failed.value.error.code == "invalid_request"
    assert "nested deeper" in failed.value.error.message
    assert events == ["start", "error"]


def _envelope() -> bytes:
    return json.dumps({"f": JOB_FUNCTION, "a": [], "k": {}, "t": None, "et": 1}).encode()


@pytest.mark.parametrize("depth", [65, 5_000, 100_000])
async def test_producers_refuse_deep_requests_with_invalid_request(
    sq: StreamQ, settings: Settings, depth: int
) -> None:
    """Deep `extra_body` is an InvalidRequest from both producers, never a RecursionError."""
    with pytest.raises(InvalidRequest, match="nested deeper"):
        await sq.enqueue_chat("hi", extra_body=nested(depth))
    with (
        redis_lib.Redis.from_url(settings.redis_url) as client,
        streamq_sync.StreamQ(client, settings) as blocking,
        pytest.raises(InvalidRequest, match="nested deeper"),
    ):
        blocking.enqueue_chat("hi", extra_body=nested(depth))


@pytest.mark.parametrize("owned", ["model", "stream", "stream_options", "messages", "temperature"])
async def test_extra_body_cannot_override_what_streamq_sets(
    sq: StreamQ, redis: Redis, settings: Settings, worker: None, owned: str
) -> None:
    """`extra_body` keys that streamq sets (or validates) are refused at the edge, and by the
    worker for a request that bypassed the producer."""
    extra = {owned: {"stream": False}.get(owned, "other-model")}
    with pytest.raises(InvalidRequest, match=f"extra_body cannot set '{owned}'"):
        await sq.enqueue_chat("hi", extra_body=extra)
    keys = Keys(settings.key_prefix)
    stored = json.dumps({"v": 1, "messages": chat_messages("hi"), "params": {"extra_body": extra}})
    await redis.set(keys.request("owned"), stored, ex=60)
    await redis.set(f"arq:job:{keys.arq_job_id('owned')}", _envelope(), ex=60)
    await redis.zadd(settings.queue_name, {keys.arq_job_id("owned"): 1})
    with pytest.raises(JobFailed) as failed:
        await sq.job("owned").result()
    assert failed.value.error.code == "invalid_request"


@pytest.mark.parametrize("job_id", ["abc\n", "abc\r", "\nabc", "a\nb"])
async def test_job_ids_with_newlines_are_refused(sq: StreamQ, job_id: str) -> None:
    """A job id with a newline (even a trailing one) is invalid everywhere ids are taken."""
    with pytest.raises(InvalidRequest):
        check_job_id(job_id)
    with pytest.raises(InvalidRequest):
        await sq.enqueue_chat("hi", job_id=job_id)
    with pytest.raises(InvalidRequest):
        sq.job(job_id)


async def test_poisoned_leases_do_not_stop_the_reaper(redis: Redis, settings: Settings) -> None:
    """Leases whose job data is unreadable are dropped one by one; a lost job among them is
    still freed and run again to its end."""
    keys = Keys(settings.key_prefix)
    await redis.set(keys.request("zgood"), ChatRequest(chat_messages("lost")).to_json(), ex=60)
    await redis.hset(keys.state("poison"), mapping={"attempt": "x"})  # type: ignore[misc]
    await redis.hset(keys.state("zgood"), mapping={"attempt": 1})  # type: ignore[misc]
    for job in ("poison", "zgood"):
        await redis.expire(keys.state(job), 60)
    bad = ["1:poison", "no-colon", "1:bad\nid", "1:"]
    await redis.zadd(keys.running(), dict.fromkeys([*bad, "1:zgood"], 0))
    async with StreamQ(redis, settings) as sq, running_worker(settings.replace(lease=0.6)):
        result = await sq.job("zgood").result()
    assert (result.text, result.attempt) == (simulated_text(chat_messages("lost")), 2)
    assert await redis.zrange(keys.running(), 0, -1) == []
