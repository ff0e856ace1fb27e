"""Measuring processes and Redis: CPU, RSS, connections, command counts, memory, MONITOR."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import psutil  # type: ignore[import-untyped]
from redis.asyncio import Redis


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (not its children)."""
    times = psutil.Process(pid).cpu_times()
    return float(times.user) + float(times.system)


def rss_bytes(pid: int) -> int:
    """Resident set size of a process."""
    return int(psutil.Process(pid).memory_info().rss)


def redis_ports(pid: int, redis_port: int) -> set[int]:
    """Local ports of a process's TCP connections to Redis (how Redis names its clients)."""
    ports: set[int] = set()
    for conn in psutil.Process(pid).net_connections(kind="tcp"):
        if conn.raddr and conn.raddr.port == redis_port:
            ports.add(int(conn.laddr.port))
    return ports


def _port(addr: str) -> int:
    return int(addr.rpartition(":")[2])


async def connections_of(redis: Redis, pid: int, redis_port: int) -> int:
    """How many of Redis's clients (CLIENT LIST) are connections of process ``pid``."""
    ports = redis_ports(pid, redis_port)
    clients = await redis.client_list()
    return sum(1 for client in clients if _port(str(client["addr"])) in ports)


def machine_busy_seconds() -> float:
    """CPU time all processes of the machine have spent in user and kernel mode so far."""
    times = psutil.cpu_times()
    return float(times.user) + float(times.nice) + float(times.system)


@dataclass
class Usage:
    """A snapshot of the CPU of some processes, of the machine, and of Redis's command counters."""

    cpu: dict[str, float]
    machine: float
    commands: Counter[str]
    total_commands: int
    at: float = field(default_factory=time.monotonic)

    @classmethod
    async def take(cls, redis: Redis, pids: Mapping[str, int]) -> Usage:
        stats = await redis.info("commandstats")
        totals = await redis.info("stats")
        commands = Counter(
            {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}
        )
        cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
        return cls(cpu, machine_busy_seconds(), commands, int(totals["total_commands_processed"]))

    def since(self, before: Usage) -> UsageDelta:
        """What was used since ``before`` (less the two INFO calls of each snapshot)."""
        cpu = {name: self.cpu[name] - before.cpu[name] for name in self.cpu}
        commands = self.commands.copy()
        commands.subtract(before.commands)
        commands["info"] -= 2
        total = self.total_commands - before.total_commands - 2
        others = self.machine - before.machine - sum(cpu.values())
        return UsageDelta(cpu, max(0.0, others), +commands, total, self.at - before.at)


@dataclass(frozen=True)
class UsageDelta:
    """CPU seconds per process and of everything else on the machine, Redis calls per command
    and commands processed in all, over ``seconds``."""

    cpu: dict[str, float]
    others: float
    commands: Counter[str]
    total_commands: int
    seconds: float


class Sampler:
    """Samples, every ``period`` seconds until stopped, the peak RSS of some processes and the
    peak number of Redis connections of one."""

    def __init__(
        self,
        redis: Redis,
        redis_port: int,
        rss_pids: Mapping[str, int],
        connections_pid: int | None,
        period: float = 0.5,
    ) -> None:
        self.redis = redis
        self.redis_port = redis_port
        self.rss_pids = dict(rss_pids)
        self.connections_pid = connections_pid
        self.period = period
        self.peak_rss: dict[str, int] = dict.fromkeys(self.rss_pids, 0)
        self.peak_connections = 0
        self._task: asyncio.Task[None] | None = None
        # Stopped by a flag, not a cancel: redis-py can swallow a cancel that lands inside a
        # command (redis-py #2028), and the sampler then ran on while `make bench` waited for it.
        self._stop = asyncio.Event()

    async def __aenter__(self) -> Sampler:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        while not self._stop.is_set():
            for name, pid in self.rss_pids.items():
                self.peak_rss[name] = max(self.peak_rss[name], rss_bytes(pid))
            if self.connections_pid is not None:
                count = await connections_of(self.redis, self.connections_pid, self.redis_port)
                self.peak_connections = max(self.peak_connections, count)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.period)


async def stream_memory(redis: Redis, keys: Iterable[str]) -> tuple[int, int]:
    """Total ``MEMORY USAGE`` (exact: ``SAMPLES 0``) and total entries of some streams."""
    keys = list(keys)
    async with redis.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.memory_usage(key, samples=0)
            pipe.xlen(key)
        replies: list[Any] = await pipe.execute()
    return sum(int(r or 0) for r in replies[0::2]), sum(int(r or 0) for r in replies[1::2])


async def monitor_commands(
    host: str, port: int, seconds: float, ports: Mapping[str, set[int]]
) -> dict[str, int]:
    """Commands sent by each group of client ports over ``seconds``, counted with MONITOR.

    Commands run inside Lua scripts show up as ``[0 lua]``: they are not client commands and
    are not counted.
    """
    counts = dict.fromkeys(ports, 0)
    owner = {p: name for name, group in ports.items() for p in group}
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(b"*1\r\n$7\r\nMONITOR\r\n")
        await writer.drain()
        if not (await reader.readline()).startswith(b"+OK"):
            raise RuntimeError("MONITOR was refused")
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = await asyncio.wait_for(reader.readline(), left)
            except TimeoutError:
                break
            # +1700000000.123456 [0 127.0.0.1:54321] "XREAD" ...
            _, _, rest = line.partition(b"[")
            source = rest.partition(b"]")[0].split(b" ")[-1]
            if b":" in source:
                name = owner.get(_port(source.decode()))
                if name is not None:
                    counts[name] += 1
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return counts
