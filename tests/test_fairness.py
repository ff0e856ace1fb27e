"""Fair shares between tenants: virtual start tags on enqueue, PICK by the lowest tag, the
jobs put back in arq's queue at the front, and the bound on another tenant's wait behind a
backlog (counted in starts, not seconds)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx2
import pytest
from redis.asyncio import Redis

from streamq import ConfigError, InvalidRequest, JobIdConflict, JobIdTaken, Settings, StreamQ
from streamq.admin import queries
from streamq.core import scripts
from streamq.core.keys import (
    DEFAULT_TENANT,
    Keys,
    fair_clock,
    fair_order,
    fair_pick,
    fair_tenants,
)
from streamq.gateway import GatewayConfig, create_app
from streamq.sync import StreamQ as SyncStreamQ
from streamq.worker.arq_worker import running_worker
from tests.harness.gateway import TOKEN_A, TOKENS, GatewayThread
from tests.harness.waiting import poll_until

QUICK = {"simulator": {"reply_tokens": 1}}
BACKLOG, FEW = 2_000, 10


async def tags(redis: Redis, settings: Settings) -> dict[str, float]:
    """The fair order: arq job id -> virtual start tag."""
    order = await redis.zrange(fair_order(settings.queue_name), 0, -1, withscores=True)
    return {member.decode(): score for member, score in order}


def test_tenant_weights_are_positive_numbers_of_valid_tenants() -> None:
    env = {"STREAMQ_TENANT_WEIGHTS": " acme=3, beta=0.5 ,"}
    settings = Settings.from_env(env)
    assert settings.tenant_weights == {"acme": 3.0, "beta": 0.5}
    assert settings.tenant_weight("acme") == 3.0
    assert settings.tenant_weight("someone") == 1.0
    for bad in ("acme=0", "acme=-1", "acme", "=3", "a b=2", "acme=inf", "acme=nan", "acme=x"):
        with pytest.raises(ConfigError, match="STREAMQ_TENANT_WEIGHTS"):
            Settings.from_env({"STREAMQ_TENANT_WEIGHTS": bad})
    with pytest.raises(ConfigError):
        Settings(tenant_weights={"acme": 0.0})


async def test_enqueue_tags_each_tenants_jobs_by_its_weight(
    settings: Settings, redis: Redis
) -> None:
    """tag = max(clock, tenant's last) + 1/weight; a tenant given owns the job; the fair keys
    expire; an idempotent repeat is not tagged again; a bad tenant never reaches Redis."""
    settings = settings.replace(tenant_weights={"acme": 2.0})
    keys = Keys(settings.key_prefix)
    async with StreamQ(redis, settings) as sq:
        acme = [await sq.enqueue_chat(f"a{i}", tenant="acme") for i in range(3)]
        plain = await sq.enqueue_chat("nobody said")
        again = await sq.enqueue_chat("a0", job_id=acme[0].id, tenant="acme")
        assert again.id == acme[0].id
        with pytest.raises(InvalidRequest):
            await sq.enqueue_chat("x", tenant="no spaces")
    order = await tags(redis, settings)
    assert [order[keys.arq_job_id(job.id)] for job in acme] == [0.5, 1.0, 1.5]
    assert order[keys.arq_job_id(plain.id)] == 1.0
    assert len(order) == 4
    last = await redis.hgetall(fair_tenants(settings.queue_name))  # type: ignore[misc]
    assert last == {b"acme": b"1.5", DEFAULT_TENANT.encode(): b"1"}
    assert await redis.get(keys.owner(acme[0].id)) == b"acme"
    assert await redis.get(keys.owner(plain.id)) is None  # no tenant given: no owner
    for key in (fair_order(settings.queue_name), fair_tenants(settings.queue_name)):
        assert 0 < await redis.ttl(key) <= settings.stream_ttl


async def test_a_tenant_claims_an_id_nobody_owns_and_is_refused_another_tenants(
    settings: Settings, redis: Redis
) -> None:
    """``tenant=`` claims the job as the gateway's tenants do, in the enqueue's one script: an
    id nobody owns (a job enqueued without a tenant, too) becomes the tenant's, unless it holds
    another request (``JobIdConflict``); an id another tenant owns raises ``JobIdTaken`` with
    nothing written, on both clients."""
    keys = Keys(settings.key_prefix)
    theirs = uuid.uuid4().hex
    await redis.set(keys.owner(theirs), "beta", ex=600)
    async with StreamQ(redis, settings) as sq:
        plain = await sq.enqueue_chat("nobody's yet")
        await sq.enqueue_chat("nobody's yet", job_id=plain.id, tenant="acme")
        with pytest.raises(JobIdTaken):
            await sq.enqueue_chat("mine now", job_id=theirs, tenant="acme")
        with pytest.raises(JobIdTaken):
            await sq.enqueue_chat("nobody's yet", job_id=plain.id, tenant="beta")
        other = await sq.enqueue_chat("another's, and nobody owns it")
        with pytest.raises(JobIdConflict):  # another request under that id: not claimed
            await sq.enqueue_chat("a different request", job_id=other.id, tenant="acme")
    with SyncStreamQ.from_url(settings.redis_url, settings) as sync, pytest.raises(JobIdTaken):
        sync.enqueue_chat("mine now", job_id=theirs, tenant="acme")
    assert await redis.get(keys.owner(plain.id)) == b"acme"
    assert await redis.get(keys.owner(other.id)) is None
    assert await redis.get(keys.owner(theirs)) == b"beta"
    assert await redis.exists(keys.request(theirs), keys.arq_job(theirs)) == 0
    assert keys.arq_job_id(theirs) not in await tags(redis, settings)


def test_the_sync_client_tags_and_owns_alike(settings: Settings) -> None:
    with SyncStreamQ.from_url(settings.redis_url, settings) as sq:
        job = sq.enqueue_chat("sync", tenant="beta")
        assert sq._redis.get(Keys(settings.key_prefix).owner(job.id)) == b"beta"
        member = Keys(settings.key_prefix).arq_job_id(job.id)
        assert sq._redis.zscore(fair_order(settings.queue_name), member) == 1.0


async def test_a_job_arq_lost_goes_back_to_the_front_when_enqueued_again(
    settings: Settings, redis: Redis
) -> None:
    """The same id again, unfinished and gone from arq's queue: queued again (both clients),
    at the clock's tag."""
    keys, queue = Keys(settings.key_prefix), settings.queue_name
    await redis.set(fair_clock(queue), "5")

    async def lose(job_id: str) -> None:
        arq_id = keys.arq_job_id(job_id)
        await redis.zrem(queue, arq_id)
        await redis.zrem(fair_order(queue), arq_id)
        await redis.delete(keys.arq_job(job_id))

    async with StreamQ(redis, settings) as sq:
        job = await sq.enqueue_chat("lost", tenant="acme")
        await lose(job.id)
        await sq.enqueue_chat("lost", job_id=job.id, tenant="acme")
    with SyncStreamQ.from_url(settings.redis_url, settings) as sync:
        other = sync.enqueue_chat("lost too", tenant="acme")
        await lose(other.id)
        sync.enqueue_chat("lost too", job_id=other.id, tenant="acme")
    order = await tags(redis, settings)
    assert order == {keys.arq_job_id(job.id): 5.0, keys.arq_job_id(other.id): 5.0}
    for job_id in (job.id, other.id):
        assert await redis.zscore(queue, keys.arq_job_id(job_id)) is not None


@pytest.mark.slow  # a gateway on real HTTP
async def test_the_gateway_tags_its_tenants_jobs(settings: Settings, redis: Redis) -> None:
    body = {"messages": [{"role": "user", "content": "fair through the door"}]}
    with GatewayThread(create_app(settings, GatewayConfig(tokens=TOKENS))) as gateway:
        headers = {"Authorization": f"Bearer {TOKEN_A}"}
        async with httpx2.AsyncClient(base_url=gateway.url, headers=headers) as http:
            created = await http.post("/v1/jobs", json=body)
    assert created.status_code == 202, created.text
    job_id = created.json()["id"]
    tenant = TOKENS[TOKEN_A].encode()
    assert await redis.hgetall(fair_tenants(settings.queue_name)) == {tenant: b"1"}  # type: ignore[misc]
    assert await redis.get(Keys(settings.key_prefix).owner(job_id)) == tenant
    assert list(await tags(redis, settings)) == [Keys(settings.key_prefix).arq_job_id(job_id)]


async def test_pick_takes_the_lowest_ready_tags_then_arqs_head(
    settings: Settings, redis: Redis
) -> None:
    """PICK skips deferred and running ids, drops ids arq no longer queues, moves the clock
    to the highest tag it popped, and fills the rest from arq's queue head. It starts what it
    picks from the fair order (arq's in-progress key, for the in-progress timeout) and answers
    their ids with their scores; arq's head it answers as it is (the worker starts those)."""
    queue = settings.queue_name
    order, clock = fair_order(queue), fair_clock(queue)
    kept = fair_pick(queue, "w1")
    now = 1_000_000
    await redis.zadd(queue, {"late": now + 5_000, "running": 1, "a": 1, "b": 2, "old": 0})
    await redis.zadd(order, {"late": 0.5, "running": 0.7, "gone": 0.8, "a": 1, "b": 2})
    prefix = f"{queue}:in-progress:"  # arq's is global; the test's own under its queue
    await redis.set(f"{prefix}running", 1)
    pick = redis.register_script(scripts.PICK)
    keys = [order, clock, queue, kept]
    picked = await pick(keys, [1, now, prefix, 60, 100, 0, 10, 30_000, "w1:1"])
    assert picked == [[b"a", b"1"], []]
    assert await redis.get(f"{prefix}a") == b"w1:1"
    assert 29_000 < await redis.pttl(f"{prefix}a") <= 30_000
    assert float(await redis.get(clock)) == 1.0
    assert await redis.zrange(order, 0, -1) == [b"late", b"running", b"b"]  # "gone" gone
    started, head = await pick(keys, [5, now, prefix, 60, 100, 0, 10, 30_000, "w1:2"])
    assert started == [b"b", b"2"]
    assert not await redis.exists(f"{prefix}old")
    assert set(head) == {b"old", b"running", b"a"}  # never indexed, or running: START decides
    assert float(await redis.get(clock)) == 2.0
    assert 0 < await redis.ttl(clock) <= 60
    assert 0 < await redis.ttl(kept) <= 60


async def test_a_pick_sent_twice_answers_the_same_jobs_and_starts_them_once(
    settings: Settings, redis: Redis
) -> None:
    """redis-py resends a command whose reply was lost: the resent PICK answers the jobs the
    first run started (which it popped from the fair order), rather than nothing, which would
    leave them started and run by nobody. Another call (another token) picks afresh."""
    queue = settings.queue_name
    order, clock = fair_order(queue), fair_clock(queue)
    keys = [order, clock, queue, fair_pick(queue, "w1")]
    prefix = f"{queue}:in-progress:"
    await redis.zadd(queue, {"a": 1, "b": 2, "c": 3})
    await redis.zadd(order, {"a": 1, "b": 2, "c": 3})
    pick = redis.register_script(scripts.PICK)
    call: list[str | int] = [2, 1_000_000, prefix, 60, 100, 0, 10, 30_000, "w1:7"]
    first = await pick(keys, call)
    assert first == [[b"a", b"1", b"b", b"2"], []]
    assert await pick(keys, call) == first
    assert await redis.zrange(order, 0, -1) == [b"c"]
    started, head = await pick(keys, [*call[:-1], "w1:8"])
    assert (started, sorted(head)) == ([b"c", b"3"], [b"a", b"b"])  # the head: START decides
    started, _ = await pick(keys, [*call[:-1], "w1:9"])
    assert started == []


async def test_a_start_sent_twice_starts_the_job_for_its_caller_both_times(
    settings: Settings, redis: Redis
) -> None:
    """START's in-progress key holds its call's token: the same call again (a resend) answers
    the job's score, as the first did; any other call, and arq's own start, finds it taken."""
    queue = settings.queue_name
    in_progress = f"{queue}:in-progress:a"
    await redis.zadd(queue, {"a": 5})
    start = redis.register_script(scripts.START)
    keys = [in_progress, queue]
    call: list[str | int] = ["a", 1_000, 30_000, "w1:3"]
    assert await start(keys, call) == b"5"
    assert await start(keys, call) == b"5"
    assert await redis.get(in_progress) == b"w1:3"
    assert await start(keys, [*call[:-1], "w2:1"]) is None
    await redis.set(in_progress, b"1")  # arq's own start
    assert await start(keys, call) is None


async def test_jobs_put_back_in_arqs_queue_go_to_the_front(
    settings: Settings, redis: Redis
) -> None:
    """FAIR_REQUEUE (arq re-queued a job) puts a queued job at the clock's tag, keeps a tag it
    still has, and ignores a job arq does not queue."""
    queue = settings.queue_name
    order, clock = fair_order(queue), fair_clock(queue)
    await redis.set(clock, "7.5")
    await redis.zadd(queue, {"back": 1, "kept": 1})
    await redis.zadd(order, {"kept": 9, "next": 8.5})
    requeue = redis.register_script(scripts.FAIR_REQUEUE)
    keys = [order, clock, queue]
    assert await requeue(keys, ["back", 60]) == 1
    assert await requeue(keys, ["kept", 60]) == 1
    assert await requeue(keys, ["absent", 60]) == 0
    assert await redis.zrange(order, 0, -1, withscores=True) == [
        (b"back", 7.5),
        (b"next", 8.5),
        (b"kept", 9.0),
    ]


async def test_a_reaped_job_goes_back_to_the_front(settings: Settings, redis: Redis) -> None:
    """REAP frees a job whose lease ran out into arq's queue and the fair order's front."""
    keys, queue = Keys(settings.key_prefix), settings.queue_name
    arq_id = keys.arq_job_id("lost")
    await redis.set(fair_clock(queue), "3")
    await redis.zadd(keys.running(), {"1:lost": 0})
    await redis.zadd(fair_order(queue), {"someone-else": 4})
    reap = redis.register_script(scripts.REAP)
    script_keys = [keys.running(), f"{queue}:in-progress", keys.arq_job("lost"), queue]
    script_keys += [fair_order(queue), fair_clock(queue)]
    assert await reap(script_keys, ["1:lost", 1, arq_id, b"{}", 60_000, 1, "", 60]) == 1
    assert await redis.zrange(fair_order(queue), 0, -1, withscores=True) == [
        (arq_id.encode(), 3.0),
        (b"someone-else", 4.0),
    ]


async def test_drain_and_purge_clean_the_fair_order(settings: Settings, redis: Redis) -> None:
    async with StreamQ(redis, settings) as sq:
        for i in range(3):
            await sq.enqueue_chat(f"drain me {i}", tenant="acme")
    order = fair_order(settings.queue_name)
    await redis.zadd(order, {f"{settings.key_prefix}:left-behind": 99})
    report = await queries.drain(redis, settings)
    assert report.cancelled == 3
    assert await redis.zrange(order, 0, -1) == [f"{settings.key_prefix}:left-behind".encode()]
    purged = await queries.purge(redis, settings, dry_run=True)
    assert purged.fair_entries == 1
    assert await redis.zcard(order) == 1
    assert (await queries.purge(redis, settings)).fair_entries == 1
    assert await redis.zcard(order) == 0


async def test_a_tenants_backlog_does_not_hold_back_another_tenants_jobs(
    settings: Settings, redis: Redis
) -> None:
    """Tenant A enqueues 2,000 jobs, then tenant B 10, one at a time, while one worker (one
    slot) works through A's backlog. With equal weights B's k-th job starts with at most 2k
    starts between its enqueue and its own start (k-1 of B's, k of A's tagged up to its tag,
    and one A job picked just before it was enqueued); arq's FIFO order would have put all of
    A's remaining backlog ahead of each."""
    settings = settings.replace(concurrency=1)
    keys = Keys(settings.key_prefix)
    log: list[tuple[str, str]] = []  # ("enqueue" | "start", arq job id), in the loop's order

    async def started(ctx: dict[str, Any]) -> None:
        log.append(("start", ctx["job_id"]))

    async with StreamQ(redis, settings) as sq:
        for batch in range(0, BACKLOG, 200):
            await asyncio.gather(
                *(sq.enqueue_chat(f"a{i}", tenant="a", extra_body=QUICK)
                  for i in range(batch, batch + 200))
            )  # fmt: skip
        async with running_worker(settings, on_job_start=started) as worker:
            await poll_until(lambda: len(log) >= 20, 60, "the worker working through A's jobs")
            b_ids = []
            for i in range(FEW):
                job_id = f"b-{i}-{uuid.uuid4().hex[:8]}"
                # No pick while it is enqueued: the log's order is then Redis's order (a job
                # picked before it may still start, after it in the log: one slot, one job).
                worker.allow_pick_jobs = False
                log.append(("enqueue", keys.arq_job_id(job_id)))
                await sq.enqueue_chat(f"b{i}", job_id=job_id, tenant="b", extra_body=QUICK)
                worker.allow_pick_jobs = True
                b_ids.append(job_id)
            for job_id in b_ids:
                await sq.job(job_id).result(timeout=60)
    starts = [arq_id for kind, arq_id in log if kind == "start"]
    for k, job_id in enumerate(b_ids, start=1):
        arq_id = keys.arq_job_id(job_id)
        enqueued_at = log.index(("enqueue", arq_id))
        started_at = log.index(("start", arq_id))
        ahead = sum(1 for kind, _ in log[enqueued_at:started_at] if kind == "start")
        assert ahead <= 2 * k, (k, ahead)
        # FIFO: every A job not started when B's k-th was enqueued goes first.
        a_started = [i for kind, i in log[:enqueued_at] if kind == "start" and ":b-" not in i]
        fifo_ahead = BACKLOG - len(a_started)
        assert fifo_ahead >= BACKLOG // 2, fifo_ahead
    assert len(starts) < BACKLOG // 2  # B finished long before A's backlog did
