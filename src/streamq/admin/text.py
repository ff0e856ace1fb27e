"""How the admin commands print what :mod:`streamq.admin.queries` found: text or JSON."""

from __future__ import annotations

import json
import time
from typing import Any

from streamq.admin.queries import FleetStats, JobRecord


def stats_text(stats: FleetStats) -> str:
    """``streamq stats`` for a terminal."""
    oldest = "-" if stats.oldest_queued_age_s is None else f"{stats.oldest_queued_age_s:.1f}s"
    recent = stats.recent
    lines = [
        f"queue      {stats.queued} queued (oldest {oldest}), {stats.running} running",
        f"workers    {len(stats.workers)} alive, "
        f"{sum(w.in_flight for w in stats.workers)} jobs in flight",
    ]
    for worker in stats.workers:
        up = time.time() - worker.started_at
        lines.append(
            f"  {worker.id:<32} {worker.in_flight:>4}/{worker.concurrency:<4} "
            f"up {up:,.0f}s  v{worker.version}"
        )
    lines.append(
        f"last {recent.seconds:.0f}s  {recent.jobs_per_minute:.1f} jobs/min, "
        f"{recent.deltas_per_second:.1f} deltas/s"
    )
    outcomes = ", ".join(f"{name} {count}" for name, count in sorted(recent.jobs.items()))
    lines.append(f"  outcomes {outcomes or '-'}")
    failures = ", ".join(f"{code} {count}" for code, count in recent.errors.most_common())
    lines.append(f"  failures {failures or '-'}")
    return "\n".join(lines)


def inspect_text(record: JobRecord) -> str:
    """``streamq inspect`` for a terminal: one aligned line per fact, times as people read them."""
    state = record.state + (
        " (stalled: its worker stopped renewing its lease)" if record.stalled else ""
    )
    rows: list[tuple[str, str]] = [("job", record.job_id), ("state", state)]
    if record.lease_remaining_s is not None and not record.stalled:
        rows.append(("lease", f"{record.lease_remaining_s:.1f}s left"))
    rows.append(("model", record.model or "-"))
    started = "-" if record.started_at is None else _clock(record.started_at)
    rows.append(
        ("started", started + (f" ({_ago(record.started_at)})" if record.started_at else ""))
    )
    rows.append(("first token", _seconds(record.first_delta_after_s, "after the start")))
    rows.append(("ended", _seconds(record.ended_after_s, "after the start")))
    if record.finish_reason is not None:
        rows.append(("finish reason", record.finish_reason))
    if record.usage:
        counts = [(k, v) for k, v in record.usage.items() if isinstance(v, int | float)]
        rows.append(("usage", ", ".join(f"{k.removesuffix('_tokens')} {v}" for k, v in counts)))
    if record.error is not None:
        rows.append(("error", f"[{record.error['code']}] {record.error['message']}"))
    rows.append(("stream", f"{record.entries} entries, {record.deltas} deltas in the last attempt"))
    rows.append(("last cursor", record.last_cursor or "-"))
    rows.append(("expires", "-" if record.ttl_s is None else f"in {_duration(record.ttl_s)}"))
    rows.append(("attempts", str(len(record.attempts)) if record.attempts else "none yet"))
    lines = [f"{name:<14} {value}" for name, value in rows]
    for attempt in record.attempts:
        lines.append(f"  #{attempt['attempt']:<11} on worker {attempt.get('worker') or '-'}")
    if record.webhook is not None:
        lines.extend(_webhook_lines(record.webhook))
    return "\n".join(lines)


def _webhook_lines(webhook: dict[str, Any]) -> list[str]:
    """The job's webhook: its type and id, then one line per endpoint."""
    lines = [f"{'webhook':<14} {webhook.get('type') or 'not built yet'} {webhook.get('id') or ''}"]
    if not webhook["endpoints"]:
        lines[0] += f" ({webhook['state']})"
    for name, outcome in webhook["endpoints"].items():
        error = f": {outcome['error']}" if outcome.get("error") else ""
        tries = outcome.get("attempts", 0)
        lines.append(f"  {name:<12} {outcome.get('state')} after {tries} tries{error}")
    return lines


def _clock(epoch: float) -> str:
    return (
        time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch)) + f".{int(epoch % 1 * 1000):03d}"
    )


def _ago(epoch: float) -> str:
    return f"{_duration(max(0.0, time.time() - epoch))} ago"


def _seconds(value: float | None, suffix: str) -> str:
    return "-" if value is None else f"{value:.3f}s {suffix}"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def as_json(data: dict[str, Any]) -> str:
    """One line of JSON, for scripts."""
    return json.dumps(data, ensure_ascii=False, sort_keys=True)
