"""Starting and stopping the benchmark's processes: Redis, the simulator, workers and agents.

Every process started is registered with :class:`Processes` and stopped by its ``aclose()``,
which the orchestrator reaches on success, on error and on Ctrl-C alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from tests.harness.processes import (
    ROOT,
    WORKER,
    clean_environment,
    exited,
    python_command,
    spawn,
    stop,
)
from tests.harness.waiting import poll_until

from benchmarks.common import NAIVE_WORKER_NAME, Endpoints
from streamq.core.queue import wake_channel
from streamq.dev.local_redis import LocalRedis, free_port

__all__ = ["ROOT", "Agent", "Processes", "StartFailed"]

STOP_TIMEOUT = 10.0
AIMOCK = ROOT / "compat" / "node_modules" / ".bin" / "llmock"
READY_TIMEOUT = 30.0
# The fan-out and fairness benchmarks' processes start beside busy ones: they get longer.
LONG_START = 90.0


class StartFailed(RuntimeError):
    """A benchmark process did not come up."""


async def wait_until(
    check: Callable[[], Awaitable[bool]],
    what: str,
    process: subprocess.Popen[bytes] | None,
    timeout: float = READY_TIMEOUT,
) -> None:
    """Poll ``check`` until it is true; fail after ``timeout`` or when ``process`` exits."""
    give_up = None if process is None else partial(exited, process)
    try:
        await poll_until(check, timeout, what, interval=0.05, give_up=give_up)
    except AssertionError as exc:
        raise StartFailed(str(exc)) from None


async def listening(
    port: int,
    what: str,
    process: subprocess.Popen[bytes] | None = None,
    timeout: float = READY_TIMEOUT,
) -> None:
    """Wait until something accepts connections on loopback ``port`` (as :func:`wait_until`)."""

    async def accepting() -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return True
        return False

    await wait_until(accepting, what, process, timeout)


class Agent:
    """A client process (``benchmarks.agent``) answering one JSON line per request."""

    def __init__(self, role: str, process: asyncio.subprocess.Process, log: Path) -> None:
        self.role = role
        self.process = process
        self.log = log
        self.pid = process.pid

    @classmethod
    async def start(cls, role: str, endpoints: Endpoints, log_dir: Path) -> Agent:
        log = log_dir / f"{role}.log"
        with log.open("wb") as output:
            process = await asyncio.create_subprocess_exec(
                *python_command(
                    "-m", "benchmarks.agent", role, endpoints.to_json(), die_with_parent=True
                ),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=output,
                cwd=log_dir, env=clean_environment(), limit=2**26,
            )  # fmt: skip
        agent = cls(role, process, log)
        await agent._receive(60.0)
        return agent

    async def call(self, op: str, *, reply_within: float = 180.0, **args: Any) -> dict[str, Any]:
        """Send one request and return its answer; raise if the agent failed or died."""
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"op": op, **args}).encode() + b"\n")
        await self.process.stdin.drain()
        return await self._receive(reply_within)

    async def _receive(self, timeout: float) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        if not line:
            tail = self.log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"agent {self.role} died; its log ends with:\n{tail}")
        reply: dict[str, Any] = json.loads(line)
        if not reply.get("ok"):
            raise RuntimeError(f"agent {self.role} failed: {reply.get('error')}")
        return reply

    async def stop(self) -> None:
        if self.process.returncode is None and self.process.stdin is not None:
            self.process.stdin.close()  # the agent exits when its stdin closes
        try:
            await asyncio.wait_for(self.process.wait(), 5.0)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


class Processes:
    """Owns every process the benchmark starts; ``aclose()`` stops them all."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.redis_server: LocalRedis | None = None
        self.popens: dict[str, subprocess.Popen[bytes]] = {}
        self.agents: dict[str, Agent] = {}

    def spawn(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = self.log_dir / f"{name}.log"
        process = spawn(args, log=log, env=env, cwd=self.log_dir, die_with_parent=True)
        self.popens[name] = process
        return process

    def start_redis(self) -> LocalRedis:
        self.redis_server = LocalRedis().start()
        return self.redis_server

    async def start_simulator(self) -> str:
        """``python -m streamq simulate`` in its own process; returns its base URL."""
        port = free_port()
        process = self.spawn(
            "simulator", ["-m", "streamq", "simulate", "--port", str(port)], clean_environment()
        )

        await listening(port, "the simulator", process)
        return f"http://127.0.0.1:{port}/v1"

    async def start_aimock(self, fixtures: dict[str, Any]) -> str | None:
        """@copilotkit/aimock (installed by `make compat`) serving ``fixtures``; its base URL,
        or None when it is not installed."""
        if not AIMOCK.exists():
            return None
        path = self.log_dir / "aimock-fixtures.json"
        path.write_text(json.dumps(fixtures))
        port = free_port()
        args = ["--host", "127.0.0.1", "--port", str(port), "--fixtures", str(path),
                "--log-level", "warn", "--journal-max", "1"]  # fmt: skip
        process = self.popens["aimock"] = self._popen([str(AIMOCK), *args], "aimock")

        await listening(port, "aimock", process)
        return f"http://127.0.0.1:{port}/v1"

    def _popen(self, argv: list[str], name: str) -> subprocess.Popen[bytes]:
        """Start a program that is not Python, its output to ``<name>.log``."""
        with (self.log_dir / f"{name}.log").open("wb") as log:
            return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.log_dir)

    async def restart_streamq_worker(
        self, endpoints: Endpoints, redis: Redis, concurrency: int, base_url: str
    ) -> subprocess.Popen[bytes]:
        """Stop the streamq worker and start it again with ``base_url`` as its upstream."""
        stop(self.popens.pop("streamq-worker"), STOP_TIMEOUT)
        return await self.start_streamq_worker(endpoints, redis, concurrency, base_url)

    async def start_streamq_worker(
        self, endpoints: Endpoints, redis: Redis, concurrency: int, base_url: str | None = None
    ) -> subprocess.Popen[bytes]:
        """One real ``python -m streamq worker``, default settings but for concurrency."""
        env = clean_environment(
            {
                "REDIS_URL": endpoints.redis_url,
                "OPENAI_BASE_URL": base_url or endpoints.base_url,
                "OPENAI_API_KEY": "unused",
                "STREAMQ_KEY_PREFIX": endpoints.key_prefix,
                "STREAMQ_QUEUE": endpoints.queue_name,
                "STREAMQ_CONCURRENCY": str(concurrency),
            }
        )
        process = self.spawn("streamq-worker", list(WORKER), env)
        channel = wake_channel(endpoints.queue_name)

        async def subscribed() -> bool:
            counts = await redis.pubsub_numsub(channel)
            return bool(counts and int(counts[0][1]) > 0)

        await wait_until(subscribed, "the streamq worker", process)
        return process

    async def start_naive_worker(
        self, endpoints: Endpoints, redis: Redis
    ) -> subprocess.Popen[bytes]:
        process = self.spawn(
            "naive-worker", ["-m", "benchmarks.naive_worker", endpoints.to_json()],
            clean_environment(),
        )  # fmt: skip

        async def blocked() -> bool:
            clients = await redis.client_list()
            return any(c["name"] == NAIVE_WORKER_NAME and c["cmd"] == "blpop" for c in clients)

        await wait_until(blocked, "the naive worker", process)
        return process

    async def start_agent(self, role: str, endpoints: Endpoints) -> Agent:
        agent = await Agent.start(role, endpoints, self.log_dir)
        self.agents[role] = agent
        return agent

    def log_tails(self, lines: int = 15) -> str:
        """The end of every process's log, for an error report."""
        parts = []
        for path in sorted(self.log_dir.glob("*.log")):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            if tail:
                parts.append(f"==> {path.name} <==\n" + "\n".join(tail))
        return "\n".join(parts)

    async def aclose(self) -> None:
        """Stop agents, then workers and the simulator (SIGTERM, then SIGKILL), then Redis."""
        await asyncio.gather(*(agent.stop() for agent in self.agents.values()))
        await asyncio.gather(
            *(asyncio.to_thread(stop, p, STOP_TIMEOUT) for p in self.popens.values())
        )
        if self.redis_server is not None:
            self.redis_server.stop()
