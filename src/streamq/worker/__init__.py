"""The worker side: arq runs a job, the runner streams its attempts from the upstream into Redis.

``arq_worker`` is arq's side (the ``Worker`` subclass, ``WorkerSettings``, running and
supervising); ``runtime`` holds what a worker process's jobs share; ``runner`` runs one job's
attempts; ``upstream`` turns the OpenAI stream into events (``sse_parser``, ``surrogates``)
through a pool of clients (``openai_pool``); ``publisher`` writes them to Redis; ``fleet``
keeps leases and the heartbeat, ``reaper`` frees lost workers' jobs, ``signals`` hears cancel
and wake-up messages; ``admission`` the fleet's per-model
limits; ``retry`` the backoff; ``supervisor`` restarts crashed worker processes.

``arq streamq.worker.WorkerSettings`` reads the settings from the environment when arq starts;
arq then runs its plain ``Worker``, without ``StreamQWorker``'s fair picks, start gate and
wake-ups, nor ``run_supervised``'s restarts (``streamq worker`` has them all).
"""

from __future__ import annotations

from typing import Any

from streamq.worker.arq_worker import create_worker, run_supervised, running_worker, worker_settings
from streamq.worker.runtime import openai_client

__all__ = ["create_worker", "openai_client", "run_supervised", "running_worker", "worker_settings"]


def __getattr__(name: str) -> Any:
    # `arq streamq.worker.WorkerSettings` looks this up when the worker starts.
    if name == "WorkerSettings":
        from streamq.core.settings import Settings

        return worker_settings(Settings.from_env())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
