"""Real clients against the door (``POST /v1/chat/completions``): one test per client entry
point x feature, each a cell of the "clients" grid.

Behind the door: the gateway, a real worker process and the simulator, whose answers are known
in advance (``simulated_text``...). The restart cells use a simulator that drops each new
conversation's first answer after 3 chunks, so the worker's second attempt gives the answer.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import pytest

from streamq.dev.simulator import (
    count_prompt_tokens,
    simulated_text,
    simulated_tokens,
    simulated_tool_arguments,
)
from tests.compat import matrix
from tests.compat.clients import Outcome, Request
from tests.compat.matrix import Grid, register
from tests.compat.parts import SIMULATOR_MODELS, Door, Parts

pytestmark = pytest.mark.compat

MODEL = SIMULATOR_MODELS[0]
UNKNOWN_MODEL = "no-such-model"
TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}},
            "required": ["location"],
            "additionalProperties": False,
        },
        "strict": True,  # parse() and the .stream() helpers parse the arguments of strict tools
    },
}

TEXT, TOOLS, USAGE, CHOICES = "text", "tools", "usage", "n>1"
ERROR, RESTART = "error before text", "restart mid-answer"
FEATURES = (TEXT, TOOLS, USAGE, CHOICES, ERROR, RESTART)

NO_N = "the Vercel AI SDK has no `n`: it reads one choice"
LANGCHAIN_STREAM_N = (
    "LangChain's ChatOpenAI streams one choice: it reads `choices[0]` of each chunk (and refuses "
    "`n > 1` with `streaming=True`)"
)


@dataclass(frozen=True)
class Row:
    """A client entry point: a row of the grid."""

    label: str
    client: str  # "openai-py" (in this process) or a driver's name
    entry: str
    not_applicable: dict[str, str] = field(default_factory=dict)
    # feature -> a known defect of streamq's that fails the cell: a strict xfail, which turns
    # into a failure once the defect is fixed (the two of issue 10 were fixed by 3e824b8).
    xfail: dict[str, str] = field(default_factory=dict)

    @property
    def parts(self) -> tuple[str, ...]:
        """The parts it needs started (read by conftest's _start_early)."""
        return () if self.client == "openai-py" else (self.client,)


ROWS = (
    Row("openai (Python) create(stream=True)", "openai-py", "create-stream"),
    Row("openai (Python) create()", "openai-py", "create"),
    Row("openai (Python) .stream()", "openai-py", "stream-helper"),
    Row("openai (Python) parse()", "openai-py", "parse"),
    Row("openai (Node) create({stream: true})", "openai-node", "create-stream"),
    Row("openai (Node) create()", "openai-node", "create"),
    Row("openai (Node) .stream()", "openai-node", "stream-helper"),
    Row(
        "ai + @ai-sdk/openai .chat() streamText", "vercel-ai", "openai-streamText", {CHOICES: NO_N}
    ),
    Row(
        "ai + @ai-sdk/openai .chat() generateText",
        "vercel-ai",
        "openai-generateText",
        {CHOICES: NO_N},
    ),
    Row(
        "ai + @ai-sdk/openai-compatible streamText",
        "vercel-ai",
        "compatible-streamText",
        {CHOICES: NO_N},
    ),
    Row(
        "ai + @ai-sdk/openai-compatible generateText",
        "vercel-ai",
        "compatible-generateText",
        {CHOICES: NO_N},
    ),
    Row("langchain-openai stream", "langchain", "stream", {CHOICES: LANGCHAIN_STREAM_N}),
    Row("langchain-openai astream", "langchain", "astream", {CHOICES: LANGCHAIN_STREAM_N}),
    Row("langchain-openai invoke", "langchain", "invoke"),
    Row("litellm completion(stream=True)", "litellm", "completion-stream"),
    Row("litellm completion()", "litellm", "completion"),
)

GRID = register(
    "clients",
    Grid(
        title="Clients against the door (simulator upstream, real worker process)",
        corner="client / entry point",
        rows=[row.label for row in ROWS],
        columns=FEATURES,
        not_applicable={
            (row.label, feature): why for row in ROWS for feature, why in row.not_applicable.items()
        },
        notes=[
            "langchain-openai invoke, n>1: through `generate` (invoke returns one message).",
            "error before text: a model the upstream does not know (HTTP 404 upstream); the "
            "client must raise its HTTP status error (404) and show no text.",
            "restart mid-answer: the upstream drops the first attempt after 3 chunks; the "
            "client may fail or show the whole answer, but never text of two attempts.",
        ],
    ),
)


def cells(feature: str) -> list[Any]:
    """The rows of ``feature``'s column, each with its grid mark and known defect."""
    return matrix.cells("clients", ROWS, feature, lambda row: f"{row.client}:{row.entry}")


def conversation(feature: str, row: Row) -> list[dict[str, str]]:
    """Messages of this cell's own: the simulator's answer (and fault) is per conversation."""
    return [
        {"role": "system", "content": "Answer in one sentence."},
        {"role": "user", "content": f"Show {feature} through {row.label}, please."},
    ]


Run = Callable[..., Outcome]


class Bind(Protocol):
    def __call__(self, row: Row, door: Door | None = None) -> Run: ...


@pytest.fixture
def run(compat_parts: Parts, simulator_door: Door) -> Bind:
    """``run(row, door)(messages, **request fields)``: one call of the row's entry point
    (at the simulator's door unless ``door`` is given)."""

    def bind(row: Row, door: Door | None = None) -> Run:
        door = door or simulator_door
        client = compat_parts.client(row.client)

        def call(messages: list[dict[str, str]], **fields: Any) -> Outcome:
            fields.setdefault("model", MODEL)
            request = Request(row.entry, door.base_url, door.api_key, messages=messages, **fields)
            return client.run(request)

        return call

    return bind


def succeeded(outcome: Outcome) -> Outcome:
    assert outcome.ok, outcome.error
    assert outcome.error is None
    return outcome


@pytest.mark.parametrize("row", cells(TEXT))
def test_text(row: Row, run: Bind) -> None:
    """The answer's text, exactly, and its finish reason."""
    messages = conversation(TEXT, row)
    outcome = succeeded(run(row)(messages))
    assert outcome.texts == [simulated_text(messages)]
    assert outcome.finish_reason == "stop"


@pytest.mark.parametrize("row", cells(TOOLS))
def test_tools(row: Row, run: Bind) -> None:
    """A required tool call: its name and arguments, parsed by the client where it does."""
    messages = conversation(TOOLS, row)
    outcome = succeeded(run(row)(messages, tools=[TOOL], tool_choice="required"))
    [call] = outcome.tool_calls
    assert call.name == "get_weather"
    assert call.parsed() == json.loads(simulated_tool_arguments(messages, TOOL))
    assert outcome.finish_reason == "tool_calls"


@pytest.mark.parametrize("row", cells(USAGE))
def test_usage(row: Row, run: Bind) -> None:
    """Token usage as the upstream counted it (streams ask for it with include_usage)."""
    messages = conversation(USAGE, row)
    outcome = succeeded(run(row)(messages, include_usage=True))
    prompt, completion = count_prompt_tokens(messages), len(simulated_tokens(messages))
    assert outcome.usage == {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    assert outcome.texts == [simulated_text(messages)]


@pytest.mark.parametrize("row", cells(CHOICES))
def test_several_choices(row: Row, run: Bind) -> None:
    """``n=2``: two different answers, each whole and in its place."""
    messages = conversation(CHOICES, row)
    outcome = succeeded(run(row)(messages, n=2))
    assert outcome.texts == [simulated_text(messages, choice=i) for i in range(2)]


@pytest.mark.parametrize("row", cells(ERROR))
def test_error_before_text(row: Row, run: Bind) -> None:
    """An upstream 404 before any text reaches the client as its HTTP status error."""
    outcome = run(row)(conversation(ERROR, row), model=UNKNOWN_MODEL)
    assert not outcome.ok
    assert all(text == "" for text in outcome.texts)
    assert outcome.error is not None
    assert outcome.error.status == 404, outcome.error


@pytest.mark.parametrize("row", cells(RESTART))
def test_restart_mid_answer(row: Row, run: Bind, restart_door: Door) -> None:
    """The worker's first attempt dies after 3 chunks: the client never shows text of two
    attempts; it either fails (after text of one attempt) or shows the whole answer."""
    messages = conversation(RESTART, row)
    outcome = run(row, restart_door)(messages)
    answer = simulated_text(messages)
    assert answer.startswith(outcome.text), f"text of two attempts: {outcome.text!r}"
    if outcome.ok:
        assert outcome.texts == [answer]
    else:
        assert outcome.error is not None
