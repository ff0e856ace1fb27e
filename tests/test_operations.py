"""Operator commands against a real fleet: stats, inspect, health, purge, JSON logs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from streamq import Delta, JobFailed, Settings, StreamQ
from streamq.admin.presence import alive_workers
from streamq.core.keys import Keys
from streamq.core.request import chat_messages
from streamq.dev.local_redis import LocalRedis
from streamq.dev.simulator import simulated_text
from streamq.worker.arq_worker import running_worker
from tests.harness.counts import jobs_counted
from tests.harness.processes import STOP_TIMEOUT, live_workers, run_cli, worker_processes
from tests.harness.waiting import STARTUP, poll_until

FAIL = {"simulator": {"fault": "http_400"}}


async def cli_json(settings: Settings, *args: str) -> tuple[int, Any]:
    code, out, err = await run_cli(settings, *args, "--json")
    assert out, err
    return code, json.loads(out)


async def test_stats_shows_workers_and_a_dead_one_disappears(
    sq: StreamQ, redis: Redis, settings: Settings
) -> None:
    """Each worker process is listed with its pid; a SIGKILLed one is gone within its lease."""
    with worker_processes(settings, 2, env={"STREAMQ_LEASE": "2"}) as pool:
        processes = pool.processes
        await live_workers(redis, settings, 2)
        _, stats = await cli_json(settings, "stats")
        assert {w["pid"] for w in stats["workers"]} == {p.pid for p in processes}
        assert all(w["in_flight"] == 0 and w["version"] for w in stats["workers"])
        pool.kill(processes[0])
        await live_workers(redis, settings, 1)  # its presence expired with its lease
        _, stats = await cli_json(settings, "stats")
        assert [w["pid"] for w in stats["workers"]] == [processes[1].pid]


async def test_stats_counts_outcomes_failures_and_throughput(
    sq: StreamQ, redis: Redis, settings: Settings
) -> None:
    """After 3 good jobs and 1 failing one: outcomes, failure codes, deltas/s, empty queue."""
    async with running_worker(settings):
        jobs = [await sq.enqueue_chat(f"count {i}") for i in range(3)]
        for job in jobs:
            await job.result()
        failing = await sq.enqueue_chat("count the failure", extra_body=FAIL)
        with contextlib.suppress(JobFailed):
            await failing.result()
        # A worker sends its counts at most once a second: a busy second's ends come late.
        keys = Keys(settings.key_prefix)

        async def all_counted() -> bool:
            return await jobs_counted(redis, keys) == 4

        await poll_until(all_counted, 30, "the four job ends counted")
        code, stats = await cli_json(settings, "stats")
    assert code == 0
    assert stats["jobs"] == {"done": 3, "error": 1}
    assert stats["failures"] == {"upstream_bad_request": 1}
    assert stats["deltas_per_second"] > 0
    assert stats["queued"] == 0
    assert stats["oldest_queued_age_s"] is None


async def test_stats_sees_the_oldest_queued_job(sq: StreamQ, settings: Settings) -> None:
    """With no worker, enqueued jobs are counted as queued, with the oldest one's age, which
    grows while they wait."""
    for i in range(3):
        await sq.enqueue_chat(f"waiting {i}")
    seen: list[dict[str, Any]] = []

    async def aged() -> bool:
        seen.append((await cli_json(settings, "stats"))[1])
        return bool(seen[-1]["oldest_queued_age_s"] >= 0.3)

    await poll_until(aged, STARTUP, "the oldest queued job to be 0.3 s old")
    ages = [stats["oldest_queued_age_s"] for stats in seen]
    assert ages == sorted(ages)
    stats = seen[-1]
    assert stats["queued"] == 3
    assert stats["running"] == 0
    code, out, _ = await run_cli(settings, "stats")
    assert code == 0
    assert "3 queued" in out


async def test_inspect_gives_state_timings_usage_and_last_cursor(
    sq: StreamQ, settings: Settings
) -> None:
    """inspect tells a finished job's model, worker, deltas, usage and where its stream ends."""
    async with running_worker(settings):
        job = await sq.enqueue_chat("inspect me")
        result = await job.result()
    events = [event async for event in job.events()]
    code, record = await cli_json(settings, "inspect", job.id)
    assert code == 0
    assert record["state"] == "done"
    assert record["attempt"] == 1
    assert record["model"] == settings.openai_model
    assert record["deltas"] == sum(isinstance(e, Delta) for e in events)
    assert record["usage"] == result.usage
    assert record["finish_reason"] == "stop"
    assert record["last_cursor"] == events[-1].cursor
    assert record["entries"] == len(events)
    assert 0 < record["ttl_s"] <= settings.stream_ttl
    assert "inspect me" not in json.dumps(record)
    code, _, err = await run_cli(settings, "inspect", "no-such-job")
    assert code == 2
    assert "no job with id 'no-such-job'" in err


async def test_health_is_redis_for_readiness_and_a_local_worker_for_liveness(
    settings: Settings,
) -> None:
    """`health` needs Redis; `health --worker` also needs a live worker on this host."""
    assert (await run_cli(settings, "health"))[0] == 0
    code, report = await cli_json(settings, "health", "--worker")
    assert code == 1
    assert "no live streamq worker" in report["problems"][0]
    with worker_processes(settings, 1):
        async with Redis.from_url(settings.redis_url) as redis:
            await live_workers(redis, settings, 1)
        assert (await run_cli(settings, "health", "--worker"))[0] == 0
    unreachable = settings.replace(redis_url="redis://127.0.0.1:1/0")
    code, report = await cli_json(unreachable, "health")
    assert code == 1
    assert "Redis does not answer" in report["problems"][0]


async def test_purge_removes_stale_leases_and_orphans_and_dry_run_changes_nothing(
    sq: StreamQ, redis: Redis, settings: Settings
) -> None:
    """A lease of an ended job, a key without TTL and arq leftovers are cleaned up."""
    keys = Keys(settings.key_prefix)
    async with running_worker(settings):
        job = await sq.enqueue_chat("purge around me")
        await job.result()
    await redis.zadd(keys.running(), {f"1:{job.id}": 0, "1:never-existed": 0})
    await redis.persist(keys.events(job.id))
    await redis.set(f"arq:in-progress:{keys.arq_job_id(job.id)}", b"1")
    foreign = f"another-app-{settings.key_prefix}"
    await redis.zadd("arq:abort", {keys.arq_job_id(job.id): 1, foreign: 1})
    code, report = await cli_json(settings, "purge", "--dry-run")
    assert code == 0
    assert report["stale_leases"] == 2
    assert report["keys_without_ttl"] == 1
    assert report["orphaned_arq_keys"] == 1
    assert report["abort_entries"] == 1
    assert await redis.zcard(keys.running()) == 2
    code, report = await cli_json(settings, "purge")
    assert code == 0
    assert await redis.zcard(keys.running()) == 0
    assert 0 < await redis.ttl(keys.events(job.id)) <= settings.stream_ttl
    assert not await redis.exists(f"arq:in-progress:{keys.arq_job_id(job.id)}")
    assert await redis.zrange("arq:abort", 0, -1) == [foreign.encode()]
    await redis.zrem("arq:abort", foreign)
    assert (await job.result()).text == simulated_text(chat_messages("purge around me"))


async def test_json_logs_have_one_line_per_transition_without_text(
    sq: StreamQ, settings: Settings, tmp_path: Path
) -> None:
    """With STREAMQ_LOG_FORMAT=json every line is JSON; job lines carry timings, never text."""
    env = {"STREAMQ_LOG_FORMAT": "json"}
    with worker_processes(settings, 1, env=env, log_dir=tmp_path) as workers:
        job = await sq.enqueue_chat("a secret question 4711")
        result = await job.result(timeout=30)
    [worker] = workers.processes
    text = workers.log(worker)
    lines = [json.loads(line) for line in text.splitlines() if line]
    mine = [line for line in lines if line.get("job_id") == job.id]
    assert [line["transition"] for line in mine] == ["started", "ended"]
    ended = mine[-1]
    assert ended["outcome"] == "done"
    assert ended["model"] == settings.openai_model
    assert ended["usage"] == result.usage
    assert ended["duration_s"] >= ended["ttft_s"] > 0
    assert ended["deltas"] > 0
    assert "secret question" not in text
    assert result.text not in text


async def test_processes_runs_a_fleet_that_restarts_a_crashed_worker(
    sq: StreamQ, redis: Redis, settings: Settings, tmp_path: Path
) -> None:
    """`worker --processes 2`: a SIGKILLed process is replaced; SIGTERM drains them all."""
    fleet = ("-m", "streamq", "worker", "--processes", "2")
    with worker_processes(settings, 1, fleet, {"STREAMQ_LEASE": "1"}, tmp_path) as workers:
        [supervisor] = workers.processes
        await workers.wait_serving(count=2)  # both processes have their signal handlers
        victim = (await live_workers(redis, settings, 2))[0].pid
        os.kill(victim, signal.SIGKILL)

        async def replaced() -> bool:
            alive = await alive_workers(redis, Keys(settings.key_prefix))
            return len(alive) == 2 and victim not in {worker.pid for worker in alive}

        await poll_until(replaced, STARTUP, "a new process in place of the killed one")
        result = await (await sq.enqueue_chat("fleet")).result(timeout=30)
        assert result.text == simulated_text(chat_messages("fleet"))
        await workers.wait_serving(count=3)  # the new one too: SIGTERM drains, not kills
        supervisor.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(supervisor.wait, STOP_TIMEOUT) == 0
    assert await alive_workers(redis, Keys(settings.key_prefix)) == []
    assert "ended with signal 9" in workers.log(supervisor)


def documented_acl_users(prefix: str) -> list[list[str]]:
    """The `ACL SETUSER` lines of docs/operations.md, for this test's key prefix."""
    doc = Path(__file__).parent.parent / "docs" / "operations.md"
    lines = [line.split() for line in doc.read_text().splitlines()]
    return [
        [word.replace("PREFIX", prefix) for word in line]
        for line in lines
        if line[:2] == ["ACL", "SETUSER"]
    ]


async def test_the_documented_acl_users_are_enough_for_every_role(
    settings: Settings, tmp_path: Path
) -> None:
    """Producer, worker and reader each run as the ACL user docs/operations.md gives them:
    enqueue, duplicate ids, cancel, stream, read and follow, with nothing in ACL LOG."""
    users = documented_acl_users(settings.key_prefix)
    names = ["streamq-producer", "streamq-gateway", "streamq-reader", "streamq-worker"]
    assert [user[2] for user in users] == names
    with LocalRedis() as server:
        async with Redis.from_url(server.url) as admin:
            for user in users:
                await admin.execute_command(*user)

            def as_user(name: str) -> Settings:
                url = f"redis://streamq-{name}:{name}-password@127.0.0.1:{server.port}/0"
                return settings.replace(redis_url=url)

            try:
                producer, reader = as_user("producer"), as_user("reader")
                async with StreamQ.from_url(producer.redis_url, producer) as sq:
                    queued = await sq.enqueue_chat("cancelled before any worker")
                    assert await queued.cancel() == "cancelled"
                    env = {"STREAMQ_LEASE": "1", "STREAMQ_MODEL_LIMITS": "*=10"}
                    with worker_processes(as_user("worker"), 1, env=env):
                        job = await sq.enqueue_chat("over acl", job_id="acl-1")
                        assert (await sq.enqueue_chat("over acl", job_id="acl-1")).id == job.id
                        failing = await sq.enqueue_chat("fails", extra_body=FAIL)
                        slow = {"simulator": {"tokens_per_second": 20, "reply_tokens": 200}}
                        running = await sq.enqueue_chat("cancel me", extra_body=slow)
                        async for _ in running:
                            break
                        assert await running.cancel() == "cancelling"
                        async with StreamQ.from_url(reader.redis_url, reader) as readonly:
                            mine = readonly.job(job.id)
                            assert (await mine.result(timeout=30)).text == simulated_text(
                                chat_messages("over acl")
                            )
                            assert (await mine.status()).state == "done"
                            async with readonly.multiplexer() as follow:
                                async for _ in follow.follow(job.id):
                                    pass
                            with contextlib.suppress(JobFailed):
                                await readonly.job(failing.id).result(timeout=30)
                            with contextlib.suppress(Exception):
                                await readonly.job(running.id).result(timeout=30)
                            assert (await readonly.job(running.id).status()).state == "cancelled"
                        await upkeep_rounds(admin, Keys(settings.key_prefix), 3)
            finally:
                denied = await admin.execute_command("ACL", "LOG")
                fields = (b"username", b"context", b"reason", b"object")
                assert not denied, [[e[f] for f in fields] for e in map(pairs, denied)]


async def upkeep_rounds(admin: Redis, keys: Keys, rounds: int) -> None:
    """Wait until the worker has renewed its presence ``rounds`` more times: its heartbeat,
    and its reaper (on the same period), ran that often since."""
    scores: set[float] = set()

    async def renewed() -> bool:
        scores.update(
            score for _, score in await admin.zrange(keys.workers(), 0, -1, withscores=True)
        )
        return len(scores) > rounds

    await poll_until(renewed, STARTUP, f"{rounds} heartbeats of the worker")


def pairs(flat: list[Any]) -> dict[bytes, Any]:
    return dict(zip(flat[::2], flat[1::2], strict=True))
