"""Job streams on a real 3-primary Redis Cluster, the queue on a single Redis."""

from __future__ import annotations

import asyncio
import functools
import json
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack

import pytest
import redis as redis_lib
from redis.asyncio import Redis

from streamq import Settings, StreamQ
from streamq.core.keys import Keys
from streamq.core.request import chat_messages
from streamq.dev.local_redis import LocalRedis, find_redis_binary, free_port
from streamq.dev.simulator import simulated_text
from tests.harness.processes import run_cli, worker_processes
from tests.harness.waiting import STARTUP, poll_until_sync

JOBS = 500


@pytest.fixture(scope="module")
def cluster() -> Iterator[list[LocalRedis]]:
    """Three cluster-enabled redis-servers joined by `redis-cli --cluster create`."""
    with ExitStack() as stack:
        nodes = [
            stack.enter_context(
                LocalRedis(
                    args=[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-node-timeout",
                        "2000",
                        "--cluster-port",
                        str(free_port()),  # not port + 10000: may be taken
                    ]
                )
            )
            for _ in range(3)
        ]
        addresses = [f"127.0.0.1:{node.port}" for node in nodes]
        cli = find_redis_binary("redis-cli")
        subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        for node in nodes:
            poll_until_sync(
                functools.partial(cluster_ok, node.port), STARTUP, "the cluster to be ok",
                interval=0.1,
            )  # fmt: skip
        yield nodes


def cluster_ok(port: int) -> bool:
    with redis_lib.Redis(port=port) as client:
        return bool(client.cluster("info")["cluster_state"] == "ok")


def cluster_url(nodes: list[LocalRedis]) -> str:
    return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in nodes)


async def test_500_jobs_through_4_workers_with_streams_on_a_3_primary_cluster(
    settings: Settings, redis: Redis, cluster: list[LocalRedis]
) -> None:
    """Every job ends `done` with its exact text; stream keys land on all three primaries and
    none on the queue's Redis."""
    settings = settings.replace(streams_url=cluster_url(cluster))
    async with StreamQ.from_url(settings.redis_url, settings) as sq:
        with worker_processes(settings, 4, env={"STREAMQ_CONCURRENCY": "50"}):
            jobs = [await sq.enqueue_chat(f"clustered {i}") for i in range(JOBS)]
            results = []
            for start in range(0, JOBS, 50):  # each reader holds a blocking read while it waits
                batch = jobs[start : start + 50]
                results += await asyncio.gather(*(job.result(timeout=60) for job in batch))
            async with sq.multiplexer() as follow:
                followed = [e async for e in follow.follow(jobs[0].id)]
    for i, result in enumerate(results):
        assert result.text == simulated_text(chat_messages(f"clustered {i}"))
        assert result.finish_reason == "stop"
    assert followed[-1].type == "done"
    keys = Keys(settings.key_prefix)
    per_node = []
    for node in cluster:
        with redis_lib.Redis(port=node.port) as client:
            per_node.append(sum(1 for _ in client.scan_iter(match=f"{keys.prefix}:{{*}}:events")))
    assert sum(per_node) == JOBS
    assert all(count > 0 for count in per_node), per_node
    assert not [key async for key in redis.scan_iter(match=f"{keys.prefix}:{{*}}:events")]


async def test_cancel_status_and_idempotency_with_streams_on_the_cluster(
    settings: Settings, cluster: list[LocalRedis]
) -> None:
    """A running job is cancelled across the two stores; a repeated id runs once."""
    settings = settings.replace(streams_url=cluster_url(cluster))
    slow = {"simulator": {"tokens_per_second": 20, "reply_tokens": 200}}
    async with StreamQ.from_url(settings.redis_url, settings) as sq:
        with worker_processes(settings, 1):
            job = await sq.enqueue_chat("long", extra_body=slow, job_id="clustered-once")
            again = await sq.enqueue_chat("long", extra_body=slow, job_id="clustered-once")
            assert again.id == job.id
            async for _ in job:
                break
            assert (await job.status()).state == "running"
            assert await job.cancel() == "cancelling"
            events = [event async for event in job.events(timeout=30)]
            assert (await job.status()).state == "cancelled"
    assert events[-1].type == "cancelled"
    code, out, err = await run_cli(settings, "inspect", job.id, "--json")
    assert code == 0, err
    assert json.loads(out)["state"] == "cancelled"
