"""streamq against an OpenAI-compatible server it did not write (@copilotkit/aimock, from npm).

Run with `make compat`, which installs the server from compat/package-lock.json first.
"""

from __future__ import annotations

import functools
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamq import Settings, StreamQ
from streamq.dev.local_redis import free_port
from tests.compat.matrix import Grid, cell, register
from tests.compat.parts import answers
from tests.harness.processes import exited, stop, worker_processes
from tests.harness.waiting import STARTUP, poll_until_sync

pytestmark = pytest.mark.compat

ROOT = Path(__file__).parents[2]
LLMOCK = ROOT / "compat" / "node_modules" / ".bin" / "llmock"
FIXTURES = Path(__file__).parent / "fixtures" / "compat.json"
EXPECTED = json.loads(FIXTURES.read_text())["fixtures"][1]["response"]["content"]
ROW = "@copilotkit/aimock, StreamQ Python API"
register(
    "entry-points",
    Grid(
        title="Worker entry points (text and tool calls from aimock)",
        corner="server / producer",
        rows=[ROW],
        columns=["streamq worker", "arq CLI"],
    ),
)


@pytest.fixture(scope="module")
def third_party_url() -> Iterator[str]:
    """aimock serving on a free loopback port, 8-byte chunks 5 ms apart."""
    assert LLMOCK.exists(), "run `make compat` (it runs `npm ci --prefix compat` first)"
    port = free_port()
    process = subprocess.Popen(
        [str(LLMOCK), "--host", "127.0.0.1", "--port", str(port), "--fixtures", str(FIXTURES),
         "--chunk-size", "8", "--latency", "5", "--log-level", "warn"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        poll_until_sync(
            functools.partial(answers, f"http://127.0.0.1:{port}/health"), STARTUP,
            "aimock to answer", interval=0.1, give_up=functools.partial(exited, process),
        )  # fmt: skip
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stop(process)


@pytest.fixture
def compat_settings(settings: Settings, third_party_url: str) -> Settings:
    return settings.replace(openai_base_url=third_party_url, openai_model="aimock-model")


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(
            ("-m", "streamq", "worker"), marks=cell("entry-points", ROW, "streamq worker")
        ),
        pytest.param(
            ("-m", "arq", "streamq.worker.WorkerSettings"),
            marks=cell("entry-points", ROW, "arq CLI"),
        ),
    ],
    ids=["streamq-worker", "arq-cli"],
)
async def test_text_and_tool_calls_stream_through(
    compat_settings: Settings, command: tuple[str, ...]
) -> None:
    """Both worker entry points stream text and tool calls from a foreign server exactly."""
    with worker_processes(compat_settings, 1, command=command):
        async with StreamQ.from_url(compat_settings.redis_url, compat_settings) as sq:
            job = await sq.enqueue_chat("hello", system_prompt="be brief")
            result = await job.result(timeout=30)
            assert result.text == EXPECTED
            assert result.finish_reason == "stop"
            assert result.usage is not None
            assert "".join([chunk async for chunk in job]) == EXPECTED

            weather = await sq.enqueue_chat("what is the weather in Paris?")
            called = await weather.result(timeout=30)
            assert called.finish_reason == "tool_calls"
            [call] = called.tool_calls
            assert call.name == "get_weather"
            assert json.loads(call.arguments) == {"location": "Paris"}
