"""The Prometheus metrics themselves; imported only once metrics are enabled.

With ``PROMETHEUS_MULTIPROC_DIR`` set (``streamq worker --processes N`` sets it for its
processes) every value goes to a file in that directory, and whoever serves the directory adds
the processes' files up (``prometheus_client``'s multiprocess mode).
"""

from __future__ import annotations

import bisect
import contextlib
import os
import tempfile
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import start_http_server
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from streamq.core.exceptions import ConfigError

LAG_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
WAIT_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
KINDS = {"prompt": "prompt_tokens", "completion": "completion_tokens"}


class Recorder:
    """Every streamq metric, registered in ``prometheus_client``'s default registry."""

    def __init__(self) -> None:
        self.jobs = Counter("streamq_jobs", "Jobs ended, by outcome.", ["outcome"])
        self.job_errors = Counter(
            "streamq_job_errors", "Jobs ended with an error, by its code.", ["code"]
        )
        self.attempts = Counter("streamq_attempts", "Attempts started (first ones and resets).")
        self.resets = Counter("streamq_resets", "Attempts that started a job over.")
        self.retries = Counter(
            "streamq_retries", "Attempts that failed and will be retried, by code.", ["code"]
        )
        self.queue_wait = Histogram(
            "streamq_queue_wait_seconds",
            "From enqueue to a worker's first start of the job.",
            buckets=WAIT_BUCKETS,
        )
        self.ttft = Histogram(
            "streamq_time_to_first_token_seconds",
            "From an attempt's start (admission wait included) to its first delta.",
            buckets=WAIT_BUCKETS,
        )
        self.duration = Histogram(
            "streamq_generation_duration_seconds",
            "How long each attempt ran, by how it ended (done, error, cancelled, retried).",
            ["outcome"],
            buckets=DURATION_BUCKETS,
        )
        self.deltas = Counter("streamq_deltas", "Content deltas streamed, every attempt's.")
        self.tokens = Counter(
            "streamq_tokens", "Tokens of finished jobs, from the upstream's usage.", ["kind"]
        )
        self.in_flight = Gauge(
            "streamq_streams_in_flight",
            "Upstream streams open now.",
            multiprocess_mode="livesum",
        )
        self.batch = Histogram(
            "streamq_publish_batch_entries",
            "Stream entries per pipelined write (group commit).",
            buckets=BATCH_BUCKETS,
        )
        self.publish_lag = Histogram(
            "streamq_publish_lag_seconds",
            "From a batch's oldest entry being emitted to the batch being in Redis.",
            buckets=LAG_BUCKETS,
        )
        self.admission_wait = Histogram(
            "streamq_admission_wait_seconds",
            "Time a generation waited for fleet-wide admission (limited or budgeted models only).",
            buckets=WAIT_BUCKETS,
        )
        self.admission_reasons = Histogram(
            "streamq_admission_wait_reason_seconds",
            "Time generations waited for admission, by reason (concurrency, token_budget, "
            "request_budget, rate_limited).",
            ["reason"],
            buckets=WAIT_BUCKETS,
        )
        self.budget_tokens_counted = Counter(
            "streamq_budget_tokens",
            "Tokens of budgeted generations: estimated when admitted, used (usage) at the end.",
            ["model", "kind"],
        )
        self.reader_lag = Histogram(
            "streamq_reader_lag_seconds",
            "From Redis writing an entry to the gateway handing it to its client.",
            buckets=LAG_BUCKETS,
        )
        self.webhooks = Counter(
            "streamq_webhook_posts",
            "Webhook posts to an endpoint, by outcome (delivered, retrying, failed for good).",
            ["outcome"],
        )
        self.requests = Counter(
            "streamq_gateway_requests",
            "Gateway HTTP requests, by method, route and status.",
            ["method", "route", "status"],
        )
        self.request_duration = Histogram(
            "streamq_gateway_request_duration_seconds",
            "Gateway time to the response's start (an event stream's headers), by route.",
            ["method", "route"],
            buckets=LAG_BUCKETS,
        )
        self.requests_in_progress = Gauge(
            "streamq_gateway_requests_in_progress",
            "Gateway requests being answered now (open event streams included).",
            multiprocess_mode="livesum",
        )

    def job_dequeued(self, enqueue_time: datetime) -> None:
        self.queue_wait.observe(max(0.0, time.time() - enqueue_time.timestamp()))

    def attempt_started(self, attempt: int) -> None:
        self.attempts.inc()
        if attempt > 1:
            self.resets.inc()

    def attempt_ended(self, fields: Mapping[str, Any]) -> None:
        code = fields.get("error_code")
        retrying = fields.get("transition") == "retrying"
        outcome = "retried" if retrying else "error" if code else str(fields["outcome"])
        self.duration.labels(outcome).observe(fields["duration_s"])
        if fields.get("ttft_s") is not None:
            self.ttft.observe(fields["ttft_s"])
        if fields.get("deltas"):
            self.deltas.inc(fields["deltas"])
        if retrying:
            self.retries.labels(code or "unknown").inc()
            return
        self.jobs.labels(outcome).inc()
        if code:
            self.job_errors.labels(code).inc()
        usage = fields.get("usage") or {}
        for kind, name in KINDS.items():
            if isinstance(usage.get(name), int):
                self.tokens.labels(kind).inc(usage[name])

    def streaming(self) -> contextlib.AbstractContextManager[None]:
        return self.in_flight.track_inprogress()

    def batch_written(self, entries: int, lag: float) -> None:
        self.batch.observe(entries)
        self.publish_lag.observe(lag)

    def admission_waited(self, seconds: float) -> None:
        self.admission_wait.observe(seconds)

    def admission_reason_waited(self, reason: str, seconds: float) -> None:
        self.admission_reasons.labels(reason).observe(seconds)

    def budget_tokens(self, model: str, kind: str, tokens: int) -> None:
        self.budget_tokens_counted.labels(model, kind).inc(tokens)

    def webhook_attempted(self, outcome: str) -> None:
        self.webhooks.labels(outcome).inc()

    def delivered(self, cursor: str, readers: int = 1) -> None:
        written_ms = int(cursor.partition("-")[0])
        lag = max(0.0, time.time() - written_ms / 1000)
        if readers == 1:
            self.reader_lag.observe(lag)
        else:
            observe_many(self.reader_lag, lag, readers)

    def request_ended(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.request_duration.labels(method, route).observe(seconds)


def observe_many(histogram: Histogram, value: float, count: int) -> None:
    """Record what ``count`` calls of ``histogram.observe(value)`` would, in one step (for a
    histogram without labels).

    prometheus_client has no such call, and each ``observe`` takes its locks and walks the
    buckets (~1.3 µs): a gateway handing one entry to 2,000 subscribers spent ~2.5 µs of each
    subscriber's write on the lag metric. This adds to the histogram's own values, as
    ``observe`` does (in multiprocess mode too); tests/test_metrics.py holds it to ``observe``.
    """
    histogram._sum.inc(value * count)
    histogram._buckets[bisect.bisect_left(histogram._upper_bounds, value)].inc(count)


def registry() -> CollectorRegistry:
    """What this process should serve: every process's files in multiprocess mode."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path:
        return REGISTRY
    collected = CollectorRegistry()
    MultiProcessCollector(collected, path)  # type: ignore[no-untyped-call]
    return collected


def serve(port: int, collected: CollectorRegistry) -> WSGIServer:
    """Serve ``/metrics`` on ``port`` (all interfaces) from a daemon thread; returns the server."""
    try:
        server, _ = start_http_server(port, registry=collected)
    except OSError as exc:
        raise ConfigError(f"cannot serve metrics on port {port}: {exc}") from exc
    return server


class FleetExporter:
    """A supervisor's side: a fresh directory for its processes' files, served added up."""

    def __init__(self, port: int) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="streamq-metrics-")
        collected = CollectorRegistry()
        MultiProcessCollector(collected, self._dir.name)  # type: ignore[no-untyped-call]
        try:
            self._server = serve(port, collected)
        except ConfigError:
            self._dir.cleanup()
            raise

    def environment(self) -> dict[str, str]:
        """The environment of a worker process: record into the directory, serve nothing."""
        return {
            **os.environ,
            "PROMETHEUS_MULTIPROC_DIR": self._dir.name,
            "STREAMQ_METRICS_PORT": "0",
        }

    def process_ended(self, pid: int) -> None:
        """Drop a dead process's live gauges (its counters and histograms still count)."""
        mark_process_dead(pid, self._dir.name)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        """Stop serving and remove the directory."""
        self._server.shutdown()
        self._server.server_close()
        self._dir.cleanup()
