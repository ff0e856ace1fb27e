"""What the benchmark's processes share: where things are, job specs, traces and percentiles."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

MODEL = "gpt-4o-mini"
READER_NAME = "bench-reader"  # Redis client name of every reader process's connections
NAIVE_WORKER_NAME = "bench-naive-worker"


@dataclass(frozen=True)
class Endpoints:
    """Where the benchmark's services listen and which keys it uses; passed to subprocesses."""

    redis_url: str
    base_url: str
    key_prefix: str
    queue_name: str
    aimock_url: str = ""  # @copilotkit/aimock's base URL, when compat/node_modules has it

    def upstream_url(self, upstream: str) -> str:
        """The base URL of ``upstream``: "simulator" or "aimock"."""
        return self.aimock_url if upstream == "aimock" else self.base_url

    @property
    def naive_queue(self) -> str:
        """The Redis list the naive worker pops jobs from."""
        return f"{self.key_prefix}:naive:jobs"

    def naive_stream(self, job_id: str) -> str:
        """The Redis stream the naive worker writes a job's deltas to."""
        return f"{self.key_prefix}:naive:{job_id}"

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: str) -> Endpoints:
        return cls(**json.loads(raw))


@dataclass(frozen=True)
class JobSpec:
    """One chat job of a workload: its id, how many deltas, how fast, and when it starts."""

    id: str
    tokens: int
    tokens_per_second: float | None
    offset: float = 0.0  # seconds after the workload's start
    upstream: str = "simulator"  # or "aimock", paced by its fixture (see aimock_fixtures)
    ttft_ms: float = 0.0  # aimock: time to its first chunk (the role-only one)

    @property
    def interval(self) -> float | None:
        """Seconds between two deltas of a paced stream."""
        return 1 / self.tokens_per_second if self.tokens_per_second else None

    @property
    def marker(self) -> str:
        """The text in the prompt that picks this job's aimock fixture."""
        return f"[aimock tokens={self.tokens} ttft={self.ttft_ms:g} tps={self.tokens_per_second}]"

    @property
    def prompt(self) -> str:
        if self.upstream == "aimock":
            return f"benchmark job {self.id} {self.marker}"
        return f"benchmark job {self.id}"

    def messages(self) -> list[dict[str, str]]:
        return [{"role": "user", "content": self.prompt}]

    def extra_body(self) -> dict[str, Any]:
        """The request's ``extra_body``: the simulator's per-request options."""
        if self.upstream == "aimock":
            return {}
        options = {"reply_tokens": self.tokens, "tokens_per_second": self.tokens_per_second}
        return {"simulator": options}

    def naive_job(self, endpoints: Endpoints) -> str:
        """The job as pushed onto the naive worker's list."""
        stream = endpoints.naive_stream(self.id)
        return json.dumps(
            {
                "stream": stream,
                "messages": self.messages(),
                "extra_body": self.extra_body(),
                "base_url": endpoints.upstream_url(self.upstream),
            }
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> JobSpec:
        return cls(**raw)


AIMOCK_PIECE = "tok "  # one delta of an aimock answer: aimock splits content every 4 chars


def aimock_fixtures(jobs: list[JobSpec]) -> dict[str, Any]:
    """An aimock fixture file answering ``jobs``: per marker, ``tokens`` deltas after a first
    (role-only) chunk at ``ttft_ms``, one every ``1 / tokens_per_second`` s (full speed if None).
    """
    fixtures: dict[str, dict[str, Any]] = {}
    for job in jobs:
        fixture: dict[str, Any] = {
            "match": {"userMessage": job.marker},
            "response": {"content": AIMOCK_PIECE * job.tokens},
            "chunkSize": len(AIMOCK_PIECE),
        }
        profile = {"ttft": job.ttft_ms} if job.ttft_ms else {}
        if job.tokens_per_second:
            profile["tps"] = job.tokens_per_second
        if profile:
            fixture["streamingProfile"] = profile
        fixtures[job.marker] = fixture
    return {"fixtures": list(fixtures.values())}


@dataclass
class Trace:
    """What a reader saw of one job: each delta's arrival time and, via Redis, its entry id."""

    received: list[float] = field(default_factory=list)  # time.time() of each delta
    entry_ids: list[str] = field(default_factory=list)  # stream entry ids (empty for direct)
    offset: float = 0.0  # when the job was due to start, in seconds after the workload began
    error: str | None = None
    interval: float | None = None  # seconds between deltas of a paced stream


def entry_seconds(entry_id: str | bytes) -> float:
    """The Redis server time (seconds) at which a stream entry was added."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.partition("-")[0]) / 1000


def schedule_lags(times: list[float], interval: float) -> list[float]:
    """How late each delta is against the simulator's pace, relative to the stream's best one.

    The simulator sends delta k of a paced stream at ``start + k * interval``; ``start`` is not
    known here, so the delta that was least late sets the baseline (a lower bound on lag).
    """
    if not times:
        return []
    behind = [t - k * interval for k, t in enumerate(times)]
    best = min(behind)
    return [b - best for b in behind]


def lag_summary(
    traces: list[Trace], interval: float | None, began: float
) -> dict[str, float | None]:
    """The most jobs live at once, and p50/p99/max in milliseconds of: start delay (when a job
    was due to start → its first delta seen), delivery lag (Redis → reader) and, for paced
    streams, publish lag (upstream → Redis) and end-to-end lag (upstream → reader)."""
    start: list[float] = []
    delivery: list[float] = []
    publish: list[float] = []
    end_to_end: list[float] = []
    for trace in traces:
        if trace.received:
            start.append(trace.received[0] - began - trace.offset)
        stamps = [entry_seconds(entry_id) for entry_id in trace.entry_ids]
        if stamps:  # through Redis: how long each entry took to reach the reader
            delivery += [got - at for got, at in zip(trace.received, stamps, strict=True)]
        paced = trace.interval or interval
        if paced:
            publish += schedule_lags(stamps, paced)
            end_to_end += schedule_lags(trace.received, paced)
    summary: dict[str, float | None] = {"peak_live_streams": peak_overlap(traces)}
    # Jobs started per second: how many showed a first delta ÷ when the last of them did.
    summary["starts_per_s"] = len(start) / max(start) if start and max(start) > 0 else None
    named = {"start": start, "delivery": delivery, "publish": publish, "e2e": end_to_end}
    for name, values in named.items():
        for p in (50, 99, 100):
            value = percentile(values, p)
            summary[f"{name}_p{p}_ms"] = None if value is None else value * 1000
    return summary


def peak_overlap(traces: list[Trace]) -> int:
    """The most jobs live at once, a job being live from its first delta seen to its last."""
    changes = sorted(
        change
        for trace in traces
        if trace.received
        for change in ((trace.received[0], 1), (trace.received[-1], -1))
    )
    live = peak = 0
    for _, step in changes:
        live += step
        peak = max(peak, live)
    return peak


def percentile(values: list[float], p: float) -> float | None:
    """The ``p``-th percentile (nearest rank) of ``values``; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]
