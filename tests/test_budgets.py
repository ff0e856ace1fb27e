"""Token and request budgets: estimates, the fleet-wide window in Redis, and what the simulator
sees of a budgeted fleet (windows of a few seconds stand in for the minute)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from typing import Literal

import pytest
from redis.asyncio import Redis

from streamq import Settings, StreamQ
from streamq.core import scripts
from streamq.core.events import Done, Event, Queued, decode_entry
from streamq.core.keys import Keys
from streamq.core.request import build_request, chat_messages
from streamq.core.settings import Budget
from streamq.dev.local_redis import LocalRedis
from streamq.dev.simulator import SimulatorThread, simulated_text
from streamq.job import ChatJob
from streamq.responses.request import build_responses_request
from streamq.worker.admission import Admission
from streamq.worker.arq_worker import running_worker
from streamq.worker.budgets import Ask, estimate_tokens, used_tokens
from tests.harness.waiting import poll_until
from tests.test_operations import documented_acl_users

pytestmark = pytest.mark.slow  # in-process workers against the simulator, ~30 s in all

WINDOW = 2.0  # seconds: STREAMQ_BUDGET_WINDOW for these tests
REPLY = 40  # completion tokens of every job (max_tokens: the estimate's output part is exact)
FULL = {"simulator": {"reply_tokens": REPLY}}


def test_the_estimate_is_a_quarter_of_the_prompt_plus_the_maximum_output() -> None:
    """Characters / 4 and 4 a message, plus max tokens (or the default) of either API."""
    messages = chat_messages("x" * 40, system_prompt="y" * 8)
    chat = build_request(messages, "m", {"max_tokens": 100}, max_bytes=10_000)
    assert estimate_tokens(chat, 1000) == 10 + 2 + 2 * 4 + 100
    newer = build_request(messages, "m", {"max_completion_tokens": 7}, max_bytes=10_000)
    assert estimate_tokens(newer, 1000) == 20 + 7
    unbounded = build_request(messages, "m", {}, max_bytes=10_000)
    assert estimate_tokens(unbounded, 1000) == 20 + 1000
    responses = build_responses_request(
        [{"role": "user", "content": "z" * 16}], "m", "w" * 4, {"max_output_tokens": 50}, {},
        max_bytes=10_000,
    )  # fmt: skip
    assert estimate_tokens(responses, 1000) == 4 + 1 + 2 * 4 + 50


def test_used_tokens_come_from_the_chat_shaped_usage() -> None:
    assert used_tokens({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}) == 7
    assert used_tokens({"prompt_tokens": 3, "completion_tokens": 4}) == 7
    assert used_tokens({"prompt_tokens": 3}) is None
    assert used_tokens(None) is None


@contextlib.asynccontextmanager
async def admission(redis: Redis, settings: Settings) -> AsyncIterator[Admission]:
    gate = Admission(redis, Keys(settings.key_prefix), {}, lease=settings.lease, api_key="k")
    gate.start()
    try:
        yield gate
    finally:
        await gate.aclose()


async def admit(gate: Admission, member: str, ask: Ask, reasons: list[str] | None = None) -> None:
    """Wait for admission as a job would, noting the reasons it is told."""

    async def waiting(reason: str, eta: float | None) -> None:
        if reasons is not None:
            reasons.append(reason)

    async with gate.slot("m", member, ask, waiting):
        pass


async def test_a_job_waits_until_its_tokens_fit_the_window(
    redis: Redis, settings: Settings
) -> None:
    """Two jobs of 60 fit a budget of 150; the third waits for the first to leave the window,
    told once that it waits for tokens."""
    budget = Ask(60, WINDOW, Budget(tokens=150))
    async with admission(redis, settings) as gate:
        await admit(gate, "1:a", budget)
        await admit(gate, "1:b", budget)
        reasons: list[str] = []
        third = asyncio.create_task(admit(gate, "1:c", budget, reasons))
        await poll_until(lambda: bool(reasons), 10, "the third job to wait")
        assert not third.done()
        await asyncio.wait_for(third, 10 * WINDOW)
    assert reasons == ["token_budget"]


async def test_an_admission_sent_twice_counts_its_tokens_once(
    redis: Redis, settings: Settings
) -> None:
    """redis-py resends a command whose reply was lost: ADMIT run twice for one attempt admits
    it both times, with one slot and its tokens counted once, so the next job is judged on
    what really is in the window."""
    budget = Ask(60, 60.0, Budget(tokens=100))  # a window no test outlasts
    async with admission(redis, settings) as gate:
        admit_call = redis.register_script(scripts.ADMIT)
        keys, args = gate._admission_call("m", "1:a", 2, budget)
        for _ in range(2):
            assert await admit_call(keys=keys, args=args) == [1, 0, b""]
        totals = [k async for k in redis.scan_iter(match=f"{settings.key_prefix}:*:total")]
        assert [await redis.get(total) for total in totals] == [b"60"]
        assert await redis.zcard(keys[1]) == 1
        keys, args = gate._admission_call("m", "1:b", 2, budget)
        got, _, why = await admit_call(keys=keys, args=args)
        assert (got, why) == (0, b"token_budget")
        await redis.delete(*keys)


async def test_a_lost_running_total_is_counted_again(redis: Redis, settings: Settings) -> None:
    """Without its running total (lost, or deleted) a window is counted from its entries."""
    budget = Ask(60, WINDOW, Budget(tokens=150))
    async with admission(redis, settings) as gate:
        await admit(gate, "1:a", budget)
        await admit(gate, "1:b", budget)
        totals = [k async for k in redis.scan_iter(match=f"{settings.key_prefix}:*:total")]
        assert await redis.delete(*totals) == 1
        reasons: list[str] = []
        await asyncio.wait_for(admit(gate, "1:c", budget, reasons), 10 * WINDOW)
    assert reasons == ["token_budget"]


async def test_the_real_usage_replaces_the_estimate(redis: Redis, settings: Settings) -> None:
    """A job estimated at 100 that used 10 leaves room for another of 100 in a budget of 120."""
    big = Ask(100, 60.0, Budget(tokens=120))  # a window no test outlasts
    async with admission(redis, settings) as gate:
        await admit(gate, "1:a", big)
        await gate.settle("m", "1:a", big, 10)
        await asyncio.wait_for(admit(gate, "1:b", big), 5)


async def test_a_job_over_the_whole_budget_runs_alone_in_an_empty_window(
    redis: Redis, settings: Settings
) -> None:
    """An estimate larger than the budget does not wait forever: an empty window admits it;
    a small job waiting behind it does not take its turn meanwhile."""
    small, huge = Ask(10, WINDOW, Budget(tokens=100)), Ask(500, WINDOW, Budget(tokens=100))
    async with admission(redis, settings) as gate:
        await admit(gate, "1:small", small)
        order: list[str] = []

        async def admitted(member: str, ask: Ask) -> None:
            await admit(gate, member, ask)
            order.append(member)

        first = asyncio.create_task(admitted("1:huge", huge))
        pattern = f"{settings.key_prefix}:admission:budget:*:head"

        async def head_written() -> bool:
            return bool([k async for k in redis.scan_iter(match=pattern)])

        await poll_until(head_written, 10, "the huge job to become the window's head")
        second = asyncio.create_task(admitted("1:later", small))
        await asyncio.wait_for(asyncio.gather(first, second), 10 * WINDOW)
    assert order == ["1:huge", "1:later"]


async def test_a_request_budget_counts_requests(redis: Redis, settings: Settings) -> None:
    """Two requests per window: the third waits, told so."""
    ask = Ask(1, WINDOW, Budget(requests=2))
    async with admission(redis, settings) as gate:
        await admit(gate, "1:a", ask)
        await admit(gate, "1:b", ask)
        reasons: list[str] = []
        await asyncio.wait_for(admit(gate, "1:c", ask, reasons), 10 * WINDOW)
    assert reasons == ["request_budget"]


async def test_the_budget_windows_expire(redis: Redis, settings: Settings) -> None:
    """Every key a budget writes has a TTL."""
    ask = Ask(10, WINDOW, Budget(tokens=10), tenant="t", tenant_budget=Budget(tokens=10))
    async with admission(redis, settings) as gate:
        await admit(gate, "1:a", ask)
        waiter = asyncio.create_task(admit(gate, "1:b", ask))
        keys = Keys(settings.key_prefix)

        async def head_written() -> bool:
            return bool(
                [k async for k in redis.scan_iter(match=f"{keys.prefix}:admission:budget:*:head")]
            )

        await poll_until(head_written, 10, "the waiting job's head mark")
        written = [k async for k in redis.scan_iter(match=f"{keys.prefix}:admission:budget:*")]
        assert len(written) >= 3
        for key in written:
            assert await redis.pttl(key) > 0, key
        await asyncio.wait_for(waiter, 10 * WINDOW)


# --- a fleet against the simulator ----------------------------------------------------------


async def stream_events(redis: Redis, settings: Settings, job: ChatJob) -> list[Event]:
    entries = await redis.xrange(Keys(settings.key_prefix).events(job.id))
    return [decode_entry(cursor.decode(), fields) for cursor, fields in entries]


def queued_reasons(events: list[Event]) -> list[str]:
    return [e.reason for e in events if isinstance(e, Queued)]


async def test_the_simulator_never_sees_more_than_the_token_budget_in_any_window(
    sq: StreamQ, redis: Redis, settings: Settings, simulator: SimulatorThread
) -> None:
    """Budget N = 400 tokens per window, two workers, 24 jobs of about 45 tokens (~1,080 in
    all: three windows' worth): in any window the simulator serves at most N plus one job's
    estimate, and every job finishes with its answer. Jobs that waited said so once."""
    budget = 400
    budgeted = settings.replace(
        model_budgets={settings.openai_model: Budget(tokens=budget)}, budget_window=WINDOW
    )
    simulator.stats.reset()
    async with running_worker(budgeted), running_worker(budgeted):
        jobs = [
            await sq.enqueue_chat(f"budget {i}", max_tokens=REPLY, extra_body=FULL)
            for i in range(24)
        ]
        results = await asyncio.gather(*(job.result(timeout=60) for job in jobs))
    for i, result in enumerate(results):
        assert result.text == simulated_text(chat_messages(f"budget {i}"), length=REPLY)
    request = build_request(chat_messages("budget 10"), None, {"max_tokens": REPLY}, max_bytes=1000)
    one_job = estimate_tokens(request, 1000)
    peak = simulator.stats.peak_tokens(settings.openai_model, WINDOW)
    print(f"peak tokens in any {WINDOW}s: {peak} (budget {budget}, one job ~{one_job})")
    assert peak <= budget + one_job
    streams = [await stream_events(redis, settings, job) for job in jobs]
    waited = [queued_reasons(events) for events in streams]
    assert any(reasons == ["token_budget"] for reasons in waited)
    for reasons, events in zip(waited, streams, strict=True):
        assert all(a != b for a, b in itertools.pairwise(reasons)), reasons
        assert isinstance(events[-1], Done)


async def test_a_429_pauses_a_budgeted_model_without_a_limit(
    sq: StreamQ, redis: Redis, settings: Settings
) -> None:
    """A model with a budget and no concurrency limit is still paused fleet-wide by a 429: the
    next job waits it out, told why, and both finish."""
    budgeted = settings.replace(model_budgets={"*": Budget(requests=1000)})
    fault = {
        "fault": "http_429",
        "retry_after": 2.0,  # long enough for the next job to be taken meanwhile, when loaded
        "fault_times": 1,
        "fault_key": sq.settings.key_prefix,
    }
    async with running_worker(budgeted):
        first = await sq.enqueue_chat("rate limited", extra_body={"simulator": fault})
        pattern = f"{settings.key_prefix}:admission:*:paused"

        async def paused() -> bool:
            return bool([key async for key in redis.scan_iter(match=pattern)])

        await poll_until(paused, 10, "the model's pause", interval=0.01)
        second = await sq.enqueue_chat("waits for the pause")
        await second.result(timeout=30)
        await first.result(timeout=30)
    assert queued_reasons(await stream_events(redis, settings, second)) == ["rate_limited"]


@pytest.mark.parametrize("api", ["chat", "responses"])
async def test_an_ended_job_counts_its_real_usage_in_the_window(
    sq: StreamQ, redis: Redis, settings: Settings, api: Literal["chat", "responses"]
) -> None:
    """Once a job ended, its model's and its tenant's windows count the upstream's usage, not
    the estimate (Chat Completions and Responses upstreams alike)."""
    budgeted = settings.replace(
        model_budgets={"*": Budget(tokens=100_000)},
        tenant_budgets={"acme": Budget(tokens=100_000)},
        budget_window=60.0,  # nothing leaves the window during the test
    )
    job = await sq.enqueue_chat("usage counts", upstream_api=api)  # no max_tokens: 1000 assumed
    await redis.set(Keys(settings.key_prefix).owner(job.id), "acme", ex=600)
    async with running_worker(budgeted):
        result = await job.result(timeout=30)
    assert result.usage is not None
    used = result.usage["total_tokens"]
    keys = Keys(settings.key_prefix)
    pattern = f"{settings.key_prefix}:admission:budget:*"
    windows = [k.decode() async for k in redis.scan_iter(match=pattern, _type="zset")]
    assert len(windows) == 2
    for window in windows:
        assert await redis.zrange(window, 0, -1) == [f"1:{job.id}|{used}".encode()]
        assert await redis.get(keys.budget_total(window)) == str(used).encode()


async def test_the_simulator_never_sees_more_than_the_request_budget_in_any_window(
    sq: StreamQ, settings: Settings, simulator: SimulatorThread
) -> None:
    """4 requests per window, 12 jobs: at most 4 (plus one) in any window, all finish."""
    budgeted = settings.replace(model_budgets={"*": Budget(requests=4)}, budget_window=WINDOW)
    simulator.stats.reset()
    async with running_worker(budgeted):
        jobs = [await sq.enqueue_chat(f"requests {i}", max_tokens=5) for i in range(12)]
        await asyncio.gather(*(job.result(timeout=60) for job in jobs))
    peak = simulator.stats.peak_requests(settings.openai_model, WINDOW)
    print(f"peak requests in any {WINDOW}s: {peak} (budget 4)")
    assert peak <= 4 + 1


async def test_one_tenants_budget_does_not_hold_back_another_tenants_jobs(
    sq: StreamQ, redis: Redis, settings: Settings
) -> None:
    """Tenant A may use 100 tokens per window (two jobs); tenant B has no budget. B's jobs,
    enqueued after A's, all finish while A's still wait, and never wait for a budget."""
    keys = Keys(settings.key_prefix)
    budgeted = settings.replace(
        tenant_budgets={"tenant-a": Budget(tokens=100)}, budget_window=WINDOW
    )
    a_jobs = [
        await sq.enqueue_chat(f"tenant a {i}", max_tokens=REPLY, extra_body=FULL) for i in range(6)
    ]
    b_jobs = [
        await sq.enqueue_chat(f"tenant b {i}", max_tokens=REPLY, extra_body=FULL) for i in range(6)
    ]
    for job in a_jobs:
        await redis.set(keys.owner(job.id), "tenant-a", ex=600)
    for job in b_jobs:
        await redis.set(keys.owner(job.id), "tenant-b", ex=600)
    async with running_worker(budgeted):
        await asyncio.gather(*(job.result(timeout=60) for job in b_jobs))
        a_done = [await job.status() for job in a_jobs]
        await asyncio.gather(*(job.result(timeout=60) for job in a_jobs))
    assert sum(status.state == "done" for status in a_done) < len(a_jobs)
    for job in b_jobs:
        assert queued_reasons(await stream_events(redis, settings, job)) == []
    a_reasons = [queued_reasons(await stream_events(redis, settings, job)) for job in a_jobs]
    assert sum(reasons == ["token_budget"] for reasons in a_reasons) >= 3


async def test_the_documented_worker_user_runs_budgets_with_nothing_denied(
    settings: Settings,
) -> None:
    """The worker's ACL user of docs/operations.md, with the owner read its budgets section
    adds, runs model and tenant budgets (a job waiting, the head mark) with no ACL LOG entry."""
    users = {user[2]: user for user in documented_acl_users(settings.key_prefix)}
    worker_user = [*users["streamq-worker"], f"%R~{settings.key_prefix}:{{*}}:owner"]
    with LocalRedis() as server:
        async with Redis.from_url(server.url) as admin:
            await admin.execute_command(*users["streamq-producer"])
            await admin.execute_command(*worker_user)

            def as_user(name: str) -> Settings:
                url = f"redis://streamq-{name}:{name}-password@127.0.0.1:{server.port}/0"
                return settings.replace(redis_url=url)

            budgeted = as_user("worker").replace(
                model_budgets={"*": Budget(tokens=10_000, requests=100)},
                tenant_budgets={"acme": Budget(tokens=100)},
                model_limits={"*": 5},
                budget_window=WINDOW,
            )
            try:
                producer = as_user("producer")
                async with StreamQ.from_url(producer.redis_url, producer) as sq:
                    jobs = [
                        await sq.enqueue_chat(f"acl {i}", max_tokens=REPLY, extra_body=FULL)
                        for i in range(3)
                    ]
                    for job in jobs:
                        await admin.set(Keys(settings.key_prefix).owner(job.id), "acme", ex=600)
                    async with running_worker(budgeted):
                        await asyncio.gather(*(job.result(timeout=60) for job in jobs))
                    waited = [queued_reasons(await stream_events(admin, settings, j)) for j in jobs]
                    assert ["token_budget"] in waited
            finally:
                denied = await admin.execute_command("ACL", "LOG")
                assert not denied, denied
