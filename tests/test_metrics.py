"""Prometheus metrics, scraped over HTTP from a real worker fleet and from the gateway."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import httpx2
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from streamq import JobFailed, Settings, StreamQ
from streamq.core.events import Delta, Event, Start, decode_entry
from streamq.core.keys import Keys
from streamq.dev.local_redis import free_port
from streamq.gateway import GatewayConfig, create_app
from tests.gateway.sse import read_events
from tests.harness.gateway import TOKEN_A, TOKENS, GatewayThread
from tests.harness.processes import live_workers, run_cli, settings_environment, worker_processes
from tests.harness.waiting import STARTUP, poll_until

SLOW_START = {"simulator": {"time_to_first_token": 0.3}}
FAIL = {"simulator": {"fault": "http_400"}}


class Scrape:
    """One scrape of ``/metrics``: sample values by name and labels."""

    def __init__(self, text: str) -> None:
        self.values: dict[str, dict[frozenset[tuple[str, str]], float]] = defaultdict(dict)
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self.values[sample.name][frozenset(sample.labels.items())] = sample.value

    def __call__(self, name: str, **labels: str) -> float:
        """The sample's value (0 when it has none yet)."""
        return self.values[name].get(frozenset(labels.items()), 0.0)

    def total(self, name: str) -> float:
        """The sum over every label set of ``name``."""
        return sum(self.values[name].values())


async def scrape(url: str, token: str | None = None) -> Scrape:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx2.AsyncClient() as client:
        response = await client.get(url, headers=headers)
    assert response.status_code == 200, response.text
    return Scrape(response.text)


async def scrape_until(
    url: str, ready: Callable[[Scrape], bool], timeout: float = STARTUP
) -> Scrape:
    """Scrape until ``ready`` holds (a job's end is counted just after its stream ends)."""
    found: list[Scrape] = []

    async def got_there() -> bool:
        with contextlib.suppress(httpx2.TransportError):
            found[:] = [await scrape(url)]
            return ready(found[0])
        return False

    await poll_until(got_there, timeout, "the metrics to get there", interval=0.05)
    return found[0]


async def entries(redis: Redis, settings: Settings, job_id: str) -> list[Event]:
    raw = await redis.xrange(Keys(settings.key_prefix).events(job_id))
    return [decode_entry(cursor.decode(), fields) for cursor, fields in raw]


def pid_of(events: list[Event]) -> int:
    start = next(event for event in events if isinstance(event, Start))
    return int(start.worker.rpartition(":")[2])


async def test_a_fleet_serves_its_processes_metrics_added_up(
    sq: StreamQ, redis: Redis, settings: Settings, tmp_path: Path
) -> None:
    """`worker --processes 2 --metrics-port`: counts, histograms and gauges of both processes
    add up to exactly what ran; a killed process's counts stay and its in-flight stream goes."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    fleet = ["-m", "streamq", "worker", "--processes", "2", "--concurrency", "1"]
    # A lease long enough that nothing takes the killed process's job up again while the test
    # watches its stream leave the gauge.
    env = {"STREAMQ_LEASE": "10", "STREAMQ_DRAIN_TIMEOUT": "1", "STREAMQ_MODEL_LIMITS": "*=5"}
    command = [*fleet, "--metrics-port", str(port)]
    with worker_processes(settings, 1, command, env, tmp_path) as workers:
        await live_workers(redis, settings, 2)
        retried = {"fault": "http_429", "retry_after": 0.1, "fault_times": 1}
        retried |= {"fault_key": uuid.uuid4().hex, "time_to_first_token": 0.3}
        bodies = [SLOW_START] * 4 + [{"simulator": retried}, FAIL]
        jobs = [await sq.enqueue_chat(f"metrics {i}", extra_body=b) for i, b in enumerate(bodies)]
        results = await asyncio.gather(*(job.result() for job in jobs), return_exceptions=True)
        assert isinstance(results[-1], JobFailed)
        done = [result for result in results[:-1] if not isinstance(result, BaseException)]
        assert len(done) == 5, results
        streams = [await entries(redis, settings, job.id) for job in jobs]
        assert len({pid_of(events) for events in streams}) == 2  # both processes ran jobs
        got = await scrape_until(url, lambda s: s.total("streamq_jobs_total") == 6)

        assert got("streamq_jobs_total", outcome="done") == 5
        assert got("streamq_jobs_total", outcome="error") == 1
        assert got("streamq_job_errors_total", code="upstream_bad_request") == 1
        assert got("streamq_retries_total", code="upstream_rate_limited") == 1
        assert got("streamq_attempts_total") == 7
        assert got("streamq_resets_total") == 1
        deltas = sum(isinstance(event, Delta) for events in streams for event in events)
        assert got("streamq_deltas_total") == deltas > 0
        for kind in ("prompt", "completion"):
            used = sum(result.usage[f"{kind}_tokens"] for result in done if result.usage)
            assert got("streamq_tokens_total", kind=kind) == used > 0
        assert got("streamq_queue_wait_seconds_count") == 6
        assert got("streamq_admission_wait_seconds_count") == 7
        assert got("streamq_time_to_first_token_seconds_count") == 5
        assert got("streamq_time_to_first_token_seconds_bucket", le="0.25") == 0
        assert got("streamq_time_to_first_token_seconds_sum") >= 5 * 0.3
        for outcome, count in (("done", 5), ("error", 1), ("retried", 1)):
            assert got("streamq_generation_duration_seconds_count", outcome=outcome) == count
        assert got("streamq_streams_in_flight") == 0
        # Every entry went out in exactly one batch.
        assert got("streamq_publish_batch_entries_sum") == sum(map(len, streams))
        batches = got("streamq_publish_batch_entries_count")
        assert 0 < batches == got("streamq_publish_lag_seconds_count")

        slow = {"simulator": {"tokens_per_second": 4, "reply_tokens": 40}}
        job = await sq.enqueue_chat("metrics: a slow one", extra_body=slow)
        await scrape_until(url, lambda s: s("streamq_streams_in_flight") == 1)
        os.kill(pid_of(await entries(redis, settings, job.id)), signal.SIGKILL)
        # The supervisor notices at once; the job can be taken up again only after 10 s.
        after = await scrape_until(url, lambda s: s("streamq_streams_in_flight") == 0, 8)
        assert after.total("streamq_jobs_total") == 6  # the dead process's counts stay
    assert "ended with signal 9" in workers.logs()


async def test_metrics_without_the_extra_fail_at_start(settings: Settings, tmp_path: Path) -> None:
    """Without prometheus_client, `worker --metrics-port` exits 2 and says what to install."""
    hidden = tmp_path / "prometheus_client"
    hidden.mkdir()
    (hidden / "__init__.py").write_text("raise ImportError('not installed, for this test')\n")
    env = {**settings_environment(settings), "PYTHONPATH": str(tmp_path)}
    code, _, err = await run_cli(settings, "worker", "--metrics-port", "9", env=env)
    assert code == 2
    assert "pip install 'streamq[metrics]'" in err


async def test_the_gateway_serves_request_and_reader_lag_metrics(settings: Settings) -> None:
    """`GET /metrics` needs a token; it counts requests by route and times each event's way
    from Redis to the client."""
    app = create_app(settings, GatewayConfig(tokens=TOKENS))
    with GatewayThread(app, worker=settings) as server:
        url = f"{server.url}/metrics"
        async with httpx2.AsyncClient(base_url=server.url, timeout=30) as client:
            assert (await client.get("/metrics")).status_code == 401
            before = await scrape(url, TOKEN_A)
            headers = {"Authorization": f"Bearer {TOKEN_A}"}
            body = {"messages": [{"role": "user", "content": "lag, please"}]}
            created = await client.post("/v1/jobs", json=body, headers=headers)
            frames = await read_events(client, created.json()["events_url"], headers)
            await client.get("/v1/jobs/no-such-job", headers=headers)
        after = await scrape(url, TOKEN_A)

    def grew(name: str, **labels: str) -> float:
        return after(name, **labels) - before(name, **labels)

    assert grew("streamq_gateway_requests_total", method="POST", route="/v1/jobs", status="202")
    route = "/v1/jobs/{job_id}"
    assert grew("streamq_gateway_requests_total", method="GET", route=route, status="404") == 1
    events = f"{route}/events"
    assert grew("streamq_gateway_requests_total", method="GET", route=events, status="200") == 1
    assert grew("streamq_gateway_request_duration_seconds_count", method="POST", route="/v1/jobs")
    assert grew("streamq_reader_lag_seconds_count") == len(frames) > 0
    assert 0 <= grew("streamq_reader_lag_seconds_sum") < len(frames) * 5


async def test_the_reader_lag_counts_every_subscriber_s_every_entry(settings: Settings) -> None:
    """Forty subscribers of one live job: entries written straight onto their connections,
    whose lag is observed per group of subscribers (a full group of 32 and the rest at the end
    of the loop's turn), still count once for each subscriber and entry, with a lag no longer
    than the test took."""
    paced = {"simulator": {"tokens_per_second": 40, "reply_tokens": 30}}
    readers = 40
    config = GatewayConfig(tokens=TOKENS, max_streams=None, rate_limit=None)
    app = create_app(settings, config)
    headers = {"Authorization": f"Bearer {TOKEN_A}"}
    with GatewayThread(app, worker=settings) as server:
        url = f"{server.url}/metrics"
        before = await scrape(url, TOKEN_A)
        began = asyncio.get_running_loop().time()
        limits = httpx2.Limits(max_connections=None)
        async with httpx2.AsyncClient(base_url=server.url, timeout=60, limits=limits) as client:
            body = {"messages": [{"role": "user", "content": "many readers"}], "extra_body": paced}
            created = await client.post("/v1/jobs", json=body, headers=headers)
            events_url = created.json()["events_url"]
            results = await asyncio.gather(
                *(read_events(client, events_url, headers) for _ in range(readers))
            )
        took = asyncio.get_running_loop().time() - began
        after = await scrape(url, TOKEN_A)
        written_directly = app.state.gateway.written_directly
    delivered = sum(len(frames) for frames in results)
    assert delivered == readers * len(results[0]) > readers
    assert written_directly > 0  # the path that observes per group was taken
    count = after("streamq_reader_lag_seconds_count") - before("streamq_reader_lag_seconds_count")
    assert count == delivered
    lag_sum = after("streamq_reader_lag_seconds_sum") - before("streamq_reader_lag_seconds_sum")
    assert 0 <= lag_sum <= delivered * took


def test_observing_many_at_once_records_what_observing_one_by_one_does() -> None:
    """``observe_many`` (the lag of many subscribers' writes in one step) leaves the histogram
    as that many ``observe`` calls do, bucket bounds, zero and beyond the last bound included:
    it writes prometheus_client's own values, so a release that changes them shows here."""
    from prometheus_client import CollectorRegistry, Histogram

    from streamq.core._prometheus import LAG_BUCKETS, observe_many

    one_by_one = Histogram("one", "", buckets=LAG_BUCKETS, registry=CollectorRegistry())
    at_once = Histogram("many", "", buckets=LAG_BUCKETS, registry=CollectorRegistry())
    for value, count in [(0.0, 3), (0.0005, 2), (0.0007, 5), (0.1, 1), (2.5, 4), (99.0, 7)]:
        for _ in range(count):
            one_by_one.observe(value)
        observe_many(at_once, value, count)

    def samples(histogram: Histogram) -> dict[tuple[str, str], float]:
        [family] = histogram.collect()
        return {
            (s.name.split("_", 1)[1], s.labels.get("le", "")): s.value
            for s in family.samples
            if not s.name.endswith("_created")
        }

    expected = samples(one_by_one)
    assert samples(at_once) == {name: pytest.approx(value) for name, value in expected.items()}
