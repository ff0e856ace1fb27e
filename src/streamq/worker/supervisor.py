"""``streamq worker --processes N``: N worker processes under one small supervisor."""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType

logger = logging.getLogger("streamq.supervisor")

MIN_BACKOFF = 0.5
MAX_BACKOFF = 30.0
STABLE_AFTER = 30.0  # a process that ran this long before crashing restarts at once-ish
POLL_INTERVAL = 0.1


@dataclass
class _Slot:
    index: int
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    backoff: float = MIN_BACKOFF
    restart_at: float | None = field(default=0.0)  # None: ended for good


class Supervisor:
    """Keeps ``count`` copies of ``command`` running until SIGTERM or SIGINT.

    A process that crashes (non-zero exit, or killed) is started again after a backoff that
    doubles while it keeps crashing early. One that exits 0 (a ``--burst`` worker with an empty
    queue) is not. SIGTERM and SIGINT are passed on to every process, which drains its jobs
    and exits; the supervisor exits when they all have.
    """

    def __init__(
        self,
        command: Sequence[str],
        count: int,
        *,
        env: Mapping[str, str] | None = None,
        on_exit: Callable[[int], None] | None = None,
    ) -> None:
        self._command = list(command)
        self._env = env  # None: this process's environment
        self._on_exit = on_exit  # called with the pid of every process that ended
        self._slots = [_Slot(index) for index in range(count)]
        self._stopping: signal.Signals | None = None

    def run(self) -> int:
        """Supervise until every process has ended; 0 unless a process had to be killed."""
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            while any(slot.restart_at is not None for slot in self._slots):
                now = time.monotonic()
                for slot in self._slots:
                    self._tend(slot, now)
                time.sleep(POLL_INTERVAL)
            return 0
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _tend(self, slot: _Slot, now: float) -> None:
        process = slot.process
        if process is None:
            if slot.restart_at is not None and not self._stopping and now >= slot.restart_at:
                slot.process, slot.started = subprocess.Popen(self._command, env=self._env), now
                logger.info("worker process %d started (pid %d)", slot.index, slot.process.pid)
            elif self._stopping:
                slot.restart_at = None
            return
        code = process.poll()
        if code is None:
            return
        slot.process = None
        if self._on_exit is not None:
            self._on_exit(process.pid)
        if self._stopping or code == 0:
            slot.restart_at = None
            return
        ran = now - slot.started
        slot.backoff = MIN_BACKOFF if ran > STABLE_AFTER else min(slot.backoff * 2, MAX_BACKOFF)
        slot.restart_at = now + slot.backoff
        how = f"signal {-code}" if code < 0 else f"code {code}"
        logger.error(
            "worker process %d (pid %d) ended with %s after %.1fs; restarting in %.1fs",
            slot.index,
            process.pid,
            how,
            ran,
            slot.backoff,
        )

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        sig = signal.Signals(signum)
        if self._stopping is None:
            logger.info("%s: stopping %d worker processes", sig.name, len(self._slots))
        self._stopping = sig
        for slot in self._slots:
            if slot.process is not None and slot.process.poll() is None:
                slot.process.send_signal(sig)
