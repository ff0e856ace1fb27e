"""Real streamq subprocesses for tests: workers and CLI commands."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from subprocess import PIPE

from redis.asyncio import Redis

from streamq import Settings


def settings_environment(settings: Settings) -> dict[str, str]:
    """The environment a streamq subprocess needs to use ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "STREAMQ_"))}
    env.update(
        REDIS_URL=settings.redis_url,
        OPENAI_API_KEY=settings.openai_api_key or "",
        OPENAI_BASE_URL=settings.openai_base_url or "",
        OPENAI_MODEL=settings.openai_model,
        STREAMQ_QUEUE=settings.queue_name,
        STREAMQ_KEY_PREFIX=settings.key_prefix,
        STREAMQ_POLL_INTERVAL=str(settings.poll_interval),
        STREAMQ_READ_TIMEOUT=str(settings.read_timeout),
    )
    if settings.streams_url is not None:
        env["STREAMQ_STREAMS_URL"] = settings.streams_url
    return env


@contextlib.contextmanager
def worker_processes(
    settings: Settings,
    count: int,
    command: Sequence[str] = ("-m", "streamq", "worker"),
    env: dict[str, str] | None = None,
    log: Path | None = None,
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``count`` real worker subprocesses, stopped with SIGTERM (then SIGKILL) on exit.

    ``log``: append the workers' output to this file instead of discarding it.
    """
    with (
        tempfile.TemporaryDirectory() as cwd,  # no stray .env is picked up
        open(log or os.devnull, "ab") as output,
    ):
        processes = [
            subprocess.Popen(
                [sys.executable, *command],
                env={**settings_environment(settings), **(env or {})},
                cwd=cwd,
                stdout=output,
                stderr=output,
            )
            for _ in range(count)
        ]
        try:
            yield processes
        finally:
            for process in processes:
                process.send_signal(signal.SIGTERM)
            for process in processes:
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


async def run_cli(
    settings: Settings, *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> tuple[int, str, str]:
    """Run ``python -m streamq ARGS`` without blocking the loop; return code, stdout, stderr."""
    environment = settings_environment(settings) if env is None else env
    with tempfile.TemporaryDirectory() as cwd:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "streamq", *args,
            env=environment, cwd=cwd, stdout=PIPE, stderr=PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def dump_keys(redis: Redis, pattern: str) -> str:
    """Everything stored under ``pattern``, as text."""
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
