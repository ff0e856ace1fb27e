"""The README's quick start runs as written, against a real worker and the simulator."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from streamq import Settings, StreamQ
from tests.harness.processes import settings_environment

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
async def test_the_quick_start_runs(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Enqueue, stream, attach from elsewhere, resume by cursor and multiplex: as written."""
    for name, value in settings_environment(settings).items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(Path(__file__).parent)  # no stray .env of the checkout's
    namespace: dict[str, object] = {}
    code = "async def quick_start():\n" + textwrap.indent(quick_start(), "    ")
    code += "    return result, cursor\n"
    exec(compile(code, str(README), "exec"), namespace)
    result, cursor = await namespace["quick_start"]()  # type: ignore[operator]
    assert capsys.readouterr().out == result.text
    assert result.finish_reason == "stop"
    assert cursor == result.cursor


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
