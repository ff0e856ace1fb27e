"""Real third-party servers behind the worker: one test per server x feature, each a cell of
the "servers" grid. The client is the ``openai`` SDK at the door (gateway + worker process).

The servers answer from tests/compat/fixtures: matrix.json for @copilotkit/aimock (also behind
the LiteLLM proxy), mock-llm.yaml for @dwmkerr/mock-llm.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx2
import openai
import pytest
import yaml
from openai.types.chat import (
    ChatCompletionChunk,
    ChatCompletionFunctionToolParam,
    ChatCompletionMessageParam,
)

from tests.compat import matrix
from tests.compat.matrix import Grid, register
from tests.compat.parts import AIMOCK_MODEL, FIXTURES, MOCK_LLM_MODEL, Door

pytestmark = pytest.mark.compat

STREAM, NON_STREAM, TOOLS, USAGE = "stream", "non-stream", "tools", "usage"
ERROR_STREAM, ERROR = "error before text (stream)", "error (non-stream)"
RESTART, SURROGATES = "restart mid-answer", "surrogate pair cut in two"
FEATURES = (STREAM, NON_STREAM, TOOLS, USAGE, ERROR_STREAM, ERROR, RESTART, SURROGATES)

TOOL: ChatCompletionFunctionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
    },
}


def _aimock_content(user_message: str) -> str:
    fixtures = json.loads((FIXTURES / "matrix.json").read_text())["fixtures"]
    for fixture in fixtures:
        if fixture["match"].get("userMessage", "") == user_message:
            return str(fixture["response"]["content"])
    raise LookupError(user_message)


def _mock_llm_content(contains: str) -> str:
    rules = yaml.safe_load((FIXTURES / "mock-llm.yaml").read_text())["rules"]
    for rule in rules:
        if contains in rule.get("match", "") or (not contains and rule.get("match") == "@"):
            return str(json.loads(rule["response"]["content"])["choices"][0]["message"]["content"])
    raise LookupError(contains)


@dataclass(frozen=True)
class Server:
    """A server behind the worker: a row of the grid."""

    label: str
    door: str  # the fixture of its door
    model: str
    parts: tuple[str, ...]  # what to start early (read by conftest's _start_early)
    hello: str  # its answer to anything its fixtures do not match
    surrogates: str  # its answer to "surrogate", with pairs cut in two by...
    chunk_size: int  # ...its chunk size, in UTF-16 code units
    error_status: int  # the HTTP status its "unknown model" error stands for
    usage: bool = True  # whether it reports token usage in streams
    not_applicable: dict[str, str] = field(default_factory=dict)
    xfail: dict[str, str] = field(default_factory=dict)  # feature -> a known streamq defect


AIMOCK_HELLO = _aimock_content("")
SERVERS = (
    Server(
        "@copilotkit/aimock",
        "aimock_door",
        AIMOCK_MODEL,
        ("aimock",),
        AIMOCK_HELLO,
        _aimock_content("surrogate"),
        1,
        404,
    ),
    Server(
        "LiteLLM proxy -> aimock",
        "litellm_door",
        AIMOCK_MODEL,
        ("litellm-proxy",),
        AIMOCK_HELLO,
        _aimock_content("surrogate"),
        1,
        404,
        not_applicable={
            SURROGATES: "the LiteLLM proxy cannot relay half a surrogate pair: it ends the "
            'stream with `{"error": {"message": "str is not valid UTF-8: surrogates not '
            'allowed"}}` (its JSON encoder refuses lone surrogates), whatever comes after it'
        },
    ),
    Server(
        "@dwmkerr/mock-llm",
        "mock_llm_door",
        MOCK_LLM_MODEL,
        ("mock-llm",),
        _mock_llm_content(""),
        _mock_llm_content("surrogate"),
        3,
        404,  # streamed as HTTP 200 and an error frame with `"code": "model_not_found"`
        usage=False,
        not_applicable={
            TOOLS: "mock-llm streams `content` only (and the worker always streams)",
            RESTART: "mock-llm has no way to break a stream off",
        },
    ),
)

GRID = register(
    "servers",
    Grid(
        title="Servers behind the worker (openai Python SDK at the door)",
        corner="server",
        rows=[server.label for server in SERVERS],
        columns=FEATURES,
        not_applicable={
            (server.label, feature): why
            for server in SERVERS
            for feature, why in server.not_applicable.items()
        },
        notes=[
            "n>1: neither aimock nor mock-llm answers more than one choice (see the clients "
            "grid for n>1 with the simulator).",
            "restart mid-answer: aimock cuts the first answer off after 3 chunks "
            "(`truncateAfterChunks`, `sequenceIndex` 0), the worker's next attempt gets it "
            "whole; the job must show attempt 2 and the client text of one attempt only.",
            "surrogate pair cut in two: the server slices text by UTF-16 code units, so an "
            "emoji's two halves arrive in two chunks (`\\ud83d`, then `\\ude00`).",
            "mock-llm, errors: it streams them as HTTP 200 and an error frame (`code: "
            "model_not_found`); the worker reads the status from the frame, and the client "
            "must get that 404 all the same.",
        ],
    ),
)


def cells(feature: str) -> list[Any]:
    return matrix.cells("servers", SERVERS, feature, lambda s: s.door.removesuffix("_door"))


@pytest.fixture
def door(request: pytest.FixtureRequest, server: Server) -> Door:
    found: Door = request.getfixturevalue(server.door)
    return found


@pytest.fixture
def sdk(door: Door) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=door.base_url, api_key=door.api_key, max_retries=0, timeout=60
    ) as client:
        yield client


def ask(text: str) -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": text}]


def read(
    stream: openai.Stream[ChatCompletionChunk],
) -> tuple[str, openai.APIError | None, list[ChatCompletionChunk]]:
    """The text a stream showed, the error it ended with (if any), and its chunks."""
    text, chunks = "", []
    try:
        for chunk in stream:
            chunks.append(chunk)
            text += "".join(choice.delta.content or "" for choice in chunk.choices)
    except openai.APIError as exc:
        return text, exc, chunks
    return text, None, chunks


@pytest.mark.parametrize("server", cells(STREAM))
def test_stream(server: Server, sdk: openai.OpenAI) -> None:
    stream = sdk.chat.completions.create(model=server.model, messages=ask("hello"), stream=True)
    text, error, chunks = read(stream)
    assert error is None
    assert text == server.hello
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


@pytest.mark.parametrize("server", cells(NON_STREAM))
def test_non_stream(server: Server, sdk: openai.OpenAI) -> None:
    completion = sdk.chat.completions.create(model=server.model, messages=ask("hello"))
    assert completion.choices[0].message.content == server.hello
    assert completion.choices[0].finish_reason == "stop"


@pytest.mark.parametrize("server", cells(TOOLS))
def test_tools(server: Server, sdk: openai.OpenAI) -> None:
    completion = sdk.chat.completions.create(
        model=server.model, messages=ask("what is the weather in Paris?"), tools=[TOOL]
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls or []
    assert call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"location": "Paris"}


@pytest.mark.parametrize("server", cells(USAGE))
def test_usage(server: Server, sdk: openai.OpenAI) -> None:
    stream = sdk.chat.completions.create(
        model=server.model,
        messages=ask("hello, and count the tokens"),
        stream=True,
        stream_options={"include_usage": True},
    )
    text, error, chunks = read(stream)
    assert error is None
    assert text == server.hello
    usage = chunks[-1].usage
    if not server.usage:  # nothing upstream to report: the door makes none up
        assert usage is None
        return
    assert usage is not None
    assert usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


@pytest.mark.parametrize("server", cells(ERROR_STREAM))
def test_error_before_text_stream(server: Server, sdk: openai.OpenAI) -> None:
    """An upstream error before any text: the client's HTTP status error, no text."""
    text, error = "", None
    try:
        stream = sdk.chat.completions.create(
            model=server.model, messages=ask("use an unknown model"), stream=True
        )
        text, error, _ = read(stream)
    except openai.APIError as exc:
        error = exc
    assert text == ""
    assert isinstance(error, openai.APIStatusError), repr(error)
    assert error.status_code == server.error_status


@pytest.mark.parametrize("server", cells(ERROR))
def test_error_non_stream(server: Server, sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as raised:
        sdk.chat.completions.create(model=server.model, messages=ask("use an unknown model"))
    assert raised.value.status_code == server.error_status


@pytest.mark.parametrize("server", cells(RESTART))
def test_restart_mid_answer(server: Server, sdk: openai.OpenAI, door: Door) -> None:
    """The first attempt breaks off after 3 chunks; the job's second attempt answers."""
    raw = sdk.chat.completions.with_raw_response.create(
        model=server.model, messages=ask("restart mid-answer"), stream=True
    )
    job_id = raw.headers["x-streamq-job-id"]
    text, error, _ = read(raw.parse())
    answer = _aimock_content("restart mid-answer")
    assert answer.startswith(text), f"text of two attempts: {text!r}"
    assert error is not None or text == answer
    headers = {"Authorization": f"Bearer {door.api_key}"}
    with httpx2.Client(base_url=door.origin, headers=headers, timeout=30) as http:
        status = http.get(f"/v1/jobs/{job_id}").json()
    assert status["attempt"] == 2, status


@pytest.mark.parametrize("server", cells(SURROGATES))
def test_surrogate_pair_cut_in_two(server: Server, sdk: openai.OpenAI) -> None:
    """Each emoji arrives as two chunks holding one half of its UTF-16 pair each."""
    assert _cut_pairs(server.surrogates, server.chunk_size), "the answer cuts no pair in two"
    stream = sdk.chat.completions.create(
        model=server.model, messages=ask("surrogate pairs, please"), stream=True
    )
    text, error, _ = read(stream)
    assert error is None
    assert text == server.surrogates


def _cut_pairs(text: str, chunk_size: int) -> int:
    """How many surrogate pairs of ``text`` a slicer of ``chunk_size`` code units cuts."""
    units = memoryview(text.encode("utf-16-le")).cast("H")
    return sum(
        1 for i, unit in enumerate(units) if 0xD800 <= unit < 0xDC00 and (i + 1) % chunk_size == 0
    )
