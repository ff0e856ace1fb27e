"""docs/wire-format.md is enough to follow a job with redis-cli alone."""

from __future__ import annotations

import asyncio
import json
import subprocess
from urllib.parse import urlparse

import pytest

from streamq import Settings, StreamQ
from streamq.core.keys import Keys
from streamq.core.request import chat_messages
from streamq.dev.local_redis import find_redis_binary
from streamq.dev.simulator import simulated_text


def redis_cli(settings: Settings, *args: str) -> list[str]:
    url = urlparse(settings.redis_url)
    command = [find_redis_binary("redis-cli"), "-h", url.hostname or "127.0.0.1"]
    command += ["-p", str(url.port or 6379), "-n", (url.path.strip("/") or "0"), "--raw", *args]
    return subprocess.run(command, capture_output=True, check=True, text=True).stdout.splitlines()


@pytest.mark.usefixtures("worker")
async def test_redis_cli_reader_following_the_doc(sq: StreamQ, settings: Settings) -> None:
    """XREAD from the cursor `0-0`, then from each last cursor, rebuilds the exact text."""
    job = await sq.enqueue_chat("read me with redis-cli")
    await job.result()
    key = Keys(settings.key_prefix).events(job.id)
    assert key == f"{settings.key_prefix}:{{{job.id}}}:events"
    cursor, text = "0-0", ""
    types: list[str] = []
    while not types or types[-1] not in ("done", "error"):
        lines = await asyncio.to_thread(
            redis_cli, settings, "XREAD", "COUNT", "5", "STREAMS", key, cursor
        )
        # --raw prints: key, then per entry its id followed by field/value lines.
        body = lines[1:]
        while body:
            cursor, fields = body[0], body[1:11]
            entry = dict(zip(fields[::2], fields[1::2], strict=True))
            assert entry["v"] == "1"
            types.append(entry["type"])
            if entry["type"] == "delta":
                text += entry["data"]
            elif entry["type"] != "start":
                json.loads(entry["data"])
            body = body[11:]
    assert types[0] == "start"
    assert types[-1] == "done"
    assert text == simulated_text(chat_messages("read me with redis-cli"))
