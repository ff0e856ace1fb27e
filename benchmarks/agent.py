"""A client process of the benchmark: ``python -m benchmarks.agent ROLE ENDPOINTS_JSON``.

It answers one JSON line on stdout for each JSON request line on stdin (first a ``ready`` line),
so the orchestrator can measure its CPU, memory and Redis connections on their own. It exits when
stdin closes or on SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from typing import Any

from benchmarks.common import Endpoints
from benchmarks.roles import ROLES
from streamq.core.garbage_collection import pace_for_service

CLOSE_TIMEOUT = 5.0


def respond(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def serve(role_name: str, endpoints: Endpoints) -> None:
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    loop.add_signal_handler(signal.SIGTERM, main.cancel)
    role = ROLES[role_name](endpoints)
    stdin = asyncio.StreamReader(limit=2**26)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    respond({"ok": True, "ready": role_name, "pid": os.getpid()})

    async def answer(request: dict[str, Any]) -> None:
        try:
            respond({"ok": True, **await role.handle(request["op"], request)})
        except Exception as exc:
            respond({"ok": False, "error": repr(exc)})

    # Requests run as tasks so that stdin is always read: its end stops even a request in flight.
    requests: set[asyncio.Task[None]] = set()
    try:
        while line := await stdin.readline():
            task = asyncio.create_task(answer(json.loads(line)))
            requests.add(task)
            task.add_done_callback(requests.discard)
    finally:
        for task in list(requests):
            task.cancel()
        await asyncio.gather(*requests, return_exceptions=True)
        await asyncio.wait_for(role.aclose(), CLOSE_TIMEOUT)


def main() -> None:
    role_name, raw = sys.argv[1], sys.argv[2]
    if role_name.endswith("-reader"):
        # A reader keeps every delta's timestamps and entry id for the figures: left at
        # CPython's pace, that growing heap drew a full collection a second (~100 ms each, the
        # p99 of its delivery lag). Both readers collect as streamq's services do.
        pace_for_service()
    with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
        asyncio.run(serve(role_name, Endpoints.from_json(raw)))


if __name__ == "__main__":
    main()
