"""The README's quick start runs as written, against a real worker and the simulator."""

from __future__ import annotations

import asyncio
import re
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from streamq import Settings, StreamQ
from streamq.core.request import chat_messages
from streamq.dev.simulator import simulated_text
from tests.harness.processes import settings_environment
from tests.harness.waiting import STARTUP

README = Path(__file__).parents[1] / "README.md"


def python_block(index: int) -> str:
    """The README's Python block ``index``: top-level ``await`` code, as in a notebook."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) > index, "the README has fewer Python examples"
    return str(blocks[index])


def quick_start() -> str:
    """The README's first Python block."""
    return python_block(0)


@pytest.mark.usefixtures("worker")
async def test_the_quick_start_runs(settings: Settings) -> None:
    """The quick start is a runnable script as written: `python` runs it to the end, printing
    the simulator's answer (enqueue, stream, attach, resume by cursor, multiplex)."""
    with tempfile.TemporaryDirectory() as cwd:  # no stray .env of the checkout's
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", quick_start(), cwd=cwd, env=settings_environment(settings),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), STARTUP)
    assert process.returncode == 0, err.decode()
    messages = chat_messages("Write a haiku about queues", system_prompt="Be terse.")
    assert out.decode() == simulated_text(messages)


@pytest.mark.usefixtures("worker")
async def test_the_responses_example_runs(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The Responses example: a response, then a next turn through previous_response_id."""
    for name, value in settings_environment(settings).items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(Path(__file__).parent)
    namespace: dict[str, object] = {"StreamQ": StreamQ}
    code = "async def example():\n" + textwrap.indent(python_block(1), "    ")
    exec(compile(code, str(README), "exec"), namespace)
    await namespace["example"]()  # type: ignore[operator]
    first, second = capsys.readouterr().out.splitlines()
    assert first
    assert second
    assert first != second
