"""Signed webhooks when a job ends, checked by a real receiver with the `openai` SDK's own
`webhooks.unwrap`: jobs done, failed and cancelled while queued, a background response through
the gateway, retries under one id, a failure recorded after the retry period, and at-least-once
delivery through a SIGKILLed worker and a Redis (AOF) restart."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from openai import AsyncOpenAI, InvalidWebhookSignatureError, OpenAI
from openai.types.webhooks import ResponseCompletedWebhookEvent, ResponseFailedWebhookEvent
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from streamq import Settings, StreamQ
from streamq.admin.queries import drain, inspect_job
from streamq.admin.text import inspect_text
from streamq.core import metrics
from streamq.core.events import Cancelled, Done, Error
from streamq.core.keys import Keys
from streamq.dev.local_redis import free_port
from streamq.gateway import GatewayConfig, create_app
from streamq.webhooks.bodies import notice
from streamq.webhooks.endpoints import BREAK_AFTER, EndpointHealth
from streamq.webhooks.signing import signed_headers
from streamq.worker.arq_worker import running_worker
from tests.harness.gateway import TOKEN_A, TOKENS, GatewayThread
from tests.harness.processes import WorkerPool, settings_environment
from tests.harness.redis_servers import LocalRedis, RestartableRedis, dump_keys
from tests.harness.waiting import STARTUP, poll_until
from tests.test_operations import documented_acl_users, pairs

SECRET = "whsec_" + base64.b64encode(b"streamq-test-webhook-secret-0001").decode()
TENANT_SECRET = "whsec_" + base64.b64encode(b"streamq-test-tenant-a-secret-01").decode()
FAILING = {"simulator": {"fault": "http_400"}}
# The first stream breaks after two deltas (retried: the job ends done, its response failed).
BREAK_ONCE = {"simulator": {"fault": "disconnect", "after": 2, "fault_times": 1}}
WAIT = 60.0  # bound on a hang, not a measure
DOCS = Path(__file__).parents[1] / "docs" / "operations.md"


@dataclass
class Received:
    """One post the receiver got, verified by the SDK."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    event: Any
    status: int


@dataclass
class Receiver:
    """A webhook receiver on a loopback port: verifies every post with ``webhooks.unwrap``,
    answers the statuses queued in ``answers`` (per path) and then 200."""

    secrets: dict[str, str]
    answers: dict[str, list[int]] = field(default_factory=dict)
    fail_first_of_each: bool = False
    hold: asyncio.Event | None = None  # the first post waits for it (its sender may die)
    held: list[str] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    port: int = field(default_factory=free_port)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def handle(self, request: web.Request) -> web.Response:
        payload = await request.text()
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            with OpenAI(api_key="unused") as sdk:
                event = sdk.webhooks.unwrap(payload, headers, secret=self.secrets[request.path])
        except (InvalidWebhookSignatureError, KeyError) as exc:
            self.invalid.append(f"{request.path}: {exc!r}")
            return web.Response(status=400)
        if self.hold is not None and not self.held:
            self.held.append(headers["webhook-id"])
            await self.hold.wait()
            return web.Response(status=503)
        status = 200
        queued = self.answers.get(request.path)
        if queued:
            status = queued.pop(0)
        elif self.fail_first_of_each and not self.of(headers["webhook-id"]):
            status = 503
        body = json.loads(payload)
        self.received.append(Received(request.path, headers, body, event, status))
        # More than a worker reads; a redirect to a path whose posts fail verification.
        location = {"Location": self.url("/elsewhere")} if 300 <= status < 400 else None
        return web.Response(status=status, text="x" * 100_000, headers=location)

    def of(self, message_id: str) -> list[Received]:
        return [r for r in self.received if r.headers["webhook-id"] == message_id]

    def delivered(self) -> dict[str, Received]:
        """The 2xx-answered posts by the job (or response) id in their ``data``."""
        return {r.body["data"]["id"]: r for r in self.received if r.status == 200}


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver({"/fleet": SECRET, "/tenant-a": TENANT_SECRET})
    app = web.Application()
    app.router.add_post("/{name}", found.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", found.port).start()
    try:
        yield found
    finally:
        await runner.cleanup()


async def owned(redis: Redis, settings: Settings, tenant: str = "tenant-a") -> str:
    """A new job id already owned by ``tenant``, as the gateway records its jobs' owners."""
    job_id = f"owned-{uuid.uuid4().hex[:12]}"
    await redis.set(Keys(settings.key_prefix).owner(job_id), tenant, ex=settings.stream_ttl)
    return job_id


def hooked(settings: Settings, receiver: Receiver, **changes: Any) -> Settings:
    tenants = {"tenant-a": (receiver.url("/tenant-a"), TENANT_SECRET)}
    return settings.replace(
        webhook_url=receiver.url("/fleet"),
        webhook_secret=SECRET,
        webhook_tenants=tenants,
        **{"webhook_timeout": 5.0, **changes},
    )


def test_the_sdk_accepts_our_signature_and_refuses_a_wrong_one() -> None:
    """Standard Webhooks signing, whsec_ and plain secrets, as the SDK verifies it."""
    body = '{"id":"evt_1","object":"event","type":"response.completed","created_at":1,"data":{"id":"resp_1"}}'  # noqa: E501
    with OpenAI(api_key="unused") as sdk:
        for secret in (SECRET, "a plain secret"):
            headers = signed_headers(secret, "msg_1", int(time.time()), body)
            event = sdk.webhooks.unwrap(body, headers, secret=secret)
            assert isinstance(event, ResponseCompletedWebhookEvent)
            assert event.data.id == "resp_1"
        with pytest.raises(InvalidWebhookSignatureError):
            sdk.webhooks.verify_signature(body, headers, secret=SECRET)


def test_bodies_are_derived_from_the_terminal_entry_alone() -> None:
    """The same terminal entry gives the same ids and body; the shapes per outcome."""
    usage = {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}
    done = Done(finish_reason="stop", usage=usage, cursor="1764345600123-0")
    first, again = notice("job-1", done), notice("job-1", done)
    assert first == again
    assert first.message_id.startswith("msg_")
    assert notice("job-1", Done(finish_reason="stop", cursor="1764345600124-0")) != first
    body = json.loads(first.body)
    assert body == {
        "id": "evt_" + first.message_id.removeprefix("msg_"),
        "object": "event",
        "type": "job.done",
        "created_at": 1764345600,
        "data": {"id": "job-1", "status": "done", "finish_reason": "stop", "usage": usage},
    }
    error = Error(code="timeout", message="too slow", cursor="1-0")
    assert json.loads(notice("j", error).body)["data"] == {
        "id": "j",
        "status": "error",
        "error": {"code": "timeout", "message": "too slow"},
    }
    assert notice("j", Cancelled(reason="asked", cursor="1-0")).type == "job.cancelled"
    length = Done(finish_reason="length", cursor="1-0")
    assert notice("j", length, "resp_j").type == "response.incomplete"
    assert notice("j", done, "resp_j", "failed").type == "response.failed"
    assert notice("j", Cancelled(cursor="1-0"), "resp_j").type == "response.cancelled"
    assert json.loads(notice("j", done, "resp_j").body)["data"] == {"id": "resp_j"}


def test_a_failing_endpoint_gets_one_probe_at_a_time_after_a_growing_pause() -> None:
    """After BREAK_AFTER failures in a row a worker holds its posts to the endpoint back; one
    probe after the pause (doubling on each failed probe, not on stragglers); a success frees
    them; other endpoints are never held back."""
    now = [0.0]
    health = EndpointHealth(clock=lambda: now[0])
    burst = BREAK_AFTER + 10  # posts out together, failing together: one pause of 1 s
    assert all(health.may_post("tenant:down") for _ in range(burst))
    for _ in range(burst):
        health.posted("tenant:down", ok=False)
    assert not health.may_post("tenant:down")
    assert health.may_post("fleet")
    now[0] = 1.0
    assert health.may_post("tenant:down")  # the probe
    assert not health.may_post("tenant:down")  # one at a time
    health.posted("tenant:down", ok=False)
    now[0] = 2.5
    assert not health.may_post("tenant:down")  # the pause doubled to 2 s
    now[0] = 3.0
    assert health.may_post("tenant:down")
    health.posted("tenant:down", ok=True)
    assert health.may_post("tenant:down")
    assert health.may_post("tenant:down")


@pytest.mark.slow
async def test_done_failed_and_cancelled_while_queued_jobs_are_posted(
    settings: Settings, redis: Redis, receiver: Receiver
) -> None:
    """Each ended job is posted once to the fleet's endpoint, and a tenant's job to its
    tenant's too, in the documented job shape; `streamq inspect` shows the delivery."""
    hooks = hooked(settings, receiver)
    async with StreamQ(redis, hooks) as sq:
        cancelled = await sq.enqueue_chat("never started")
        assert await cancelled.cancel() == "cancelled"
        async with running_worker(hooks):
            done = await sq.enqueue_chat("hello", job_id=await owned(redis, hooks))
            failed = await sq.enqueue_chat("fail", extra_body=FAILING)
            ids = {done.id, failed.id, cancelled.id}
            await poll_until(lambda: ids <= set(receiver.delivered()), WAIT, "three webhooks")
            await poll_until(
                lambda: any(r.path == "/tenant-a" for r in receiver.received), WAIT, "tenant's"
            )
            record = await inspect_job(redis, hooks, done.id)
    assert not receiver.invalid
    by_id = receiver.delivered()
    assert by_id[done.id].body["type"] == "job.done"
    assert by_id[done.id].body["data"]["status"] == "done"
    assert by_id[failed.id].body["type"] == "job.error"
    assert by_id[failed.id].body["data"]["error"]["code"] == "upstream_bad_request"
    assert by_id[cancelled.id].body["type"] == "job.cancelled"
    tenant_post = next(r for r in receiver.received if r.path == "/tenant-a")
    assert tenant_post.body["data"]["id"] == done.id
    assert tenant_post.headers["webhook-id"] == by_id[done.id].headers["webhook-id"]
    fleet_posts = Counter(r.body["data"]["id"] for r in receiver.received if r.path == "/fleet")
    assert fleet_posts == Counter(ids)  # once each: a 2xx ends a delivery
    assert record.webhook is not None
    assert record.webhook["endpoints"]["fleet"]["state"] == "delivered"
    assert record.webhook["endpoints"]["tenant:tenant-a"]["state"] == "delivered"
    assert "tenant:tenant-a" in inspect_text(record)
    stored = await dump_keys(redis, f"{hooks.key_prefix}*")
    for secret in (SECRET, TENANT_SECRET, receiver.url("/"), "127.0.0.1"):
        assert secret not in stored


@pytest.mark.slow
async def test_a_drained_job_is_posted_though_no_worker_takes_it(
    settings: Settings, redis: Redis, receiver: Receiver
) -> None:
    """`streamq drain` takes queued jobs out of the queue, so no worker ever runs them: drain
    makes their webhooks due itself, and a worker posts them as any cancelled job's."""
    hooks = hooked(settings, receiver)
    async with StreamQ(redis, hooks) as sq:
        drained = await sq.enqueue_chat("drained before any worker ran")
        report = await drain(redis, hooks)
        assert report.cancelled == 1
        assert await redis.zcard(hooks.queue_name) == 0
        async with running_worker(hooks):
            await poll_until(lambda: drained.id in receiver.delivered(), WAIT, "its webhook")
    assert not receiver.invalid
    assert receiver.delivered()[drained.id].body["type"] == "job.cancelled"


@pytest.mark.slow
async def test_a_background_response_is_posted_as_openai_posts_it(
    settings: Settings, receiver: Receiver
) -> None:
    """Background `/v1/responses` responses through the gateway: `unwrap` gives the SDK's
    typed `response.completed` event naming the response; one whose stream broke after some
    output (the job retried and ended done) is `response.failed`, as its Response says."""
    hooks = hooked(settings, receiver)
    config = GatewayConfig(tokens=TOKENS)
    with GatewayThread(create_app(hooks, config), worker=hooks) as gateway:
        async with AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=TOKEN_A, max_retries=0) as sdk:
            response = await sdk.responses.create(
                model="gpt-4o-mini", input="hello", background=True
            )
            broken = await sdk.responses.create(
                model="gpt-4o-mini", input="break once", background=True, extra_body=BREAK_ONCE
            )
            ids = {response.id, broken.id}
            await poll_until(lambda: ids <= set(receiver.delivered()), WAIT, "their webhooks")
            shown = await sdk.responses.retrieve(broken.id)
    assert not receiver.invalid
    posted = receiver.delivered()[response.id]
    assert isinstance(posted.event, ResponseCompletedWebhookEvent)
    assert posted.event.data.id == response.id
    paths = sorted(r.path for r in receiver.received if r.body["data"]["id"] == response.id)
    assert paths == ["/fleet", "/tenant-a"]  # the gateway's tenant-a made it
    assert shown.status == "failed"
    async with Redis.from_url(hooks.redis_url) as redis:
        state = Keys(hooks.key_prefix).state(broken.id.removeprefix("resp_"))
        assert await redis.hget(state, "terminal") == b"done"
    assert isinstance(receiver.delivered()[broken.id].event, ResponseFailedWebhookEvent)


@pytest.mark.slow
async def test_a_receiver_answering_500_or_a_redirect_gets_the_same_id_again(
    settings: Settings, redis: Redis, receiver: Receiver
) -> None:
    """500, then a redirect (not followed), then 200: three posts with one webhook-id and one
    body."""
    hooks = hooked(settings, receiver, webhook_retry_period=60.0)
    receiver.answers["/fleet"] = [500, 307]
    async with StreamQ(redis, hooks) as sq, running_worker(hooks):
        job = await sq.enqueue_chat("retry me")
        await poll_until(lambda: job.id in receiver.delivered(), WAIT, "the third post")
        record = await inspect_job(redis, hooks, job.id)
    posts = [r for r in receiver.received if r.body["data"]["id"] == job.id]
    assert [r.status for r in posts] == [500, 307, 200]  # the redirect was not followed
    assert not receiver.invalid
    assert len({r.headers["webhook-id"] for r in posts}) == 1
    assert len({json.dumps(r.body) for r in posts}) == 1
    assert record.webhook is not None
    assert record.webhook["endpoints"]["fleet"] == {
        **record.webhook["endpoints"]["fleet"],
        "state": "delivered",
        "attempts": 3,
    }


@pytest.mark.slow
async def test_a_receiver_too_slow_to_answer_gets_the_post_again(
    settings: Settings, redis: Redis, receiver: Receiver
) -> None:
    """A post unanswered within STREAMQ_WEBHOOK_TIMEOUT is a failure, tried again."""
    hooks = hooked(settings, receiver, webhook_timeout=1.0)
    receiver.hold = asyncio.Event()  # the first post is never answered in time
    try:
        async with StreamQ(redis, hooks) as sq, running_worker(hooks):
            job = await sq.enqueue_chat("answer me")
            await poll_until(lambda: job.id in receiver.delivered(), WAIT, "the second post")
            record = await inspect_job(redis, hooks, job.id)
    finally:
        receiver.hold.set()
    assert record.webhook is not None
    fleet = record.webhook["endpoints"]["fleet"]
    assert fleet["state"] == "delivered"
    assert fleet["attempts"] >= 2  # a loaded machine may miss the timeout once more
    [held] = receiver.held
    assert receiver.delivered()[job.id].headers["webhook-id"] == held


@pytest.mark.slow
async def test_a_failure_is_recorded_after_the_retry_period(
    settings: Settings, redis: Redis, receiver: Receiver
) -> None:
    """A receiver that always answers 500: retried for the period, then recorded as failed
    (visible in `streamq inspect`), and other endpoints are not held up by it."""
    hooks = hooked(settings, receiver, webhook_retry_period=2.0)
    receiver.answers["/fleet"] = [500] * 1000
    metrics.enable()
    failed_before = failures_counted()
    async with StreamQ(redis, hooks) as sq, running_worker(hooks):
        job = await sq.enqueue_chat("nobody listens", job_id=await owned(redis, hooks))

        async def failed() -> bool:
            found = await inspect_job(redis, hooks, job.id)
            fleet = (found.webhook or {}).get("endpoints", {}).get("fleet", {})
            return bool(fleet.get("state") == "failed")

        await poll_until(failed, WAIT, "the failure to be recorded")
        record = await inspect_job(redis, hooks, job.id)
    assert record.webhook is not None
    assert record.webhook["state"] == "finished"
    fleet = record.webhook["endpoints"]["fleet"]
    assert fleet["attempts"] >= 2
    assert fleet["error"] == "HTTP 500"
    assert record.webhook["endpoints"]["tenant:tenant-a"]["attempts"] == 1
    assert "failed after" in inspect_text(record)
    assert failures_counted() == failed_before + 1


def failures_counted() -> float:
    """``streamq_webhook_posts_total{outcome="failed"}`` in this process."""
    found = REGISTRY.get_sample_value("streamq_webhook_posts_total", {"outcome": "failed"})
    return found or 0.0


@pytest.mark.slow
async def test_every_webhook_survives_a_killed_worker_and_a_redis_restart(
    settings: Settings, receiver: Receiver, tmp_path: Path
) -> None:
    """Acceptance: jobs end while a worker is SIGKILLed and Redis (AOF) restarts, the receiver
    refusing each first post: every job's webhook arrives, duplicates under one id."""
    receiver.fail_first_of_each = True
    receiver.hold = asyncio.Event()
    server = RestartableRedis(tmp_path / "redis", appendonly=True).start()
    try:
        scope = f"hooks-{uuid.uuid4().hex[:8]}"
        own = settings.replace(redis_url=server.url, key_prefix=scope, queue_name=f"{scope}:q")
        env = {
            **settings_environment(own),
            "STREAMQ_WEBHOOK_URL": receiver.url("/fleet"),
            "STREAMQ_WEBHOOK_SECRET": SECRET,
            "STREAMQ_WEBHOOK_TIMEOUT": "2",
            "STREAMQ_WEBHOOK_RETRY_PERIOD": "300",
            "STREAMQ_LEASE": "2",
        }
        pool = WorkerPool(env, tmp_path / "workers")
        try:
            pool.spawn(2)
            await pool.wait_serving()
            async with Redis.from_url(server.url) as direct, StreamQ(direct, own) as sq:
                slow = {"simulator": {"tokens_per_second": 40, "reply_tokens": 20}}
                jobs = [await sq.enqueue_chat(f"job {n}", extra_body=slow) for n in range(16)]
            ids = {job.id for job in jobs}
            await poll_until(lambda: receiver.held, STARTUP, "a post in flight")
            for process in pool.alive:  # the sender of the held post among them
                pool.kill(process)
            pool.spawn(2)
            await asyncio.to_thread(server.restart, 0.5)
            receiver.hold.set()
            await poll_until(
                lambda: ids <= set(receiver.delivered()), STARTUP, "every job's webhook"
            )
        except BaseException:
            print(pool.tail())
            print(await webhook_keys(server.url, own, ids - set(receiver.delivered())))
            print([(r.body["data"]["id"], r.status) for r in receiver.received])
            raise
        finally:
            pool.stop_all()
    finally:
        server.stop()
    assert not receiver.invalid
    for job_id in ids:
        posts = [r for r in receiver.received if r.body["data"]["id"] == job_id]
        assert len({r.headers["webhook-id"] for r in posts}) == 1, posts
        assert {r.body["type"] for r in posts} == {"job.done"}
    [held] = receiver.held  # its sender died waiting: another worker posted it again
    assert any(r.headers["webhook-id"] == held and r.status == 200 for r in receiver.received)
    assert pool.kills == 2
    assert server.restarts == 1


async def webhook_keys(url: str, settings: Settings, job_ids: set[str]) -> str:
    """The due set and the records of ``job_ids``, for a failure message."""
    keys = Keys(settings.key_prefix)
    async with Redis.from_url(url) as redis:
        lines = [repr(await redis.zrange(keys.webhooks_due(), 0, -1, withscores=True))]
        for job_id in sorted(job_ids):
            record = await redis.hgetall(keys.webhook(job_id))
            lines.append(f"{job_id}: {record!r}")
    return "\n".join(lines)


def webhook_acl_rules(prefix: str) -> list[str]:
    """The rules docs/operations.md ("Webhooks") adds to the worker's ACL user."""
    section = DOCS.read_text().partition("## Webhooks")[2].partition("\n## ")[0]
    [line] = [line for line in section.splitlines() if line.startswith("%R~PREFIX:")]
    return line.replace("PREFIX", prefix).split()


@pytest.mark.slow
async def test_the_documented_acl_rules_are_enough_for_webhooks(
    settings: Settings, receiver: Receiver
) -> None:
    """A worker under the documented worker user plus the webhook rules delivers to the
    fleet and to a tenant, for a job, a response and a queued job's cancellation, with nothing
    denied."""
    with LocalRedis() as server:
        async with Redis.from_url(server.url) as admin:
            for user in documented_acl_users(settings.key_prefix):
                await admin.execute_command(*user)
            rules = webhook_acl_rules(settings.key_prefix)
            await admin.execute_command("ACL", "SETUSER", "streamq-worker", *rules)
            direct = hooked(settings.replace(redis_url=server.url), receiver)
            url = f"redis://streamq-worker:worker-password@127.0.0.1:{server.port}/0"
            try:
                async with StreamQ(admin, direct) as sq:
                    cancelled = await sq.enqueue_chat("never started")
                    await cancelled.cancel()
                    async with running_worker(direct.replace(redis_url=url)):
                        done = await sq.enqueue_chat("hi", job_id=await owned(admin, direct))
                        response = await sq.enqueue_response("hi")
                        ids = {done.id, cancelled.id, f"resp_{response.id}"}
                        await poll_until(lambda: ids <= set(receiver.delivered()), WAIT, "both")
                        await poll_until(
                            lambda: any(r.path == "/tenant-a" for r in receiver.received),
                            WAIT,
                            "the tenant's post",
                        )
            finally:
                denied = await admin.execute_command("ACL", "LOG")
                fields = (b"username", b"context", b"reason", b"object")
                assert not denied, [[e[f] for f in fields] for e in map(pairs, denied)]
