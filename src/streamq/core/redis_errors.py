"""Which Redis failures are worth trying again, and which speak of one job's data.

A lost link, a timeout or a reply that speaks for all of Redis (a failover's ``READONLY``, a
full ``OOM``, a busy script) may pass; a script error or ``WRONGTYPE`` on one job's keys will
not, and retrying it as if Redis were away only stalls everything else behind it.
"""

from __future__ import annotations

from redis.exceptions import ClusterError, NoScriptError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

TRANSIENT_REPLIES = ("BUSY", "LOADING", "MASTERDOWN", "OOM", "READONLY", "TRYAGAIN", "CLUSTERDOWN")


def is_transient(error: object) -> bool:
    """Whether a command that failed with ``error`` may succeed when sent again."""
    if isinstance(error, NoScriptError | RedisConnectionError | RedisTimeoutError | OSError):
        return True  # NOSCRIPT: a new or restarted Redis, once the script is loaded again
    if isinstance(error, ResponseError):
        return str(error).startswith(TRANSIENT_REPLIES)
    return isinstance(error, ClusterError | TimeoutError)
