"""Real subprocesses for the suites and the benchmark: workers, CLI runs, any Python command.

One launcher (:func:`spawn`) and one stopper (:func:`stop`) under everything:

- :class:`WorkerPool`: ``python -m streamq worker`` processes (or any worker command), each
  logging to a file of its own, that a test can start, kill, SIGTERM and read the logs of, and
  wait for until each is *serving* (connected, signal handlers installed, taking jobs);
- :func:`worker_processes`: a pool for a ``with`` block, stopped (SIGTERM, then SIGKILL) on exit;
- :func:`live_workers`: wait until the workers' presence in Redis says how many run;
- :func:`run_cli` and :func:`start_cli`: ``python -m streamq ARGS`` without blocking the loop.

Children get a clean environment (no ``OPENAI_*``, ``STREAMQ_*`` or ``REDIS_URL`` of ours) and a
working directory without a stray ``.env``; with ``die_with_parent`` Linux stops them should
this process die without cleaning up (the benchmark uses it).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path

from redis.asyncio import Redis

from streamq import Settings
from streamq.admin.presence import WorkerPresence, alive_workers
from streamq.core.keys import Keys
from tests.harness.waiting import STARTUP, poll_until

ROOT = Path(__file__).resolve().parents[2]
WORKER = ("-m", "streamq", "worker")
# What a worker logs once it serves its queue: arq installed its signal handlers before that.
SERVING = "serving queue"
# Bound on SIGTERM-to-exit before SIGKILL at cleanup: a drain plus closing down, loaded machine.
STOP_TIMEOUT = 30.0
# Runs the real command (same pid, via exec) after asking Linux to SIGTERM it should the
# process that started it die (PR_SET_PDEATHSIG); a no-op elsewhere. The signal follows the
# *thread* that started the child: spawn such children from a thread that lives as long.
DIE_WITH_PARENT = (
    "import ctypes, os, sys\n"
    "if sys.platform == 'linux': ctypes.CDLL(None).prctl(1, 15)\n"
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
)
# What asyncio logs about tasks and resources it had to drop, and unexpected tracebacks.
# One exception: redis-py 5.3 logs "Unclosed Pipeline client" when a socket timeout on a dead
# link interrupts a WATCH pipeline's own reset (its UNWATCH); the connection it names was
# already disconnected by that error, so nothing is left open.
LOG_ERRORS = re.compile(
    r"Task was destroyed but it is pending|Task exception was never retrieved|"
    r"Exception in callback|[Uu]nclosed (?!Pipeline client)|Traceback \(most recent call last\)"
)


def python_command(*args: str, die_with_parent: bool = False) -> list[str]:
    """``python ARGS`` (this interpreter), optionally stopped with this process."""
    if die_with_parent:
        return [sys.executable, "-c", DIE_WITH_PARENT, *args]
    return [sys.executable, *args]


def clean_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Our environment without streamq, OpenAI or Redis settings, plus ``extra``; the
    repository root is on ``PYTHONPATH`` (for ``-m tests...`` and ``-m benchmarks...``)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPENAI_", "STREAMQ_", "REDIS_URL"))
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


def settings_environment(settings: Settings) -> dict[str, str]:
    """The environment a streamq subprocess needs to use ``settings``."""
    env = clean_environment(
        {
            "REDIS_URL": settings.redis_url,
            "OPENAI_API_KEY": settings.openai_api_key or "",
            "OPENAI_BASE_URL": settings.openai_base_url or "",
            "OPENAI_MODEL": settings.openai_model,
            "STREAMQ_QUEUE": settings.queue_name,
            "STREAMQ_KEY_PREFIX": settings.key_prefix,
            "STREAMQ_POLL_INTERVAL": str(settings.poll_interval),
            "STREAMQ_READ_TIMEOUT": str(settings.read_timeout),
        }
    )
    if settings.streams_url is not None:
        env["STREAMQ_STREAMS_URL"] = settings.streams_url
    return env


def spawn(
    args: Sequence[str],
    *,
    log: Path,
    env: Mapping[str, str],
    cwd: Path,
    die_with_parent: bool = False,
) -> subprocess.Popen[bytes]:
    """Start ``python ARGS`` with its stdout and stderr written to ``log`` (truncated first)."""
    with log.open("wb") as output:  # the child keeps its own descriptor
        return subprocess.Popen(
            python_command(*args, die_with_parent=die_with_parent),
            stdout=output, stderr=subprocess.STDOUT, cwd=cwd, env=dict(env),
        )  # fmt: skip


def stop(process: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> bool:
    """SIGTERM ``process`` and reap it; SIGKILL it if it has not exited within ``timeout``.

    Returns whether it exited on its own (it may have before).
    """
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return False
    return True


def exited(process: subprocess.Popen[bytes]) -> str | None:
    """Why waiting on ``process`` is pointless (it exited), or None: a ``give_up`` check."""
    code = process.poll()
    return None if code is None else f"the process exited with code {code}"


class WorkerPool:
    """Worker processes running ``command``, each logging to ``log_dir/NAME-N.log``."""

    def __init__(
        self,
        environment: Mapping[str, str],
        log_dir: Path,
        *,
        command: Sequence[str] = WORKER,
        name: str = "worker",
        die_with_parent: bool = False,
    ) -> None:
        self.environment = dict(environment)
        self.log_dir = log_dir
        self.command = tuple(command)
        self.name = name
        self.die_with_parent = die_with_parent
        self.processes: list[subprocess.Popen[bytes]] = []
        self.log_files: dict[int, Path] = {}
        self.kills = 0
        self.terminations = 0
        log_dir.mkdir(parents=True, exist_ok=True)

    def spawn(self, count: int = 1) -> list[subprocess.Popen[bytes]]:
        """Start ``count`` more workers."""
        started = []
        for _ in range(count):
            log = self.log_dir / f"{self.name}-{len(self.processes)}.log"
            process = spawn(
                self.command, log=log, env=self.environment, cwd=self.log_dir,
                die_with_parent=self.die_with_parent,
            )  # fmt: skip
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
        self, processes: Sequence[subprocess.Popen[bytes]], timeout: float
    ) -> list[subprocess.Popen[bytes]]:
        """Wait up to ``timeout`` for ``processes`` to exit; SIGKILL and return the hung ones."""
        hung = []
        for process in processes:
            try:
                process.wait(timeout)  # a bound on a hang, so each gets all of it
            except subprocess.TimeoutExpired:
                hung.append(process)
        for process in hung:
            process.kill()
            process.wait()
        return hung

    def stop_all(self, timeout: float = STOP_TIMEOUT) -> list[subprocess.Popen[bytes]]:
        """SIGTERM every live worker; return those that had not exited within ``timeout``."""
        alive = self.alive
        for process in alive:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        return self.wait_exited(alive, timeout)

    def log(self, process: subprocess.Popen[bytes]) -> str:
        """What one worker (and any process it started) has written so far."""
        return self.log_files[process.pid].read_text(errors="replace")

    def serving(self, process: subprocess.Popen[bytes], count: int = 1) -> bool:
        """Whether the worker got as far as serving its queue (its signal handlers are set);
        ``count``: that many of its processes did (``worker --processes N``)."""
        return self.log(process).count(SERVING) >= count

    async def wait_serving(
        self,
        processes: Sequence[subprocess.Popen[bytes]] | None = None,
        *,
        count: int = 1,
        timeout: float = STARTUP,
    ) -> None:
        """Wait until each of ``processes`` (default: all) serves; fail if one exits first."""
        for process in self.processes if processes is None else processes:
            await poll_until(
                functools.partial(self.serving, process, count),
                timeout,
                f"worker pid {process.pid} to serve its queue",
                give_up=functools.partial(exited, process),
            )

    def logs(self) -> str:
        """Every worker's log, one after the other."""
        return "".join(
            f"==> {path.name} <==\n{path.read_text(errors='replace')}"
            for path in self.log_files.values()
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
        for path in self.log_files.values():
            for line in path.read_text(errors="replace").splitlines():
                if LOG_ERRORS.search(line):
                    found.append(f"{path.name}: {line.strip()}")
        return found

    def tail(self, lines: int = 40) -> str:
        """The last lines of each worker's log, for a failure message."""
        return "\n".join(
            f"==> {path.name} <==\n"
            + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
            for path in self.log_files.values()
        )


async def live_workers(
    redis: Redis, settings: Settings, count: int, timeout: float = STARTUP
) -> list[WorkerPresence]:
    """Wait until exactly ``count`` workers of ``settings`` announce their presence (started
    ones serve; stopped or killed ones have withdrawn or expired); those workers."""
    found: list[WorkerPresence] = []

    async def counted() -> bool:
        found[:] = await alive_workers(redis, Keys(settings.key_prefix))
        return len(found) == count

    await poll_until(counted, timeout, f"{count} live workers")
    return found


@contextlib.contextmanager
def worker_processes(
    settings: Settings,
    count: int,
    command: Sequence[str] = WORKER,
    env: Mapping[str, str] | None = None,
    log_dir: Path | None = None,
) -> Iterator[WorkerPool]:
    """``count`` real worker processes for ``settings`` (plus ``env``), stopped with SIGTERM
    (then SIGKILL) on exit. Their logs go to ``log_dir`` (default: a temporary directory,
    deleted on exit); a failing block prints their ends."""
    with contextlib.ExitStack() as stack:
        if log_dir is None:
            log_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="workers-")))
        environment = {**settings_environment(settings), **(env or {})}
        pool = WorkerPool(environment, log_dir, command=command)
        try:
            pool.spawn(count)
            yield pool
        except BaseException:
            print(f"worker logs:\n{pool.tail()}", file=sys.stderr)
            raise
        finally:
            pool.stop_all()


async def start_cli(
    env: Mapping[str, str],
    *args: str,
    stdout: int | None = asyncio.subprocess.PIPE,
    stderr: int | None = asyncio.subprocess.PIPE,
    cwd: str | Path | None = None,
) -> asyncio.subprocess.Process:
    """Start ``python -m streamq ARGS`` (in ``cwd``, default a directory without any ``.env``)."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "streamq", *args,
        env=dict(env), cwd=cwd or tempfile.gettempdir(), stdout=stdout, stderr=stderr,
    )  # fmt: skip


async def run_cli(
    settings: Settings,
    *args: str,
    env: Mapping[str, str] | None = None,
    timeout: float = STARTUP,
) -> tuple[int, str, str]:
    """Run ``python -m streamq ARGS`` without blocking the loop; return code, stdout, stderr.

    ``env`` replaces the environment ``settings`` give; ``timeout`` bounds a hang.
    """
    environment = settings_environment(settings) if env is None else env
    with tempfile.TemporaryDirectory() as cwd:
        process = await start_cli(environment, *args, cwd=cwd)
        try:
            out, err = await asyncio.wait_for(process.communicate(), timeout)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()
