"""The suite's own processes: a restartable redis-server and a pool of worker processes."""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from streamq import Settings
from streamq.local_redis import find_redis_binary, free_port, redis_answers
from tests.processes import settings_environment

# What asyncio logs about tasks and resources it had to drop, and unexpected tracebacks.
# One exception: redis-py 5.3 logs "Unclosed Pipeline client" when a socket timeout on a dead
# link interrupts a WATCH pipeline's own reset (its UNWATCH); the connection it names was
# already disconnected by that error, so nothing is left open.
LOG_ERRORS = re.compile(
    r"Task was destroyed but it is pending|Task exception was never retrieved|"
    r"Exception in callback|[Uu]nclosed (?!Pipeline client)|Traceback \(most recent call last\)"
)


class RedisServer:
    """A redis-server on a fixed loopback port that can crash and come back on the same port.

    ``LocalRedis`` always runs without persistence in a directory it deletes on stop; this one
    keeps ``directory`` across restarts, so with ``appendonly=True`` (``appendfsync always``: no
    acknowledged write is lost, even to SIGKILL) a restarted server has all its data back.
    """

    def __init__(self, directory: Path, *, appendonly: bool = False) -> None:
        self.directory = directory
        self.appendonly = appendonly
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.restarts = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        """Whether the server process is up."""
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Start the server and wait until it answers PING."""
        self.directory.mkdir(parents=True, exist_ok=True)
        persistence = ["--appendonly", "yes", "--appendfsync", "always"]
        command = [
            find_redis_binary(),
            "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            *(persistence if self.appendonly else ["--appendonly", "no"]),
            "--dir", str(self.directory), "--logfile", str(self.directory / "redis.log"),
        ]  # fmt: skip
        self._process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while not redis_answers(self.url, timeout=0.2):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop(kill=True)
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)
        return self

    def stop(self, *, kill: bool = False) -> None:
        """Stop the server: SIGTERM (a clean shutdown), or SIGKILL (a crash) when ``kill``."""
        process, self._process = self._process, None
        if process is None:
            return
        process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self, down_for: float, *, kill: bool = True) -> None:
        """Crash (or stop) the server, leave it down ``down_for`` seconds, start it again."""
        self.stop(kill=kill)
        time.sleep(down_for)  # runs in a thread: the outage itself, not a wait for a condition
        self.start()
        self.restarts += 1


class WorkerPool:
    """Real ``python -m streamq worker`` processes, logging to files under ``log_dir``."""

    def __init__(self, settings: Settings, env: dict[str, str], log_dir: Path) -> None:
        self.environment = {**settings_environment(settings), **env}
        self.log_dir = log_dir
        self.processes: list[subprocess.Popen[bytes]] = []
        self.log_files: dict[int, Path] = {}
        self.kills = 0
        self.terminations = 0
        log_dir.mkdir(parents=True, exist_ok=True)

    def spawn(self, count: int = 1) -> list[subprocess.Popen[bytes]]:
        """Start ``count`` more workers."""
        started = []
        for _ in range(count):
            log = self.log_dir / f"worker-{len(self.processes)}.log"
            with log.open("wb") as output:  # the child keeps its own descriptor
                process = subprocess.Popen(
                    [sys.executable, "-m", "streamq", "worker"],
                    env=self.environment,
                    cwd=self.log_dir,  # no stray .env is picked up
                    stdout=output,
                    stderr=subprocess.STDOUT,
                )
            self.processes.append(process)
            self.log_files[process.pid] = log
            started.append(process)
        return started

    @property
    def alive(self) -> list[subprocess.Popen[bytes]]:
        """Workers still running."""
        return [p for p in self.processes if p.poll() is None]

    def named(self, worker: str) -> subprocess.Popen[bytes] | None:
        """The process behind a ``Start`` event's ``worker`` (``host:pid``)."""
        return next((p for p in self.processes if worker.endswith(f":{p.pid}")), None)

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        """SIGKILL a worker and reap it."""
        process.send_signal(signal.SIGKILL)
        process.wait()
        self.kills += 1

    def terminate(self, process: subprocess.Popen[bytes]) -> None:
        """Send SIGTERM: the worker drains, hands back what is left and exits."""
        process.send_signal(signal.SIGTERM)
        self.terminations += 1

    def wait_exited(
        self, processes: list[subprocess.Popen[bytes]], timeout: float
    ) -> list[subprocess.Popen[bytes]]:
        """Wait up to ``timeout`` for ``processes`` to exit; SIGKILL and return the hung ones."""
        deadline = time.monotonic() + timeout
        hung = []
        for process in processes:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                hung.append(process)
        for process in hung:
            process.kill()
            process.wait()
        return hung

    def stop_all(self, timeout: float) -> list[subprocess.Popen[bytes]]:
        """SIGTERM every live worker; return those that had not exited within ``timeout``."""
        alive = self.alive
        for process in alive:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        return self.wait_exited(alive, timeout)

    def serving(self, process: subprocess.Popen[bytes]) -> bool:
        """Whether the worker got as far as serving its queue (its signal handlers are set)."""
        log = self.log_files[process.pid].read_text(errors="replace")
        return "serving queue" in log

    def logs(self) -> str:
        """Every worker's log, one after the other."""
        return "".join(
            f"==> {path.name} <==\n{path.read_text(errors='replace')}"
            for path in sorted(self.log_dir.glob("worker-*.log"))
        )

    def count(self, pattern: str) -> int:
        """How many log lines, across all workers, match ``pattern``."""
        regex = re.compile(pattern)
        return sum(1 for line in self.logs().splitlines() if regex.search(line))

    def stamped(self, pattern: str) -> list[tuple[int, float, str]]:
        """(pid, Unix time, line) of each log line matching ``pattern``, by the line's stamp."""
        regex = re.compile(pattern)
        found = []
        for pid, path in self.log_files.items():
            for line in path.read_text(errors="replace").splitlines():
                if regex.search(line):
                    stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
                    found.append((pid, stamp.timestamp(), line))
        return found

    def errors(self) -> list[str]:
        """Log lines that no healthy worker writes: asyncio's complaints and tracebacks."""
        found = []
        for path in sorted(self.log_dir.glob("worker-*.log")):
            for line in path.read_text(errors="replace").splitlines():
                if LOG_ERRORS.search(line):
                    found.append(f"{path.name}: {line.strip()}")
        return found

    def tail(self, lines: int = 40) -> str:
        """The last lines of each worker's log, for a failure message."""
        return "\n".join(
            f"==> {path.name} <==\n"
            + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
            for path in sorted(self.log_dir.glob("worker-*.log"))
        )
