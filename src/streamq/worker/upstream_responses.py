"""The Responses side of a job: one ``/v1/responses`` stream turned into the events a chat
completion gives, so readers cannot tell which API ran it.

Output items arrive one by one: text and refusals in message items, reasoning summaries and
text in reasoning items, function calls (numbered 0, 1, 2... in order of appearance, as chat
tool calls are). Servers that send no deltas, only the ``.done`` events or the finished
response, give the same events in bigger pieces: each ``.done`` adds what the deltas of its
part did not carry. Usage goes out in the chat shape the wire format has always had.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx2
import openai
import pydantic
from openai import AsyncOpenAI, AsyncStream
from openai.types.responses import ResponseStreamEvent

from streamq.core.events import Delta, Done, Event, Meta, Reasoning, Refusal, ToolCallDelta
from streamq.responses.conversion import upstream_input
from streamq.responses.request import ResponsesRequest
from streamq.worker.surrogates import SurrogateJoiner, repair
from streamq.worker.upstream import IncompleteStream, sdk_arguments, status_error_in_body

# The reason of an incomplete response, as the chat finish reason that means the same.
FINISH_REASONS = {"max_output_tokens": "length", "content_filter": "content_filter"}
# Codes of a failed response (or an error event) that are worth retrying, by the HTTP status
# they stand for; the others OpenAI documents are about the request (its prompt, its images).
RETRYABLE_CODES = {"server_error": 500, "rate_limit_exceeded": 429, "vector_store_timeout": 503}
REQUEST_CODES = ("invalid_", "image_", "bio_policy", "misalignment_", "data_residency_")
SUMMARY_GAP = "\n\n"  # between two reasoning summary parts, as ChatGPT shows them

# A part of the output: (kind, output index, content or summary index); arguments are
# ("arguments", call index, 0).
Part = tuple[str, Any, int]
_TEXT_EVENTS: dict[str, type[Delta | Reasoning | Refusal]] = {
    "content": Delta,
    "refusal": Refusal,
    "summary": Reasoning,
    "reasoning": Reasoning,
}


async def stream_responses(
    client: AsyncOpenAI, request: ResponsesRequest, model: str, *, buffered: bool = False
) -> AsyncIterator[Event]:
    """Yield the events of one response, ending with :class:`Done`.

    ``store`` is off: streamq keeps the conversation itself. ``buffered`` asks for the whole
    response at once (``stream=false``). Raises the SDK's errors (a failed response or an
    error event as the status error its code stands for), or :class:`IncompleteStream` for a
    stream that ended before the response did.
    """
    arguments: dict[str, Any] = {
        "model": model,
        "input": upstream_input(request.input),
        "store": False,
        **request.params,
    }
    if request.instructions is not None:
        arguments["instructions"] = request.instructions
    arguments = sdk_arguments(arguments)
    translator = _Translator(model)
    read = _whole_response if buffered else _streamed_events
    try:
        async for event in read(client, arguments, translator):
            yield event
    except openai.APIError as exc:
        raise status_error_in_body(exc) or exc from None


async def _streamed_events(
    client: AsyncOpenAI, arguments: dict[str, Any], translator: _Translator
) -> AsyncIterator[Event]:
    stream: AsyncStream[ResponseStreamEvent] = await client.responses.create(
        stream=True, **arguments
    )
    async with stream:
        async for item in stream:
            for event in translator.feed(item, stream.response.request):
                yield event
            if translator.done is not None:
                break  # nothing may follow the terminal event
    for event in translator.finish():
        yield event


async def _whole_response(
    client: AsyncOpenAI, arguments: dict[str, Any], translator: _Translator
) -> AsyncIterator[Event]:
    response = await client.responses.create(stream=False, **arguments)
    request = httpx2.Request("POST", client.base_url.join("responses"))
    for event in translator.feed({"type": "response.created", "response": response}, request):
        yield event
    for event in translator.ended(response, request, "completed"):
        yield event
    for event in translator.finish():
        yield event


class _Translator:
    """Turns typed stream events into streamq events; tracks what each part has streamed."""

    def __init__(self, model: str) -> None:
        self.requested_model = model
        self.joiner = SurrogateJoiner()
        self.meta_sent = False
        self.streamed: dict[Part, str] = {}  # the raw text each part's deltas carried
        self.calls: dict[Any, int] = {}  # output index -> call index
        self.last_summary: tuple[Any, int] | None = None
        self.done: Done | None = None

    def feed(self, event: object, request: httpx2.Request) -> list[Event]:
        kind = _field(event, "type")
        events: list[Event] = []
        if not self.meta_sent:
            self.meta_sent = True
            events.append(_meta(_field(event, "response")))
        handle = _HANDLERS.get(kind) if isinstance(kind, str) else None
        if handle is not None:
            events += handle(self, event, request)
        return events

    def finish(self) -> list[Event]:
        """Text a lone surrogate held back (as U+FFFD), then :class:`Done`."""
        if self.done is None:
            raise IncompleteStream("the upstream stream ended before the response did")
        held: list[Event] = [_held_event(part, text) for part, text in self.joiner.rest()]
        return [*held, self.done]

    # Text, refusals, reasoning and arguments

    def text(self, part: Part, piece: object, logprobs: object = None) -> list[Event]:
        """The event for ``piece`` of ``part`` (nothing while a surrogate half is held)."""
        tokens = _logprobs(logprobs)
        if not isinstance(piece, str) or not (piece or tokens):
            return []
        self.streamed[part] = self.streamed.get(part, "") + piece
        text = self.joiner.join(part, piece) if piece else ""
        kind, where, index = part
        if kind == "summary" and text:
            if self.last_summary not in (None, (where, index)):
                text = SUMMARY_GAP + text
            self.last_summary = (where, index)
        if kind == "arguments":
            return [ToolCallDelta(index=where, arguments=text)] if text else []
        if not (text or tokens):
            return []
        return [_TEXT_EVENTS[kind](text=text, logprobs=tokens)]

    def rest(self, part: Part, full: object, logprobs: object = None) -> list[Event]:
        """What the whole text of ``part`` adds to its deltas (all of it if none came)."""
        if not isinstance(full, str):
            return []
        streamed = self.streamed.get(part, "")
        missing = _missing(streamed, full)
        if not missing:
            return []
        return self.text(part, missing, logprobs if not streamed else None)

    # Output items

    def call(self, where: Any, item: object) -> list[Event]:
        """A function call item: opened on first sight with its id and name."""
        if where in self.calls:
            return self.rest(("arguments", self.calls[where], 0), _field(item, "arguments"))
        index = self.calls[where] = len(self.calls)
        call_id, name = _field(item, "call_id"), _field(item, "name")
        pieces = self.rest(("arguments", index, 0), _field(item, "arguments"))
        opened = ToolCallDelta(
            index=index,
            id=repair(call_id) if isinstance(call_id, str) and call_id else None,
            name=repair(name) if isinstance(name, str) and name else None,
            arguments="".join(e.arguments for e in pieces if isinstance(e, ToolCallDelta)),
        )
        return [opened]

    def item_done(self, where: Any, item: object) -> list[Event]:
        """What the finished ``item`` holds that its deltas did not carry."""
        kind = _field(item, "type")
        events: list[Event] = []
        if kind == "function_call":
            events += self.call(where, item)
        elif kind == "message":
            for index, part in enumerate(_list(_field(item, "content"))):
                events += self.part_done(where, index, part)
        elif kind == "reasoning":
            for index, summary in enumerate(_list(_field(item, "summary"))):
                events += self.rest(("summary", where, index), _field(summary, "text"))
            for index, content in enumerate(_list(_field(item, "content"))):
                events += self.rest(("reasoning", where, index), _field(content, "text"))
        return events

    def part_done(self, where: Any, index: int, part: object) -> list[Event]:
        match _field(part, "type"):
            case "output_text":
                logprobs = _field(part, "logprobs")
                return self.rest(("content", where, index), _field(part, "text"), logprobs)
            case "refusal":
                return self.rest(("refusal", where, index), _field(part, "refusal"))
            case "reasoning_text":
                return self.rest(("reasoning", where, index), _field(part, "text"))
        return []

    # The end

    def ended(self, response: object, request: httpx2.Request, status: str) -> list[Event]:
        """The response's last word (``status`` unless it says its own): what its output
        adds, then :class:`Done` is ready; a failed response raises."""
        said = _field(response, "status")
        status = said if said in ("completed", "incomplete", "failed") else status
        if status == "failed":
            raise _failure(_field(response, "error"), request, "the upstream's response failed")
        events: list[Event] = []
        for where, item in enumerate(_list(_field(response, "output"))):
            events += self.item_done(where, item)
        model = _field(response, "model")
        details = _field(response, "incomplete_details")
        if status == "incomplete":
            reason = _field(details, "reason")
            finish = FINISH_REASONS.get(reason, reason) if isinstance(reason, str) else None
            finish = repair(finish) if finish else "incomplete"
        else:
            finish = "tool_calls" if self.calls else "stop"
        self.done = Done(
            finish_reason=finish,
            finish_reasons=[finish],
            usage=chat_usage(_field(response, "usage")),
            model=repair(model) if isinstance(model, str) and model else self.requested_model,
        )
        return events


def _output_index(event: object) -> Any:
    where = _field(event, "output_index")
    return where if isinstance(where, int) else _field(event, "item_id")


def _on_text(kind: str, index_name: str = "content_index") -> Handler:
    def handle(translator: _Translator, event: object, request: httpx2.Request) -> list[Event]:
        index = _field(event, index_name)
        part = (kind, _output_index(event), index if isinstance(index, int) else 0)
        logprobs = _field(event, "logprobs") if kind == "content" else None
        return translator.text(part, _field(event, "delta"), logprobs)

    return handle


def _on_text_done(kind: str, text_name: str, index_name: str = "content_index") -> Handler:
    def handle(translator: _Translator, event: object, request: httpx2.Request) -> list[Event]:
        index = _field(event, index_name)
        part = (kind, _output_index(event), index if isinstance(index, int) else 0)
        return translator.rest(part, _field(event, text_name))

    return handle


def _on_arguments(translator: _Translator, event: object, request: httpx2.Request) -> list[Event]:
    where = _output_index(event)
    if where not in translator.calls:  # no output_item.added came first: open the call
        return translator.call(where, {"arguments": _field(event, "delta")})
    return translator.text(("arguments", translator.calls[where], 0), _field(event, "delta"))


def _on_arguments_done(
    translator: _Translator, event: object, request: httpx2.Request
) -> list[Event]:
    return translator.call(_output_index(event), {"arguments": _field(event, "arguments")})


def _on_item_added(translator: _Translator, event: object, request: httpx2.Request) -> list[Event]:
    item = _field(event, "item")
    if _field(item, "type") != "function_call":
        return []
    return translator.call(_output_index(event), item)


def _on_item_done(translator: _Translator, event: object, request: httpx2.Request) -> list[Event]:
    return translator.item_done(_output_index(event), _field(event, "item"))


def _on_part_done(translator: _Translator, event: object, request: httpx2.Request) -> list[Event]:
    index = _field(event, "content_index")
    index = index if isinstance(index, int) else 0
    return translator.part_done(_output_index(event), index, _field(event, "part"))


def _on_end(status: str) -> Handler:
    def handle(translator: _Translator, event: object, request: httpx2.Request) -> list[Event]:
        return translator.ended(_field(event, "response"), request, status)

    return handle


def _on_error(translator: _Translator, event: object, request: httpx2.Request) -> list[Event]:
    raise _failure(event, request, "the upstream sent an error event")


Handler = Callable[[_Translator, object, httpx2.Request], list[Event]]
_HANDLERS: dict[str, Handler] = {
    "response.output_text.delta": _on_text("content"),
    "response.output_text.done": _on_text_done("content", "text"),
    "response.refusal.delta": _on_text("refusal"),
    "response.refusal.done": _on_text_done("refusal", "refusal"),
    "response.reasoning_summary_text.delta": _on_text("summary", "summary_index"),
    "response.reasoning_summary_text.done": _on_text_done("summary", "text", "summary_index"),
    "response.reasoning_text.delta": _on_text("reasoning"),
    "response.reasoning_text.done": _on_text_done("reasoning", "text"),
    "response.function_call_arguments.delta": _on_arguments,
    "response.function_call_arguments.done": _on_arguments_done,
    "response.output_item.added": _on_item_added,
    "response.output_item.done": _on_item_done,
    "response.content_part.done": _on_part_done,
    "response.completed": _on_end("completed"),
    "response.incomplete": _on_end("incomplete"),
    "response.failed": _on_end("failed"),
    "error": _on_error,
}


def chat_usage(usage: object) -> dict[str, Any] | None:
    """Responses usage (``input_tokens``...) in the chat shape (``prompt_tokens``...), leaving
    out what the server did not say."""
    if usage is None:
        return None
    cached = _field(_field(usage, "input_tokens_details"), "cached_tokens")
    reasoning = _field(_field(usage, "output_tokens_details"), "reasoning_tokens")
    prompt, completion = _field(usage, "input_tokens"), _field(usage, "output_tokens")
    total = _field(usage, "total_tokens")
    if total is None and isinstance(prompt, int) and isinstance(completion, int):
        total = prompt + completion
    shaped: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": total,
    }
    if cached is not None:
        shaped["prompt_tokens_details"] = {"cached_tokens": cached}
    if reasoning is not None:
        shaped["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    return {name: value for name, value in shaped.items() if value is not None}


def _meta(response: object) -> Meta:
    created = _field(response, "created_at")
    number = isinstance(created, int | float) and not isinstance(created, bool)
    return Meta(
        id=_text(_field(response, "id")),
        model=_text(_field(response, "model")),
        created=int(created) if number else None,
    )


def _failure(error: object, request: httpx2.Request, default: str) -> openai.APIError:
    """The SDK error for a failed response's ``error`` or an ``error`` event: a status error
    when its code names one (a 429 is retried as an HTTP 429 would be)."""
    message, code = _field(error, "message"), _field(error, "code")
    body: dict[str, Any] = {
        "message": message if isinstance(message, str) and message else default,
        "code": code,
        "param": _field(error, "param"),
    }
    if isinstance(code, str):
        if code in RETRYABLE_CODES:
            body["status"] = RETRYABLE_CODES[code]
        elif code.startswith(REQUEST_CODES):
            body["status"] = 400
    exc = openai.APIError(body["message"], request, body=body)
    return status_error_in_body(exc) or exc


def _held_event(part: Any, text: str) -> Event:
    """The event for text that :class:`SurrogateJoiner` held back for ``part``."""
    kind, where, _ = part
    if kind == "arguments":
        return ToolCallDelta(index=where, arguments=text)
    return _TEXT_EVENTS[kind](text=text)


def _missing(streamed: str, full: str) -> str:
    """What ``full`` adds to ``streamed``; ``""`` if it does not go on from it. Compared in
    UTF-16 code units when need be: the deltas may have split a surrogate pair."""
    if full.startswith(streamed):
        return full[len(streamed) :]
    head = streamed.encode("utf-16-le", "surrogatepass")
    whole = full.encode("utf-16-le", "surrogatepass")
    if not whole.startswith(head):
        return ""
    return whole[len(head) :].decode("utf-16-le", "surrogatepass")


def _logprobs(value: object) -> list[dict[str, Any]] | None:
    if not isinstance(value, list) or not value:
        return None
    return [_plain(token) for token in value]


def _plain(value: object) -> Any:
    if isinstance(value, pydantic.BaseModel):
        return value.model_dump(exclude_none=True, warnings=False)
    return value


def _field(value: object, name: str) -> Any:
    """``value.name`` or ``value[name]``; None when absent (the SDK builds its event models
    without validation, so any field may be missing)."""
    if isinstance(value, dict):
        return value.get(name)
    return getattr(value, name, None)


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _text(value: object) -> str | None:
    return repair(value) if isinstance(value, str) and value else None
