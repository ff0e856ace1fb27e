"""How the admin commands print what :mod:`streamq.admin.queries` found: text or JSON."""

from __future__ import annotations

import json
import time
from typing import Any

from streamq.admin.queries import FleetStats


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


def as_json(data: dict[str, Any]) -> str:
    """One line of JSON, for scripts."""
    return json.dumps(data, ensure_ascii=False, sort_keys=True)
