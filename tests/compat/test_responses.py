"""The Responses API on both sides, with real clients and servers: two grids.

"responses clients": client entry points against the door's ``/v1/responses`` (the gateway and a
real worker process with the simulator's chat API upstream), like the "clients" grid.
"responses upstreams": each door API in front of each upstream API, the simulator's and
third-party servers' ``/v1/responses`` included (@copilotkit/aimock serves it from the same
fixtures as its chat API; the LiteLLM proxy relays it to aimock's).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from streamq.dev.simulator import (
    count_prompt_tokens,
    simulated_text,
    simulated_tokens,
    simulated_tool_arguments,
)
from tests.compat import matrix
from tests.compat.clients import OpenAIPython, Outcome, Request, response_outcome
from tests.compat.matrix import Grid, register
from tests.compat.parts import AIMOCK_MODEL, FIXTURES, SIMULATOR_MODELS, Door, Parts

pytestmark = pytest.mark.compat

MODEL = SIMULATOR_MODELS[0]
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
        "strict": True,
    },
}

TEXT, TOOLS, USAGE = "text", "tools", "usage"
ERROR, RESTART = "error before text", "restart mid-answer"
FEATURES = (TEXT, TOOLS, USAGE, ERROR, RESTART)
BACKGROUND_ERROR = (
    "a background response is accepted (200, status queued) before the upstream is asked: "
    "its failure arrives as response.failed in the stream, not as an HTTP status"
)


@dataclass(frozen=True)
class Row:
    """A client entry point against /v1/responses: a row of the grid."""

    label: str
    client: str
    entry: str
    not_applicable: dict[str, str] = field(default_factory=dict)

    @property
    def parts(self) -> tuple[str, ...]:
        return () if self.client == "openai-py" else (self.client,)


ROWS = (
    Row("openai (Python) responses.create(stream=True)", "openai-py", "responses-stream"),
    Row("openai (Python) responses.create()", "openai-py", "responses-create"),
    Row("openai (Python) responses.stream()", "openai-py", "responses-stream-helper"),
    Row(
        "openai (Python) background, then retrieve(stream) twice",
        "openai-py",
        "responses-background",
        {ERROR: BACKGROUND_ERROR},
    ),
    Row("openai (Node) responses.create({stream: true})", "openai-node", "responses-stream"),
    Row("openai (Node) responses.create()", "openai-node", "responses-create"),
    Row("openai (Node) responses.stream()", "openai-node", "responses-stream-helper"),
    Row("ai + @ai-sdk/openai openai(model) streamText", "vercel-ai", "responses-streamText"),
    Row("ai + @ai-sdk/openai openai(model) generateText", "vercel-ai", "responses-generateText"),
    Row("langchain-openai use_responses_api stream", "langchain", "responses-stream"),
    Row("langchain-openai use_responses_api invoke", "langchain", "responses-invoke"),
)

register(
    "responses clients",
    Grid(
        title="Clients against the door's /v1/responses (simulator chat upstream, real worker)",
        corner="client / entry point",
        rows=[row.label for row in ROWS],
        columns=FEATURES,
        not_applicable={
            (row.label, feature): why for row in ROWS for feature, why in row.not_applicable.items()
        },
        notes=[
            "error before text: a model the upstream does not know (HTTP 404 upstream); the "
            "client must raise its HTTP status error (404) and show no text.",
            "restart mid-answer: the upstream drops the first attempt after 3 chunks; the "
            "client may fail (response.failed) or show the whole answer, never text of two "
            "attempts.",
            "background: created with background=true, read with retrieve(stream=True) up to "
            "the first text, then again with starting_after: no event twice, the text whole.",
        ],
    ),
)


def client_cells(feature: str) -> list[Any]:
    return matrix.cells("responses clients", ROWS, feature, lambda r: f"{r.client}:{r.entry}")


def conversation(feature: str, row_label: str) -> list[dict[str, str]]:
    """This cell's own messages: the simulator's answer (and fault) is per conversation."""
    return [
        {"role": "system", "content": "Answer in one sentence."},
        {"role": "user", "content": f"Show {feature} through {row_label}, please."},
    ]


Run = Callable[..., Outcome]


@pytest.fixture
def run(compat_parts: Parts, simulator_door: Door) -> Callable[[Row, Door | None], Run]:
    def bind(row: Row, door: Door | None = None) -> Run:
        chosen = door or simulator_door
        client = compat_parts.client(row.client)

        def call(messages: list[dict[str, str]], **fields: Any) -> Outcome:
            fields.setdefault("model", MODEL)
            request = Request(
                row.entry, chosen.base_url, chosen.api_key, messages=messages, **fields
            )
            return client.run(request)

        return call

    return bind


def succeeded(outcome: Outcome) -> Outcome:
    assert outcome.ok, outcome.error
    return outcome


@pytest.mark.parametrize("row", client_cells(TEXT))
def test_text(row: Row, run: Callable[[Row, Door | None], Run]) -> None:
    messages = conversation(TEXT, row.label)
    outcome = succeeded(run(row, None)(messages))
    assert outcome.texts == [simulated_text(messages)]
    assert outcome.finish_reason == "stop"


@pytest.mark.parametrize("row", client_cells(TOOLS))
def test_tools(row: Row, run: Callable[[Row, Door | None], Run]) -> None:
    messages = conversation(TOOLS, row.label)
    outcome = succeeded(run(row, None)(messages, tools=[TOOL], tool_choice="required"))
    [call] = outcome.tool_calls
    assert call.name == "get_weather"
    assert call.parsed() == json.loads(simulated_tool_arguments(messages, TOOL))
    assert outcome.finish_reason == "tool_calls"


@pytest.mark.parametrize("row", client_cells(USAGE))
def test_usage(row: Row, run: Callable[[Row, Door | None], Run]) -> None:
    messages = conversation(USAGE, row.label)
    outcome = succeeded(run(row, None)(messages))
    prompt, completion = count_prompt_tokens(messages), len(simulated_tokens(messages))
    assert outcome.usage == {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


@pytest.mark.parametrize("row", client_cells(ERROR))
def test_error_before_text(row: Row, run: Callable[[Row, Door | None], Run]) -> None:
    outcome = run(row, None)(conversation(ERROR, row.label), model="no-such-model")
    assert not outcome.ok
    assert outcome.texts == [""]
    assert outcome.error is not None
    assert outcome.error.status == 404, outcome.error


@pytest.mark.parametrize("row", client_cells(RESTART))
def test_restart_mid_answer(
    row: Row, run: Callable[[Row, Door | None], Run], restart_door: Door
) -> None:
    messages = conversation(RESTART, row.label)
    outcome = run(row, restart_door)(messages)
    answer = simulated_text(messages)
    assert answer.startswith(outcome.text), f"text of two attempts: {outcome.text!r}"
    if outcome.ok:
        assert outcome.texts == [answer]
    else:
        assert outcome.error is not None


# Door API x upstream API ------------------------------------------------------------------


@dataclass(frozen=True)
class Pairing:
    """A door API in front of an upstream: a row of the second grid."""

    label: str
    door: str  # the fixture of its door
    api: str  # "chat" or "responses": what the client asks at the door
    model: str
    parts: tuple[str, ...] = ()
    not_applicable: dict[str, str] = field(default_factory=dict)


def _aimock_fixture(user_message: str) -> dict[str, Any]:
    for fixture in json.loads((FIXTURES / "matrix.json").read_text())["fixtures"]:
        if fixture["match"].get("userMessage", "") == user_message:
            return dict(fixture["response"])
    raise LookupError(user_message)


PAIRINGS = (
    Pairing("Responses door -> simulator chat API", "simulator_door", "responses", MODEL),
    Pairing("chat door -> simulator Responses API", "simulator_responses_door", "chat", MODEL),
    Pairing(
        "Responses door -> simulator Responses API", "simulator_responses_door", "responses", MODEL
    ),
    Pairing(
        "chat door -> aimock Responses API",
        "aimock_responses_door",
        "chat",
        AIMOCK_MODEL,
        ("aimock",),
    ),
    Pairing(
        "Responses door -> aimock Responses API",
        "aimock_responses_door",
        "responses",
        AIMOCK_MODEL,
        ("aimock",),
    ),
    Pairing(
        "Responses door -> LiteLLM proxy Responses API -> aimock",
        "litellm_responses_door",
        "responses",
        AIMOCK_MODEL,
        ("litellm-proxy",),
    ),
)
PAIRING_FEATURES = (TEXT, TOOLS, USAGE)

register(
    "responses upstreams",
    Grid(
        title="Door API x upstream API (openai Python SDK at the door, real worker process)",
        corner="door -> upstream",
        rows=[pairing.label for pairing in PAIRINGS],
        columns=PAIRING_FEATURES,
        not_applicable={},
        notes=[
            "aimock answers /v1/responses from the same fixtures as its chat API; usage is "
            "whatever the fixture says (0 tokens unless set), so the usage cell checks that "
            "usage arrives and adds up.",
            "LiteLLM proxy: `openai/<model>` relays /v1/responses to the upstream's own.",
        ],
    ),
)


def pairing_cells(feature: str) -> list[Any]:
    return matrix.cells("responses upstreams", PAIRINGS, feature, pairing_id)


def pairing_id(pairing: Pairing) -> str:
    return f"{pairing.door.removesuffix('_door')}:{pairing.api}"


def ask(pairing: Pairing, door: Door, feature: str, **fields: Any) -> Outcome:
    """One non-streamed and one streamed call at ``door``; both must tell the same."""
    on_aimock = pairing.model == AIMOCK_MODEL
    text = {TEXT: "hello", TOOLS: "what is the weather in Paris?", USAGE: "hello, usage"}[feature]
    messages = [{"role": "user", "content": text if on_aimock else f"{feature}: {pairing.label}"}]
    entry = "responses-stream" if pairing.api == "responses" else "create-stream"
    request = Request(
        entry, door.base_url, door.api_key, model=pairing.model, messages=messages, **fields
    )
    streamed = OpenAIPython().run(request)
    whole_entry = "responses-create" if pairing.api == "responses" else "create"
    whole = OpenAIPython().run(dataclasses.replace(request, entry=whole_entry))
    assert succeeded(streamed).texts == succeeded(whole).texts
    assert streamed.tool_calls == whole.tool_calls
    return streamed


@pytest.fixture
def pairing_door(request: pytest.FixtureRequest, pairing: Pairing) -> Door:
    found: Door = request.getfixturevalue(pairing.door)
    return found


@pytest.mark.parametrize("pairing", pairing_cells(TEXT))
def test_pairing_text(pairing: Pairing, pairing_door: Door) -> None:
    outcome = ask(pairing, pairing_door, TEXT)
    if pairing.model == AIMOCK_MODEL:
        assert outcome.text == _aimock_fixture("")["content"]
    else:
        assert outcome.text == simulated_text(
            [{"role": "user", "content": f"{TEXT}: {pairing.label}"}]
        )
    assert outcome.finish_reason == "stop"


@pytest.mark.parametrize("pairing", pairing_cells(TOOLS))
def test_pairing_tools(pairing: Pairing, pairing_door: Door) -> None:
    outcome = ask(pairing, pairing_door, TOOLS, tools=[TOOL], tool_choice="required")
    [call] = outcome.tool_calls
    assert call.name == "get_weather"
    if pairing.model == AIMOCK_MODEL:
        assert call.parsed() == {"location": "Paris"}
    else:
        messages = [{"role": "user", "content": f"{TOOLS}: {pairing.label}"}]
        assert call.parsed() == json.loads(simulated_tool_arguments(messages, TOOL))
    assert outcome.finish_reason == "tool_calls"


@pytest.mark.parametrize("pairing", pairing_cells(USAGE))
def test_pairing_usage(pairing: Pairing, pairing_door: Door) -> None:
    outcome = ask(pairing, pairing_door, USAGE, include_usage=True)
    assert outcome.usage is not None
    usage = outcome.usage
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    if pairing.model != AIMOCK_MODEL:
        messages = [{"role": "user", "content": f"{USAGE}: {pairing.label}"}]
        assert usage["prompt_tokens"] == count_prompt_tokens(messages)
        assert usage["completion_tokens"] == len(simulated_tokens(messages))


def test_response_outcome_reads_failed_responses() -> None:
    """The helper the cells judge by: a failed response is a failure with its code."""
    found = response_outcome(
        {"status": "failed", "output": [], "error": {"code": "server_error", "message": "x"}}
    )
    assert not found.ok
    assert found.error is not None
    assert "server_error" in found.error.message
