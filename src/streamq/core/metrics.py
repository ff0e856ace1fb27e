"""Prometheus metrics, behind a few calls the rest of streamq makes whether metrics are on or not.

Until :func:`enable` is called every call here is a no-op and ``prometheus_client`` (the
``metrics`` extra) is never imported, so the base install works without it. The metric
definitions live in :mod:`streamq.core._prometheus`; ``docs/operations.md`` lists them.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from streamq.core.exceptions import ConfigError

if TYPE_CHECKING:
    from streamq.core._prometheus import FleetExporter, Recorder

_NO_OP: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
_recorder: Recorder | None = None


def require() -> None:
    """Raise :class:`ConfigError` unless the ``metrics`` extra is installed."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise ConfigError(
            "metrics need the metrics extra (prometheus_client is missing): "
            "pip install 'streamq[metrics]'"
        ) from None


def enable() -> Recorder:
    """Start recording in this process (idempotent); returns the recorder."""
    global _recorder
    if _recorder is None:
        require()
        from streamq.core._prometheus import Recorder

        _recorder = Recorder()
    return _recorder


def available() -> bool:
    """Whether the ``metrics`` extra is installed (without importing it)."""
    return importlib.util.find_spec("prometheus_client") is not None


def start_worker(port: int) -> None:
    """Metrics of one ``streamq worker`` process: served on ``port`` when it is not 0.

    Without a port, a process started with ``PROMETHEUS_MULTIPROC_DIR`` set (one of a
    supervisor's) records into that directory for whoever serves it.
    """
    if port:
        enable()
        from streamq.core import _prometheus

        _prometheus.serve(port, _prometheus.registry())
    elif os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        enable()


def fleet_exporter(port: int) -> FleetExporter:
    """The supervisor's exporter: serves its worker processes' metrics, added up, on ``port``."""
    require()
    from streamq.core._prometheus import FleetExporter

    return FleetExporter(port)


def job_dequeued(enqueue_time: datetime | None, job_try: int) -> None:
    """arq started a job: its first start observes how long it waited in the queue."""
    if _recorder is not None and enqueue_time is not None and job_try == 1:
        _recorder.job_dequeued(enqueue_time)


def attempt_started(attempt: int) -> None:
    """A worker claimed an attempt (one after the first starts the job over: a reset)."""
    if _recorder is not None:
        _recorder.attempt_started(attempt)


def attempt_ended(fields: Mapping[str, Any]) -> None:
    """An attempt ended; ``fields`` are its ``retrying`` or ``ended`` log line's fields."""
    if _recorder is not None:
        _recorder.attempt_ended(fields)


def streaming() -> contextlib.AbstractContextManager[None]:
    """Counts the block as one upstream stream in flight."""
    return _NO_OP if _recorder is None else _recorder.streaming()


def batch_written(entries: int, lag: float) -> None:
    """The publisher wrote a batch; ``lag``: seconds since its oldest entry was emitted."""
    if _recorder is not None:
        _recorder.batch_written(entries, lag)


def admission_waited(seconds: float) -> None:
    """A generation got its admission slot after waiting ``seconds``."""
    if _recorder is not None:
        _recorder.admission_waited(seconds)


def admission_reason_waited(reason: str, seconds: float) -> None:
    """A generation waited ``seconds`` for admission for ``reason`` (a ``queued`` reason)."""
    if _recorder is not None:
        _recorder.admission_reason_waited(reason, seconds)


def budget_tokens(model: str, kind: str, tokens: int) -> None:
    """Tokens of a budgeted generation: ``estimated`` when admitted, ``used`` when it ended."""
    if _recorder is not None:
        _recorder.budget_tokens(model, kind, tokens)


def webhook_attempted(outcome: str) -> None:
    """A webhook was posted to one endpoint: ``delivered``, ``retrying`` or ``failed`` (for
    good, after its retry period)."""
    if _recorder is not None:
        _recorder.webhook_attempted(outcome)


def delivered(cursor: str, readers: int = 1) -> None:
    """A reader (or ``readers`` of them, just now) handed on the entry ``cursor`` (its id holds
    the time Redis wrote it); a ``queued`` event a reader made (no cursor) is no entry and not
    counted."""
    if _recorder is not None and cursor:
        _recorder.delivered(cursor, readers)
