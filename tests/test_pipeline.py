"""The core pipeline end to end: producer -> arq worker -> simulator -> Redis Stream -> reader."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from redis.asyncio import Redis

from streamq import (
    ChatJob,
    Delta,
    Done,
    Error,
    InvalidCursor,
    JobFailed,
    JobNotFound,
    Meta,
    ReadTimeout,
    Refusal,
    Reset,
    Settings,
    Start,
    StreamQ,
    ToolCallDelta,
)
from streamq.core.keys import Keys
from streamq.core.request import chat_messages
from streamq.dev.simulator import SimulatorThread, simulated_text, simulated_tokens
from streamq.worker.arq_worker import running_worker
from tests.harness.redis_servers import dump_keys
from tests.harness.waiting import STARTUP, poll_until


async def collect(job: ChatJob) -> str:
    return "".join([chunk async for chunk in job])


pytestmark = pytest.mark.usefixtures("worker")


async def test_async_for_yields_the_exact_text(sq: StreamQ) -> None:
    """`async for chunk in job` yields the text deltas that join into the model's answer."""
    job = await sq.enqueue_chat("Tell me about queues", system_prompt="Be brief.")
    messages = chat_messages("Tell me about queues", system_prompt="Be brief.")
    chunks = [chunk async for chunk in job]
    assert len(chunks) > 1
    assert all(isinstance(chunk, str) for chunk in chunks)
    assert "".join(chunks) == simulated_text(messages)


async def test_messages_are_system_then_history_then_user(sq: StreamQ, redis: Redis) -> None:
    """The system prompt comes first, then the history, then the user message."""
    history = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    job = await sq.enqueue_chat("and now?", system_prompt="sys", history=history)
    stored = json.loads(await redis.get(Keys(sq.settings.key_prefix).request(job.id)))
    assert [(m["role"], m["content"]) for m in stored["messages"]] == [
        ("system", "sys"),
        ("user", "hi"),
        ("assistant", "hello"),
        ("user", "and now?"),
    ]
    await job.result()


async def test_events_come_in_order_with_one_terminal_event(sq: StreamQ) -> None:
    """A start event, the upstream's meta, every delta in sequence, then exactly one `done`."""
    job = await sq.enqueue_chat("order please")
    events = [event async for event in job.events(queued=False)]
    assert isinstance(events[0], Start)
    assert events[0].job_id == job.id
    assert isinstance(events[1], Meta)
    assert isinstance(events[-1], Done)
    assert all(isinstance(e, Delta) for e in events[2:-1])
    assert [e.seq for e in events] == list(range(len(events)))
    assert {e.attempt for e in events} == {1}
    cursors = [tuple(map(int, e.cursor.split("-"))) for e in events]
    assert cursors == sorted(cursors)
    assert "".join(e.text for e in events if isinstance(e, Delta)) == simulated_text(
        chat_messages("order please")
    )


async def test_result_has_text_finish_reason_usage_and_model(sq: StreamQ) -> None:
    """`result()` assembles the text with its finish reason, usage and model."""
    job = await sq.enqueue_chat("usage?", model="sim-large")
    result = await job.result()
    tokens = simulated_tokens(chat_messages("usage?"))
    assert result.text == "".join(tokens)
    assert result.finish_reason == "stop"
    assert result.model == "sim-large"
    assert result.usage is not None
    assert result.usage["completion_tokens"] == len(tokens)
    assert result.usage["total_tokens"] == result.usage["prompt_tokens"] + len(tokens)


async def test_max_tokens_travels_with_the_job(sq: StreamQ) -> None:
    """Extra OpenAI parameters reach the upstream: max_tokens cuts the answer short."""
    job = await sq.enqueue_chat("long please", max_tokens=3, temperature=0.2, seed=7)
    result = await job.result()
    assert result.finish_reason == "length"
    assert result.text == simulated_text(chat_messages("long please"), seed=7, max_tokens=3)


TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


async def test_tool_call_fragments_are_streamed_and_assembled(sq: StreamQ) -> None:
    """Tool-call deltas carry index, id, name and argument fragments; result() joins them."""
    job = await sq.enqueue_chat("weather?", tools=TOOLS, tool_choice="required")
    fragments = [e async for e in job.events() if isinstance(e, ToolCallDelta)]
    assert len(fragments) > 2
    assert fragments[0].id
    assert fragments[0].name == "get_weather"
    result = await job.result()
    assert result.finish_reason == "tool_calls"
    [call] = result.tool_calls
    assert call.name == "get_weather"
    assert call.id == fragments[0].id
    assert isinstance(json.loads(call.arguments), dict)


async def test_reasoning_content_is_streamed(sq: StreamQ) -> None:
    """Reasoning text from `reasoning_content` arrives as reasoning events, apart from content."""
    job = await sq.enqueue_chat("think", extra_body={"simulator": {"mode": "reasoning"}})
    result = await job.result()
    assert result.reasoning
    assert result.text == simulated_text(chat_messages("think"))


async def test_refusals_are_streamed(sq: StreamQ) -> None:
    """Refusal deltas arrive as refusal events and are assembled apart from the content."""
    job = await sq.enqueue_chat("forbidden", extra_body={"simulator": {"mode": "refusal"}})
    events = [e async for e in job.events()]
    assert any(isinstance(e, Refusal) for e in events)
    result = await job.result()
    assert result.choices[0].refusal
    assert result.text == ""


async def test_usage_chunk_without_choices_is_read(sq: StreamQ) -> None:
    """The final usage chunk has no choices: it is read for usage, never indexed into."""
    job = await sq.enqueue_chat("usage only at the end")
    done = [e async for e in job.events()][-1]
    assert isinstance(done, Done)
    assert done.usage is not None
    assert done.usage["completion_tokens"] > 0


async def test_n_choices_are_kept_apart(sq: StreamQ) -> None:
    """With n=2 each choice is assembled on its own; `async for` yields the first choice."""
    job = await sq.enqueue_chat("two ways", n=2)
    result = await job.result()
    messages = chat_messages("two ways")
    assert [c.text for c in result.choices] == [
        simulated_text(messages, choice=0),
        simulated_text(messages, choice=1),
    ]
    assert await collect(job) == simulated_text(messages, choice=0)


@pytest.mark.parametrize(
    "server_habit",
    [
        {"role_chunk": False},
        {"usage_in_last_choice_chunk": True},
        {"fault": "no_done"},
    ],
)
async def test_server_habits_do_not_change_the_stream(
    sq: StreamQ, server_habit: dict[str, Any]
) -> None:
    """No role chunk, usage on the finish chunk, or no [DONE]: the same text and usage."""
    job = await sq.enqueue_chat("habits", extra_body={"simulator": server_habit})
    result = await job.result()
    assert result.text == simulated_text(chat_messages("habits"))
    assert result.finish_reason == "stop"
    assert result.usage is not None


async def test_replay_after_the_job_finished(sq: StreamQ) -> None:
    """A reader that starts after the end replays every event."""
    job = await sq.enqueue_chat("replay me")
    first = await job.result()
    assert await collect(job) == first.text
    again = await sq.job(job.id).result()
    assert again.text == first.text


async def test_resume_from_a_cursor_has_no_gap_and_no_duplicate(sq: StreamQ) -> None:
    """Resuming after any cursor yields exactly the entries after it."""
    job = await sq.enqueue_chat("resume")
    events = [e async for e in job.events()]
    for k in (0, 1, len(events) // 2, len(events) - 2):
        resumed = [e async for e in job.events(after=events[k].cursor)]
        assert resumed == events[k + 1 :]


async def test_resume_mid_stream_while_live(sq: StreamQ) -> None:
    """A reader that drops mid-stream and resumes from its cursor sees every delta once."""
    job = await sq.enqueue_chat("live", extra_body={"simulator": {"tokens_per_second": 200}})
    seen: list[str] = []
    cursor = None
    async with job.events() as events:
        async for event in events:
            cursor = event.cursor
            if isinstance(event, Delta):
                seen.append(event.text)
                if len(seen) == 3:
                    break
    async for event in job.events(after=cursor):
        if isinstance(event, Delta):
            seen.append(event.text)
    assert "".join(seen) == simulated_text(chat_messages("live"))


async def test_same_job_id_never_starts_a_second_generation(
    settings: Settings, redis: Redis
) -> None:
    """Enqueueing an existing job id, even concurrently, queues one job and generates once."""
    settings = settings.replace(queue_name=settings.queue_name + ":own")  # no worker yet
    async with StreamQ(redis, settings) as sq:
        copies = await asyncio.gather(*(sq.enqueue_chat("once", job_id="order-42") for _ in "abc"))
        assert {job.id for job in copies} == {"order-42"}
        assert await redis.zcard(settings.queue_name) == 1
        async with running_worker(settings):
            await copies[0].result()

            async def finished() -> bool:  # arq may still be finishing the job
                return not await redis.zcard(settings.queue_name)

            await poll_until(finished, STARTUP, "arq to finish the job")
            again = await sq.enqueue_chat("once", job_id="order-42")
            assert await redis.zcard(settings.queue_name) == 0
            await again.result()
        starts = [e async for e in again.events() if isinstance(e, Start)]
        assert len(starts) == 1


async def test_generated_job_ids_are_unique(sq: StreamQ) -> None:
    """Without a job id, every enqueue gets a fresh one."""
    jobs = [await sq.enqueue_chat("same text") for _ in range(3)]
    assert len({job.id for job in jobs}) == 3
    for job in jobs:
        await job.result()


async def test_unknown_job_id_raises_job_not_found(sq: StreamQ) -> None:
    """Reading a job that never existed raises JobNotFound at once instead of waiting."""
    job = sq.job("never-enqueued")
    with pytest.raises(JobNotFound):
        await job.result(timeout=30)
    with pytest.raises(JobNotFound):
        await collect(job)


async def test_invalid_cursor_is_rejected(sq: StreamQ) -> None:
    """A cursor that is not a stream entry id raises InvalidCursor."""
    job = await sq.enqueue_chat("cursor")
    with pytest.raises(InvalidCursor):
        job.events(after="yesterday")
    await job.result()


async def test_upstream_error_ends_the_stream_with_an_error_event(sq: StreamQ) -> None:
    """A non-retryable upstream failure ends the job with `error`; the worker goes on."""
    bad = await sq.enqueue_chat("fail", extra_body={"simulator": {"fault": "http_400"}})
    with pytest.raises(JobFailed) as failed:
        await bad.result()
    assert failed.value.error.code == "upstream_bad_request"
    assert failed.value.error.retryable is False
    events = [e async for e in bad.events()]
    assert [type(e) for e in events] == [Start, Error]
    with pytest.raises(JobFailed):
        await collect(bad)
    good = await sq.enqueue_chat("after the failure")
    assert await collect(good) == simulated_text(chat_messages("after the failure"))


async def test_mid_stream_disconnects_are_retried_then_end_with_an_error(sq: StreamQ) -> None:
    """An upstream that keeps dropping mid-stream is retried as new attempts, then gives up."""
    fault = {"fault": "disconnect", "after": 3}
    job = await sq.enqueue_chat("drop", extra_body={"simulator": fault})
    events = [e async for e in job.events()]
    assert isinstance(events[-1], Error)
    assert events[-1].retryable
    assert events[-1].attempt == sq.settings.max_attempts
    assert sum(isinstance(e, Reset) for e in events) == sq.settings.max_attempts - 1
    last_attempt = [e for e in events if e.attempt == events[-1].attempt]
    assert sum(isinstance(e, Delta) for e in last_attempt) == 3


async def test_a_transient_failure_is_retried_and_the_job_succeeds(sq: StreamQ) -> None:
    """A 429 on the first try (with retry-after) is retried; readers get the full text once."""
    fault = {"fault": "http_429", "retry_after": 0.2, "fault_times": 1, "fault_key": "once-429"}
    job = await sq.enqueue_chat("busy", extra_body={"simulator": fault})
    assert await collect(job) == simulated_text(chat_messages("busy"))
    result = await job.result()
    assert result.attempt == 2


async def test_payload_that_bypassed_the_producer_ends_with_an_error(
    sq: StreamQ, redis: Redis, settings: Settings
) -> None:
    """A request written straight into Redis is validated again by the worker."""
    keys = Keys(settings.key_prefix)
    await redis.set(keys.request("raw-1"), b"\x80not json")
    await redis.set(
        keys.request("raw-2"),
        json.dumps({"v": 1, "model": None, "messages": [{"role": "wizard", "content": "x"}]}),
    )
    for job_id in ("raw-1", "raw-2"):
        await sq._queue.enqueue_job("streamq_chat", _job_id=keys.arq_job_id(job_id))
        with pytest.raises(JobFailed) as failed:
            await sq.job(job_id).result()
        assert failed.value.error.code == "invalid_request"


async def test_api_key_never_reaches_redis(sq: StreamQ, redis: Redis, settings: Settings) -> None:
    """No key streamq writes holds the OpenAI API key."""
    job = await sq.enqueue_chat("secret?")
    await job.result()
    assert settings.openai_api_key
    assert settings.openai_api_key not in await dump_keys(redis, f"{settings.key_prefix}*")


async def test_streams_expire(sq: StreamQ, redis: Redis, settings: Settings) -> None:
    """Every key of a finished job has a TTL no longer than STREAMQ_STREAM_TTL."""
    job = await sq.enqueue_chat("ttl")
    await job.result()
    keys = Keys(settings.key_prefix)
    for key in (keys.events(job.id), keys.request(job.id)):
        ttl = await redis.ttl(key)
        assert 0 < ttl <= settings.stream_ttl


async def test_sequential_jobs_reuse_the_upstream_connection(
    sq: StreamQ, simulator: SimulatorThread
) -> None:
    """A finished stream hands its HTTP connection back, so the next job does not connect anew."""
    await (await sq.enqueue_chat("warm up")).result()
    connections = simulator.stats.connections
    for i in range(5):
        await (await sq.enqueue_chat(f"again {i}")).result()
    assert simulator.stats.connections == connections


async def test_a_finished_stream_gives_back_its_preallocated_space(
    sq: StreamQ, redis: Redis, settings: Settings
) -> None:
    """Redis preallocates 4 KB for a stream's newest node; a finished stream gives it back."""
    job = await sq.enqueue_chat("compact", extra_body={"simulator": {"reply_tokens": 20}})
    await job.result()
    events_key = Keys(settings.key_prefix).events(job.id)
    assert await redis.xlen(events_key) == 23  # start, meta, 20 deltas, done
    assert await redis.memory_usage(events_key, samples=0) < 2048
    assert 0 < await redis.ttl(events_key) <= settings.stream_ttl
    assert await redis.keys(f"{events_key}*") == [events_key.encode()]


async def test_early_break_and_cancel_release_the_connection(
    sq: StreamQ, settings: Settings
) -> None:
    """A reader that breaks out or is cancelled leaves no Redis connection blocked in XREAD."""
    name = f"{settings.key_prefix}-reader"
    slow = await sq.enqueue_chat("slow", extra_body={"simulator": {"tokens_per_second": 20}})

    async def blocked_readers() -> list[dict[str, str]]:
        clients = await sq._redis.client_list()
        return [c for c in clients if c.get("name") == name and "b" in c.get("flags", "")]

    async def one_reader_blocked() -> bool:
        return len(await blocked_readers()) == 1

    async def no_reader_blocked() -> bool:
        return not await blocked_readers()

    async with Redis.from_url(settings.redis_url, client_name=name) as reader_redis:
        job = StreamQ(reader_redis, settings).job(slow.id)
        async with job.events() as events:
            async for _ in events:
                break
        assert await blocked_readers() == []

        task = asyncio.create_task(collect(job))
        await poll_until(one_reader_blocked, STARTUP, "the reader to block in XREAD")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await poll_until(no_reader_blocked, STARTUP, "the cancelled reader's XREAD released")
    await slow.cancel()  # the worker need not drain it


async def test_reader_waits_for_a_job_no_worker_has_started(
    settings: Settings, redis: Redis
) -> None:
    """A reader that starts before any worker picks the job up waits, then gets everything."""
    other = settings.replace(queue_name=settings.queue_name + ":later")
    name = f"{settings.key_prefix}-early"
    async with (
        StreamQ(redis, other) as sq,
        Redis.from_url(settings.redis_url, client_name=name) as reader_redis,
    ):
        job = await sq.enqueue_chat("wait for me")
        reading = asyncio.create_task(collect(StreamQ(reader_redis, other).job(job.id)))

        async def waiting() -> bool:  # blocked in XREAD on the stream no worker has started
            clients = await redis.client_list()
            return any(c["name"] == name and "b" in c["flags"] for c in clients)

        await poll_until(waiting, STARTUP, "the reader to wait in XREAD")
        assert not reading.done()
        async with running_worker(other):
            assert await reading == simulated_text(chat_messages("wait for me"))


async def test_read_timeout_bounds_the_wait(settings: Settings, redis: Redis) -> None:
    """Waiting for a job that never starts ends with ReadTimeout after the timeout."""
    other = settings.replace(queue_name=settings.queue_name + ":nobody")
    async with StreamQ(redis, other) as sq:
        job = await sq.enqueue_chat("anyone?")
        with pytest.raises(ReadTimeout):
            await job.result(timeout=0.3)


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"n": 2},
        {"tools": TOOLS, "tool_choice": "required"},
        {"extra_body": {"simulator": {"mode": "reasoning"}}},
    ],
    ids=["text", "n=2", "tools", "reasoning"],
)
async def test_a_buffered_job_gets_the_same_answer_in_one_piece(
    sq: StreamQ, params: dict[str, Any]
) -> None:
    """`buffered=True` asks the upstream for the whole answer at once: the same result (with
    the usage such a call reports), each choice's text in one event."""
    streamed = await (await sq.enqueue_chat("whole", **params)).result()
    job = await sq.enqueue_chat("whole", buffered=True, **params)
    whole = await job.result()
    assert [(c.text, c.reasoning, c.finish_reason) for c in whole.choices] == [
        (c.text, c.reasoning, c.finish_reason) for c in streamed.choices
    ]
    assert [(t.name, t.arguments) for t in whole.tool_calls] == [
        (t.name, t.arguments) for t in streamed.tool_calls
    ]
    assert whole.usage is not None
    assert whole.usage["completion_tokens"] > 0
    deltas = [e async for e in job.events() if isinstance(e, Delta)]
    assert len(deltas) == len([c for c in whole.choices if c.text])
