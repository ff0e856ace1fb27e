"""The queue on a Sentinel-managed primary: jobs go on through a failover mid-run."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis as redis_lib

from streamq import Settings, StreamQ
from streamq.core.request import chat_messages
from streamq.dev.local_redis import LocalRedis
from streamq.dev.simulator import simulated_text
from streamq.sync import StreamQ as SyncStreamQ
from tests.harness.processes import worker_processes
from tests.harness.waiting import STARTUP, poll_until, poll_until_sync

SERVICE = "streamq-primary"
SLOW = {"simulator": {"tokens_per_second": 20, "reply_tokens": 30}}


@dataclass
class SentinelSetup:
    primary: LocalRedis
    replica: LocalRedis
    sentinel: LocalRedis

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel.port}/{SERVICE}"

    def replica_caught_up(self) -> bool:
        with (
            redis_lib.Redis(port=self.primary.port) as primary,
            redis_lib.Redis(port=self.replica.port) as replica,
        ):
            written = primary.info("replication")["master_repl_offset"]
            return bool(replica.info("replication")["slave_repl_offset"] >= written)

    def primary_port(self) -> int:
        with redis_lib.Redis(port=self.sentinel.port) as client:
            _, port = client.sentinel_get_master_addr_by_name(SERVICE)
            return int(port)


@pytest.fixture
def sentinel_setup(tmp_path: Path) -> Iterator[SentinelSetup]:
    """A primary, its replica and one sentinel (quorum 1) on free loopback ports."""
    config = tmp_path / "sentinel.conf"
    with (
        LocalRedis(args=["--repl-diskless-sync-delay", "0"]) as primary,
        LocalRedis(args=["--replicaof", "127.0.0.1", str(primary.port)]) as replica,
    ):
        config.write_text(
            f"sentinel monitor {SERVICE} 127.0.0.1 {primary.port} 1\n"
            f"sentinel down-after-milliseconds {SERVICE} 1000\n"
            f"sentinel failover-timeout {SERVICE} 5000\n"
        )
        with LocalRedis(args=["--sentinel"], config_file=config) as sentinel:
            poll_until_sync(lambda: replica_link_up(replica), STARTUP, "the replica to sync")
            poll_until_sync(lambda: knows_replica(sentinel), STARTUP, "the sentinel to see it")
            yield SentinelSetup(primary, replica, sentinel)


def replica_link_up(replica: LocalRedis) -> bool:
    with redis_lib.Redis(port=replica.port) as client:
        return bool(client.info("replication")["master_link_status"] == "up")


def knows_replica(sentinel: LocalRedis) -> bool:
    with redis_lib.Redis(port=sentinel.port) as client:
        return bool(client.sentinel_slaves(SERVICE))


def sync_round_trip(settings: Settings, prompt: str) -> str:
    with SyncStreamQ.from_url(settings.redis_url, settings) as sq:
        return sq.enqueue_chat(prompt, extra_body=SLOW).result(timeout=60).text


async def test_jobs_survive_a_failover_of_the_sentinel_primary(
    settings: Settings, sentinel_setup: SentinelSetup
) -> None:
    """Kill the primary while 2 workers stream: the replica takes over, every in-flight job
    finishes with its exact text (a new attempt if the failover lost some of its entries), and
    new jobs run."""
    settings = settings.replace(redis_url=sentinel_setup.url)
    old_port = sentinel_setup.primary_port()
    async with StreamQ.from_url(settings.redis_url, settings) as sq:
        with worker_processes(settings, 2, env={"STREAMQ_LEASE": "2"}):
            before = [await sq.enqueue_chat(f"before {i}", extra_body=SLOW) for i in range(8)]
            async for _ in before[0]:
                break  # streaming is under way
            # Replication is asynchronous: what the replica has not received when the primary
            # dies is lost. Let it catch up first, as a healthy replica normally has.
            poll_until_sync(sentinel_setup.replica_caught_up, STARTUP, "the replica to catch up")
            sentinel_setup.primary.kill()
            await poll_until(
                lambda: sentinel_setup.primary_port() != old_port, STARTUP, "the failover"
            )
            after = [await sq.enqueue_chat(f"after {i}", extra_body=SLOW) for i in range(4)]
            outcomes = await asyncio.gather(
                *(job.result(timeout=60) for job in before), return_exceptions=True
            )
            results = await asyncio.gather(*(job.result(timeout=60) for job in after))
            synced = await asyncio.to_thread(sync_round_trip, settings, "after, from sync code")
    assert synced == simulated_text(chat_messages("after, from sync code"), length=30)
    for i, result in enumerate(results):
        assert result.text == simulated_text(chat_messages(f"after {i}"), length=30)
    for i, outcome in enumerate(outcomes):
        assert not isinstance(outcome, BaseException), outcome  # never lost, stuck or garbled
        assert outcome.text == simulated_text(chat_messages(f"before {i}"), length=30)
