"""The clients of the compat matrix, behind one interface: ``client.run(Request) -> Outcome``.

The ``openai`` Python SDK runs in this process (it is streamq's own dependency); every other
client runs in a driver process (compat/clients/*.mjs with Node.js, compat/clients/*.py with
.venv-compat's python) that reads one JSON request per line and answers one JSON outcome per
line, so a client's heavy import happens once per session.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import threading
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import openai
from openai.types.chat import ChatCompletion, ChatCompletionChunk

ROOT = Path(__file__).parents[2]
CLIENTS = ROOT / "compat" / "clients"
COMPAT_PYTHON = ROOT / ".venv-compat" / "bin" / "python"
# A driver's first answer waits for its imports (litellm takes seconds, more on a busy CPU).
FIRST_ANSWER_TIMEOUT = 180.0
ANSWER_TIMEOUT = 90.0


@dataclass(frozen=True)
class Request:
    """One call of one client entry point (``entry``) against an OpenAI-compatible server."""

    entry: str
    base_url: str
    api_key: str
    model: str
    messages: Sequence[dict[str, str]]
    tools: Sequence[dict[str, Any]] | None = None
    tool_choice: str | None = None
    n: int | None = None
    include_usage: bool = False


@dataclass(frozen=True)
class Failure:
    """What the client raised (or, for streams, reported): its class, HTTP status, message."""

    kind: str
    status: int | None
    message: str


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: str  # JSON

    def parsed(self) -> Any:
        return json.loads(self.arguments)


@dataclass(frozen=True)
class Outcome:
    """What a client made of the answer: the text of each choice it showed (for a failed
    stream, what it showed before failing), tool calls, usage and finish reason of choice 0."""

    ok: bool
    texts: list[str]
    tool_calls: list[ToolCall] = field(default_factory=list)
    usage: dict[str, int] | None = None
    finish_reason: str | None = None
    error: Failure | None = None

    @property
    def text(self) -> str:
        return self.texts[0]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Outcome:
        error = data.get("error")
        return cls(
            ok=bool(data["ok"]),
            texts=list(data["texts"]),
            tool_calls=[ToolCall(c["name"], c["arguments"]) for c in data["tool_calls"]],
            usage=data.get("usage"),
            finish_reason=data.get("finish_reason"),
            error=Failure(error["kind"], error.get("status"), error["message"]) if error else None,
        )


class Client(Protocol):
    def run(self, request: Request) -> Outcome: ...


class DriverError(Exception):
    """A driver process broke (not the client it drives: those errors are in the outcome)."""


class Driver:
    """A client driver process: JSON requests in on stdin, JSON outcomes out on stdout."""

    def __init__(self, name: str, argv: Sequence[str], log: Path) -> None:
        self.name = name
        self.log = log
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "STREAMQ_"))}
        with open(log, "ab") as output:
            self.process = subprocess.Popen(
                list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=output,
                env=env, cwd=ROOT, text=True, bufsize=1,
            )  # fmt: skip
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, name=f"driver-{name}", daemon=True)
        self._reader.start()
        self._ready = False

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _answer(self, timeout: float) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise DriverError(f"{self.name}: no answer within {timeout:g}s") from None
        if line is None:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise DriverError(f"{self.name} exited ({self.process.poll()}):\n{tail}")
        answer: dict[str, Any] = json.loads(line)
        if "driver_error" in answer:
            raise DriverError(f"{self.name}: {answer['driver_error']}")
        return answer

    def run(self, request: Request) -> Outcome:
        if not self._ready:
            assert self._answer(FIRST_ANSWER_TIMEOUT) == {"ready": True}
            self._ready = True
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(asdict(request)) + "\n")
        self.process.stdin.flush()
        return Outcome.from_json(self._answer(ANSWER_TIMEOUT))

    def close(self) -> None:
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._reader.join(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()


@contextlib.contextmanager
def driver(name: str, argv: Sequence[str], log: Path) -> Iterator[Driver]:
    process = Driver(name, argv, log)
    try:
        yield process
    finally:
        process.close()


def node_driver(script: str) -> list[str]:
    return ["node", str(CLIENTS / script)]


def python_driver(script: str) -> list[str]:
    return [str(COMPAT_PYTHON), str(CLIENTS / script)]


class OpenAIPython:
    """The ``openai`` Python SDK in this process: ``chat.completions.create`` with and without
    ``stream``, the ``chat.completions.stream()`` helper and ``chat.completions.parse``; and
    ``responses.create`` with and without ``stream``, ``responses.stream()``, and a background
    response read in two pieces (``retrieve(stream=True)``, then ``starting_after``)."""

    def run(self, request: Request) -> Outcome:
        with openai.OpenAI(
            base_url=request.base_url, api_key=request.api_key, max_retries=0, timeout=60
        ) as client:
            params = self._params(request)
            seen: list[str] = [""]
            try:
                match request.entry:
                    case "create-stream":
                        return self._stream(
                            client.chat.completions.create(**params, stream=True), seen
                        )
                    case "create":
                        return _completion(client.chat.completions.create(**params))
                    case "stream-helper":
                        return self._helper(client, params, seen)
                    case "parse":
                        return _completion(client.chat.completions.parse(**params), parsed=True)
                    case "responses-stream" | "responses-background":
                        return _Responses(client, request, seen).stream()
                    case "responses-create":
                        answer = client.responses.create(**responses_params(request))
                        return response_outcome(answer.model_dump())
                    case "responses-stream-helper":
                        return _Responses(client, request, seen).helper()
            except openai.APIError as exc:
                status = exc.status_code if isinstance(exc, openai.APIStatusError) else None
                return Outcome(False, seen, error=Failure(type(exc).__name__, status, exc.message))
        raise ValueError(f"unknown entry {request.entry!r}")

    @staticmethod
    def _params(request: Request) -> dict[str, Any]:
        params: dict[str, Any] = {"model": request.model, "messages": request.messages}
        if request.tools:
            params["tools"] = request.tools
        if request.tool_choice:
            params["tool_choice"] = request.tool_choice
        if request.n:
            params["n"] = request.n
        if request.include_usage:
            params["stream_options"] = {"include_usage": True}
        return params

    @staticmethod
    def _stream(stream: openai.Stream[ChatCompletionChunk], seen: list[str]) -> Outcome:
        calls: dict[int, list[str]] = {}
        usage: dict[str, int] | None = None
        finish = None
        with stream:
            for chunk in stream:
                if chunk.usage is not None:
                    usage = _usage(chunk.usage)
                for choice in chunk.choices:
                    seen.extend([""] * (choice.index + 1 - len(seen)))
                    seen[choice.index] += choice.delta.content or ""
                    if choice.index == 0:
                        for call in choice.delta.tool_calls or []:
                            name, arguments = calls.setdefault(call.index, ["", ""])
                            function = call.function
                            calls[call.index] = [
                                name + (function.name or "" if function else ""),
                                arguments + (function.arguments or "" if function else ""),
                            ]
                        finish = choice.finish_reason or finish
        tool_calls = [ToolCall(*calls[index]) for index in sorted(calls)]
        return Outcome(True, seen, tool_calls, usage, finish)

    @staticmethod
    def _helper(client: openai.OpenAI, params: dict[str, Any], seen: list[str]) -> Outcome:
        with client.chat.completions.stream(**params) as stream:
            for event in stream:
                if event.type == "content.delta":
                    seen[0] = event.snapshot
            return _completion(stream.get_final_completion(), parsed=True)


def responses_params(request: Request) -> dict[str, Any]:
    """A chat-shaped request as Responses parameters: system messages become ``instructions``,
    the others ``input``; chat tools become Responses function tools."""
    system = [m["content"] for m in request.messages if m["role"] == "system"]
    params: dict[str, Any] = {
        "model": request.model,
        "input": [m for m in request.messages if m["role"] != "system"],
    }
    if system:
        params["instructions"] = "\n".join(system)
    if request.tools:
        params["tools"] = [{"type": "function", **tool["function"]} for tool in request.tools]
    if request.tool_choice:
        params["tool_choice"] = request.tool_choice
    return params


def response_outcome(response: dict[str, Any]) -> Outcome:
    """What a finished Response object says: its text, function calls, usage and status."""
    text, calls = "", []
    for item in response.get("output") or ():
        if item["type"] == "message":
            text += "".join(p["text"] for p in item["content"] if p["type"] == "output_text")
        elif item["type"] == "function_call":
            calls.append(ToolCall(item["name"], item["arguments"]))
    if response["status"] == "failed":
        error = response.get("error") or {}
        failure = Failure("ResponseFailed", None, f"{error.get('code')}: {error.get('message')}")
        return Outcome(False, [text], error=failure)
    usage = response.get("usage")
    counts = None
    if usage:
        counts = {
            "prompt_tokens": usage["input_tokens"],
            "completion_tokens": usage["output_tokens"],
            "total_tokens": usage["total_tokens"],
        }
    finish = "length" if response["status"] == "incomplete" else "stop"
    if calls and finish == "stop":
        finish = "tool_calls"
    return Outcome(True, [text], calls, counts, finish)


class _Responses:
    """Streamed responses: the text the events showed, and the response they ended with."""

    def __init__(self, client: openai.OpenAI, request: Request, seen: list[str]) -> None:
        self.client = client
        self.request = request
        self.seen = seen
        self.numbers: list[int] = []
        self.final: dict[str, Any] | None = None

    def _add(self, event: Any) -> None:
        self.numbers.append(event.sequence_number)
        if event.type == "response.output_text.delta":
            self.seen[0] += event.delta
        if event.type in ("response.completed", "response.incomplete", "response.failed"):
            self.final = event.response.model_dump()

    def stream(self) -> Outcome:
        params = responses_params(self.request)
        if self.request.entry == "responses-background":
            # Started in the background, read in two pieces as a client that lost its
            # connection would: the second read resumes after the last event it saw.
            response = self.client.responses.create(**params, background=True)
            with self.client.responses.retrieve(response.id, stream=True) as first:
                for event in first:
                    self._add(event)
                    if event.type == "response.output_text.delta" or self.final:
                        break
            if self.final is None:
                after = self.numbers[-1]
                rest = self.client.responses.retrieve(
                    response.id, stream=True, starting_after=after
                )
                with rest:
                    for event in rest:
                        self._add(event)
        else:
            with self.client.responses.create(**params, stream=True) as stream:
                for event in stream:
                    self._add(event)
        return self._outcome()

    def helper(self) -> Outcome:
        with self.client.responses.stream(**responses_params(self.request)) as stream:
            for event in stream:
                self._add(event)
            if self.final is None or self.final["status"] == "completed":
                # Raises for a stream without response.completed; a failed one says why.
                self.final = stream.get_final_response().model_dump()
        return self._outcome()

    def _outcome(self) -> Outcome:
        if self.numbers != sorted(set(self.numbers)):
            message = f"sequence numbers repeated or out of order: {self.numbers}"
            return Outcome(False, self.seen, error=Failure("SequenceError", None, message))
        if self.final is None:
            return Outcome(False, self.seen, error=Failure("NoTerminalEvent", None, "ended early"))
        found = response_outcome(self.final)
        return Outcome(
            found.ok, self.seen, found.tool_calls, found.usage, found.finish_reason, found.error
        )


def _usage(usage: Any) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def _completion(completion: ChatCompletion, parsed: bool = False) -> Outcome:
    first = completion.choices[0]
    calls = []
    for call in first.message.tool_calls or []:
        assert call.type == "function"
        arguments = call.function.arguments
        if parsed:  # what parse() and the stream helper made of the arguments
            arguments = json.dumps(getattr(call.function, "parsed_arguments", None))
        calls.append(ToolCall(call.function.name, arguments))
    return Outcome(
        ok=True,
        texts=[choice.message.content or "" for choice in completion.choices],
        tool_calls=calls,
        usage=_usage(completion.usage) if completion.usage else None,
        finish_reason=first.finish_reason,
    )
