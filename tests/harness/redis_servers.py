"""Throwaway redis-servers: :class:`streamq.dev.local_redis.LocalRedis` is the one way to start one.

- :func:`suite_redis_url`: the suite's shared server (``REDIS_URL`` when it answers);
- :class:`LocalRedis`: a private server on a free port (ACL, TLS, cluster and sentinel setups
  pass their options as ``args``);
- :class:`RestartableRedis`: one that crashes and comes back on the same port, its data kept
  in a directory of the caller's (with ``appendonly``, even through SIGKILL);
- :func:`dump_keys`: what a server holds under a pattern, as text;
- :func:`blocked_in`: whether a process waits in a blocking command (say, a reader in XREAD).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

from redis.asyncio import Redis

from streamq.dev.local_redis import LocalRedis, free_port, redis_answers
from tests.harness.waiting import STARTUP

__all__ = [
    "LocalRedis",
    "RestartableRedis",
    "blocked_in",
    "dump_keys",
    "free_port",
    "redis_answers",
    "suite_redis_url",
]

# appendfsync always: no acknowledged write is lost, even to SIGKILL.
APPEND_ONLY = ("--appendonly", "yes", "--appendfsync", "always")


@contextlib.contextmanager
def suite_redis_url() -> Iterator[str]:
    """``REDIS_URL`` when a server answers there, else a private server's URL, for the block."""
    url = os.environ.get("REDIS_URL")
    if url and redis_answers(url):
        yield url
        return
    with LocalRedis() as server:
        yield server.url


class RestartableRedis(LocalRedis):
    """A :class:`LocalRedis` that keeps ``directory`` across :meth:`restart`."""

    def __init__(self, directory: Path, *, appendonly: bool = False) -> None:
        super().__init__(args=APPEND_ONLY if appendonly else (), directory=directory)
        self.appendonly = appendonly
        self.restarts = 0
        self._up = False

    @property
    def running(self) -> bool:
        """Whether the server process is up."""
        return self._up

    def start(self, timeout: float = STARTUP) -> RestartableRedis:
        super().start(timeout)
        self._up = True
        return self

    def stop(self, *, kill: bool = False) -> None:
        """Stop the server: SIGTERM (a clean shutdown), or SIGKILL (a crash) when ``kill``."""
        if kill:
            self.kill()
        super().stop()
        self._up = False

    def restart(self, down_for: float, *, kill: bool = True) -> None:
        """Crash (or stop) the server, leave it down ``down_for`` seconds, start it again."""
        self.stop(kill=kill)
        time.sleep(down_for)  # runs in a thread: the outage itself, not a wait for a condition
        self.start()
        self.restarts += 1


async def dump_keys(redis: Redis, pattern: str) -> str:
    """Everything a server stores under ``pattern``, as text (to search it for a secret)."""
    parts = []
    async for key in redis.scan_iter(match=pattern):
        kind = await redis.type(key)
        if kind == b"stream":
            parts.append(repr(await redis.xrange(key)))
        elif kind == b"hash":
            parts.append(repr(await redis.hgetall(key)))  # type: ignore[misc]
        elif kind == b"zset":
            parts.append(repr(await redis.zrange(key, 0, -1)))
        else:
            parts.append(repr(await redis.get(key)))
    return "\n".join(parts)


async def blocked_in(redis: Redis, pid: int, command: str = "xread") -> bool:
    """Whether process ``pid`` has a connection to ``redis``'s server blocked in ``command``
    (matched by its local port: no other test's blocked reader counts)."""
    import psutil  # type: ignore[import-untyped]  # via streamq[embedded]; only this needs it

    with contextlib.suppress(psutil.Error):
        ports = {
            f"{c.laddr.ip}:{c.laddr.port}"
            for c in psutil.Process(pid).net_connections(kind="tcp")
            if c.laddr
        }
        clients = await redis.client_list()
        return any(
            c["addr"] in ports and "b" in c["flags"] and c["cmd"] == command for c in clients
        )
    return False
