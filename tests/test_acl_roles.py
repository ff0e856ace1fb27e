"""The ACL users of docs/operations.md: what each role may not forge, what it still can, and the
paths of each role that tests/test_operations.py does not take, with nothing denied."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx2
import pytest
from redis.asyncio import Redis

from streamq import Delta, Settings, Start, StreamQ
from streamq.core.request import chat_messages
from streamq.dev.local_redis import LocalRedis
from streamq.dev.simulator import simulated_text
from streamq.gateway import GatewayConfig, create_app
from streamq.sync import StreamQ as SyncStreamQ
from tests.gateway.sse import read_events
from tests.harness.gateway import TOKEN_A, TOKENS, GatewayThread
from tests.harness.processes import run_cli, worker_processes
from tests.harness.waiting import poll_until
from tests.test_operations import documented_acl_users, pairs

P = "pfx"
JOB, OTHER = f"{P}:{{j}}", f"{P}:{{k}}"

# What each role must not do: forge another role's writes, destroy keys outright, leave its
# own keys, or end other clients' blocked reads.
DENIED: dict[str, list[list[str]]] = {
    "reader": [
        ["CLIENT", "UNBLOCK", "1", "ERROR"],
        ["CLIENT", "KILL", "ID", "1"],
        ["XADD", f"{JOB}:events", "*", "type", "done"],
        ["HSET", f"{JOB}:state", "terminal", "done"],
        ["EXPIRE", f"{JOB}:events", "0"],
        ["GET", f"{JOB}:request"],  # prompts stay with producers and workers
        ["GET", f"{JOB}:owner"],
        ["PUBLISH", f"{P}:cancel", "j"],
        ["EVAL", "return 1", "0"],
    ],
    "producer": [
        ["CLIENT", "UNBLOCK", "1", "ERROR"],
        ["DEL", f"{JOB}:events"],
        ["SET", f"{JOB}:state", "wrong type"],
        ["SET", f"{JOB}:events", "wrong type"],
        ["XADD", f"{JOB}:request", "*", "wrong", "type"],
        ["EXPIRE", f"{JOB}:request", "0"],
        ["SET", f"{JOB}:owner", "tenant"],
        ["ZADD", f"{P}:running", "1", "1:j"],
        ["SET", f"{P}:worker:host:1", "{}"],
        ["ZADD", f"{P}:admission:key:model:slots", "1", "x"],
        ["SET", f"{P}:admission:key:model:paused", "1"],
        ["HINCRBY", f"{P}:counters:1", "jobs:done", "1"],
        ["PSETEX", f"arq:in-progress:{P}:j", "1000", "1"],
        ["PSETEX", "arq:job:other-app-job", "1000", "x"],
        ["EVAL", "return 1", "1", f"{P}:running"],
    ],
    "gateway": [["DEL", f"{JOB}:events"], ["ZADD", f"{P}:running", "1", "1:j"]],
    "worker": [
        ["CLIENT", "UNBLOCK", "1", "ERROR"],
        ["DEL", f"{JOB}:events"],
        ["DEL", f"{JOB}:state"],
        ["DEL", f"{JOB}:request"],
        ["SET", f"{JOB}:request", "another prompt"],
        ["SET", f"{JOB}:state", "wrong type"],
        ["XADD", f"{JOB}:state", "*", "wrong", "type"],
        ["RENAME", f"{JOB}:events", f"{JOB}:elsewhere"],
        ["COPY", f"{JOB}:events:compacting", f"{OTHER}:events"],
        ["GET", f"{JOB}:owner"],
        ["PUBLISH", f"{P}:cancel", "j"],
        ["SET", "arq:job:other-app-job", "x"],
        ["DEL", "arq:job:other-app-job"],
        ["ZADD", "arq:abort", "1", "other-app-job"],
        ["HSET", f"{P}:counters:1", "jobs:done", "1"],
    ],
}

# What each role can still do to any job under the prefix, as docs/operations.md says.
STILL_ALLOWED: dict[str, list[list[str]]] = {
    "reader": [["XREAD", "STREAMS", f"{JOB}:events", "0-0"], ["EXISTS", f"{JOB}:request"]],
    "producer": [
        ["XADD", f"{JOB}:events", "*", "type", "done"],
        ["HSET", f"{JOB}:state", "terminal", "done"],
        ["SET", f"{JOB}:request", "another prompt"],
        ["GET", f"{JOB}:request"],  # a reused job id compares the stored request
        ["EXPIRE", f"{JOB}:events", "0"],  # deletes it
        ["ZADD", f"{P}:queue", "1e18", f"{P}:j"],
        ["PSETEX", f"arq:job:{P}:j", "1000", "x"],
        ["PUBLISH", f"{P}:cancel", "j"],
    ],
    "gateway": [["SET", f"{JOB}:owner", "another tenant"], ["DEL", f"{JOB}:owner"]],
    "worker": [
        ["XADD", f"{JOB}:events", "*", "type", "done"],
        ["EXPIRE", f"{JOB}:events", "0"],
        ["EXPIRE", f"{JOB}:request", "0"],
        ["COPY", f"{OTHER}:events", f"{JOB}:events:compacting"],
        ["RENAME", f"{JOB}:events:compacting", f"{JOB}:events"],
        ["HSET", f"{JOB}:state", "attempt", "9"],
        ["GET", f"{JOB}:request"],
        ["ZADD", f"{P}:running", "1", "1:j"],
        ["SET", f"{P}:admission:key:model:paused", "1"],
        ["DEL", f"arq:in-progress:{P}:j"],
    ],
}


@pytest.fixture
def acl_server() -> Iterator[LocalRedis]:
    """A redis-server of the test's own: ACL users and ACL LOG are server-wide."""
    with LocalRedis() as server:
        yield server


@pytest.fixture
async def admin(acl_server: LocalRedis) -> AsyncIterator[Redis]:
    async with Redis.from_url(acl_server.url) as client:
        yield client


async def test_each_role_can_forge_only_what_the_docs_say(admin: Redis) -> None:
    """ACL DRYRUN of each documented user: the forgeries are refused, the documented residual
    powers are there (so the docs stay true when the lines change)."""
    for user in documented_acl_users(P):
        await redis_command(admin, *user)
    for role, commands in DENIED.items():
        for command in commands:
            verdict = await redis_command(admin, "ACL", "DRYRUN", f"streamq-{role}", *command)
            assert verdict != b"OK", (role, command)
    for role, commands in STILL_ALLOWED.items():
        for command in commands:
            verdict = await redis_command(admin, "ACL", "DRYRUN", f"streamq-{role}", *command)
            assert verdict == b"OK", (role, command, verdict)


async def test_every_role_path_runs_with_nothing_denied(
    settings: Settings, acl_server: LocalRedis, admin: Redis
) -> None:
    """Under the documented users: the sync producer (a repeated id re-queues through WATCH),
    the gateway over HTTP, readers resuming from a cursor (alone and in a Multiplexer),
    workers retrying, pausing a model on a 429 and reaping a SIGKILLed worker's job, and
    `streamq health --worker`. ACL LOG stays empty."""
    for user in documented_acl_users(settings.key_prefix):
        await redis_command(admin, *user)

    def as_user(name: str) -> Settings:
        url = f"redis://streamq-{name}:{name}-password@127.0.0.1:{acl_server.port}/0"
        return settings.replace(redis_url=url)

    mark = uuid.uuid4().hex[:8]
    retried = {"fault": "http_500", "fault_times": 1, "fault_key": f"500-{mark}"}
    paused = {"fault": "http_429", "retry_after": 0.3, "fault_times": 1, "fault_key": f"429-{mark}"}
    slow = {"tokens_per_second": 20, "reply_tokens": 40}
    env = {"STREAMQ_LEASE": "1", "STREAMQ_MODEL_LIMITS": "*=10"}
    try:
        producer, reader = as_user("producer"), as_user("reader")
        with worker_processes(as_user("worker"), 2, env=env) as workers:
            async with StreamQ.from_url(producer.redis_url, producer) as sq:
                jobs = [
                    await sq.enqueue_chat("retried", extra_body={"simulator": retried}),
                    await sq.enqueue_chat("paused", extra_body={"simulator": paused}),
                ]
                survivor = await sq.enqueue_chat("survive", extra_body={"simulator": slow})
                await kill_the_worker_of(survivor.id, sq, workers.processes)
                await asyncio.to_thread(sync_producer_round, producer)
                await gateway_round(as_user("gateway"))
                async with StreamQ.from_url(reader.redis_url, reader) as readonly:
                    attempts = []
                    for job in [*jobs, survivor]:
                        attempts.append((await readonly.job(job.id).result(timeout=30)).attempt)
                        await resume_from_the_middle(readonly, job.id)
                    # A retried 500, a retried 429, a job the reaper started over (the
                    # killed worker may have run another of them too).
                    assert min(attempts) >= 2, attempts

                async def healthy() -> bool:  # a busy machine can delay a presence renewal
                    code, _, _ = await run_cli(as_user("worker"), "health", "--worker")
                    return code == 0

                await poll_until(healthy, 30, "`streamq health --worker` as the worker")
    finally:
        denied = await redis_command(admin, "ACL", "LOG")
        fields = (b"username", b"context", b"reason", b"object")
        assert not denied, [[e[f] for f in fields] for e in map(pairs, denied)]


async def redis_command(redis: Redis, *args: str) -> Any:
    return await redis.execute_command(*args)  # type: ignore[no-untyped-call]


async def kill_the_worker_of(job_id: str, sq: StreamQ, workers: list[Any]) -> None:
    """SIGKILL the worker process streaming ``job_id``, once it has sent a delta."""
    start = None
    async for event in sq.job(job_id).events(timeout=30):
        start = event if isinstance(event, Start) else start
        if isinstance(event, Delta):
            break
    assert start is not None
    [victim] = [w for w in workers if start.worker.endswith(f":{w.pid}")]
    victim.send_signal(signal.SIGKILL)


async def resume_from_the_middle(readonly: StreamQ, job_id: str) -> None:
    """From a cursor in the middle, alone and in a Multiplexer: the same rest of the stream."""
    events = [event async for event in readonly.job(job_id).events()]
    middle = events[len(events) // 2].cursor
    alone = [event async for event in readonly.job(job_id).events(after=middle)]
    assert alone == events[len(events) // 2 + 1 :]
    async with readonly.multiplexer() as mux:
        assert [event async for event in mux.follow(job_id, after=middle)] == alone


def sync_producer_round(producer: Settings) -> None:
    """streamq.sync: enqueue, the same id again (re-queued through arq's WATCH), the result."""
    with SyncStreamQ.from_url(producer.redis_url, producer) as sq:
        job = sq.enqueue_chat("sync over acl", job_id=f"sync-{uuid.uuid4().hex[:8]}")
        assert sq.enqueue_chat("sync over acl", job_id=job.id).id == job.id
        assert job.result(timeout=30).text == simulated_text(chat_messages("sync over acl"))


async def gateway_round(gateway_user: Settings) -> None:
    """The gateway: enqueue (and again by Idempotency-Key), follow, status, cancel; and the
    Responses door."""
    app = create_app(gateway_user, GatewayConfig(tokens=TOKENS))
    headers = {"Authorization": f"Bearer {TOKEN_A}"}
    body = {"messages": [{"role": "user", "content": "gateway over acl"}]}
    with GatewayThread(app) as gateway:
        async with httpx2.AsyncClient(base_url=gateway.url, headers=headers, timeout=30) as http:
            keyed = {"Idempotency-Key": f"acl-{uuid.uuid4().hex[:8]}"}
            created = await http.post("/v1/jobs", json=body, headers=keyed)
            assert created.status_code == 202, created.text
            again = await http.post("/v1/jobs", json=body, headers=keyed)
            assert again.json()["id"] == created.json()["id"]
            events = await read_events(http, created.json()["events_url"])
            assert events[-1].event == "done"
            status = await http.get(created.json()["url"])
            assert status.json()["state"] == "done"
            # Stalls after its first delta: cancelled, never done, however late DELETE comes.
            slow = {**body, "extra_body": {"simulator": {"fault": "stall", "after": 1}}}
            running = (await http.post("/v1/jobs", json=slow)).json()
            cancelled = await http.delete(running["url"])
            assert cancelled.status_code in (200, 202), cancelled.text
            events = await read_events(http, running["events_url"])
            assert events[-1].event == "cancelled"
            await responses_round(http)


async def responses_round(http: httpx2.AsyncClient) -> None:
    """/v1/responses under the gateway's user: two turns, a stored read, input items, delete."""
    first = await http.post("/v1/responses", json={"input": "responses over acl"})
    assert first.status_code == 200, first.text
    assert first.json()["status"] == "completed"
    turn = {"input": "and again", "previous_response_id": first.json()["id"], "stream": True}
    async with http.stream("POST", "/v1/responses", json=turn) as streamed:
        assert streamed.status_code == 200
        assert b"response.completed" in await streamed.aread()
    stored = first.json()["id"]
    assert (await http.get(f"/v1/responses/{stored}")).json()["status"] == "completed"
    assert (await http.get(f"/v1/responses/{stored}/input_items")).status_code == 200
    deleted = await http.delete(f"/v1/responses/{stored}")
    assert deleted.json() == {"id": stored, "object": "response.deleted", "deleted": True}
    assert (await http.get(f"/v1/responses/{stored}")).status_code == 404
