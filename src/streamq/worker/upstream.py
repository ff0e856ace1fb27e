"""The OpenAI side of a job: one streaming request turned into streamq events.

Servers differ: a role-only first chunk, a usage chunk with no choices, usage on the last choice
chunk, a missing ``[DONE]``, tool-call fragments split anywhere. Nothing here assumes more than
the Chat Completions chunk schema.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx2
import openai
import pydantic
from openai import AsyncOpenAI, AsyncStream
from openai.types.chat import ChatCompletionChunk

from streamq.core.events import Delta, Done, Error, Event, Meta, Reasoning, Refusal, ToolCallDelta
from streamq.core.request import ChatRequest
from streamq.worker.retry import retry_after
from streamq.worker.sse_parser import SSEParser
from streamq.worker.surrogates import SurrogateJoiner, repair


class IncompleteStream(Exception):
    """The upstream stream ended before any choice reported a finish reason."""


class UpstreamProtocolError(Exception):
    """The upstream sent something that is not a chat completion chunk."""


@dataclass
class _Progress:
    finish_reasons: dict[int, str | None] = field(default_factory=dict)
    choices: set[int] = field(default_factory=set)  # every choice index seen
    usage: dict[str, Any] | None = None
    model: str | None = None
    system_fingerprint: str | None = None
    meta_sent: bool = False
    # Per choice: tool-call ids seen, and the index of the call fragments continue.
    call_ids: dict[int, dict[str, int]] = field(default_factory=dict)
    last_call: dict[int, int] = field(default_factory=dict)

    def call_index(self, choice: int, index: object, call_id: str | None) -> int:
        """The call a fragment belongs to, for servers that omit ``index`` (a new id opens one)."""
        ids = self.call_ids.setdefault(choice, {})
        if not isinstance(index, int):
            if call_id is not None and call_id not in ids:
                index = max([*ids.values(), self.last_call.get(choice, -1)]) + 1
            else:
                index = ids.get(call_id or "", self.last_call.get(choice, 0))
        if call_id is not None:
            ids.setdefault(call_id, index)
        self.last_call[choice] = index
        return index


async def stream_chat(
    client: AsyncOpenAI,
    request: ChatRequest,
    model: str,
    *,
    fast: bool = True,
    buffered: bool = False,
) -> AsyncIterator[Event]:
    """Yield the events of one completion, ending with :class:`Done`.

    The SDK makes the request either way (auth, base URL, headers, errors before the body).
    ``fast`` reads the body with streamq's own SSE parser instead of building a pydantic
    model per chunk; both give the same events. ``buffered`` asks for the whole answer at once
    (``stream=false``) and yields it as one piece per choice. Raises the SDK's errors, or
    :class:`IncompleteStream` for a stream that ended early.
    """
    arguments = sdk_arguments(
        {
            "model": model,
            "messages": request.messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            **request.params,
        },
        messages=[],
        stream=True,
    )
    translator = _Translator(model, choices=request.params.get("n") or 1)
    if buffered:
        chunks = _whole_answer(client, arguments)
    else:
        chunks = _fast_chunks(client, arguments) if fast else _sdk_chunks(client, arguments)
    try:
        async for chunk in chunks:
            for event in translator.feed(chunk):
                yield event
    except openai.APIError as exc:
        raise status_error_in_body(exc) or exc from None
    for event in translator.finish():
        yield event


def sdk_arguments(body: dict[str, Any], **kept: Any) -> dict[str, Any]:
    """``create()``'s arguments for the JSON ``body``: all of it in ``extra_body`` (which the
    SDK merges over the rest), but for the model and the ``kept`` arguments (the ones
    ``create()`` needs: Chat Completions' ``messages``, given empty, and ``stream``).

    The SDK walks every argument through the TypedDicts of its parameters to apply aliases and
    formats, which neither Chat Completions' nor the Responses API's parameters have: 0.4 ms
    (chat) to 0.65 ms (Responses) per request, a fifth of what starting a job costs a worker.
    A job's request is JSON already, as the SDK would send it; what goes out is the same body."""
    fields = {name: value for name, value in body.items() if name != "extra_body"}
    extra = {**fields, **(body.get("extra_body") or {})}  # the SDK's precedence: extra_body wins
    return {"model": body["model"], **kept, "extra_body": extra}


async def _sdk_chunks(client: AsyncOpenAI, arguments: dict[str, Any]) -> AsyncIterator[Any]:
    stream: AsyncStream[ChatCompletionChunk] = await client.chat.completions.create(**arguments)
    async with stream:
        async for chunk in stream:
            yield chunk.model_dump(warnings=False)


async def _whole_answer(client: AsyncOpenAI, arguments: dict[str, Any]) -> AsyncIterator[Any]:
    """A non-streamed completion, as the one chunk a stream of it would add up to."""
    extra = {**arguments["extra_body"], "stream": False}
    del extra["stream_options"]
    arguments = {**arguments, "stream": False, "extra_body": extra}
    completion = (await client.chat.completions.create(**arguments)).model_dump(warnings=False)
    choices = []
    for choice in completion.get("choices") or ():
        message = choice.get("message") or {}
        calls = [{**call, "index": i} for i, call in enumerate(message.get("tool_calls") or ())]
        delta = {**message, "tool_calls": calls}
        choices.append({**choice, "delta": delta})
    yield {**completion, "choices": choices}


async def _fast_chunks(client: AsyncOpenAI, arguments: dict[str, Any]) -> AsyncIterator[Any]:
    create = client.chat.completions.with_streaming_response.create
    async with create(**arguments) as response:
        http = response.http_response
        parser = SSEParser()
        body = http.aiter_bytes()
        try:
            async for data in body:
                for chunk in _decode_events(parser.feed(data), http):
                    if chunk is None:
                        # Read to the end, as the SDK does: a response closed with unread
                        # bytes takes its connection along, and the next job must connect anew.
                        async for _ in body:
                            pass
                        return
                    yield chunk
            for chunk in _decode_events(parser.close(), http):
                if chunk is None:
                    return
                yield chunk
        except httpx2.TimeoutException as exc:  # the same errors the SDK's own stream raises
            raise openai.APITimeoutError(request=http.request) from exc
        except httpx2.TransportError as exc:
            raise openai.APIConnectionError(request=http.request) from exc


def _decode_events(events: list[tuple[bytes, bytes]], http: httpx2.Response) -> list[Any]:
    """Each event's JSON, or ``None`` for ``[DONE]``; an error event raises like the SDK."""
    decoded: list[Any] = []
    for _, data in events:
        if data.startswith(b"[DONE]"):
            decoded.append(None)
            break
        chunk = json.loads(data)
        if isinstance(chunk, dict) and chunk.get("error"):
            error = chunk["error"]
            message = error.get("message") if isinstance(error, dict) else None
            raise openai.APIError(
                message=message
                if isinstance(message, str) and message
                else "An error occurred during streaming",
                request=http.request,
                body=error,
            )
        decoded.append(chunk)
    return decoded


class _Translator:
    """Turns chunk dicts into events; tracks finish reasons, usage and tool-call indexes."""

    def __init__(self, model: str, choices: int = 1) -> None:
        self.progress = _Progress()
        self.requested_model = model
        self.expected_choices = choices
        self.joiner = SurrogateJoiner()

    def feed(self, chunk: Any) -> list[Event]:
        if not isinstance(chunk, dict):
            raise UpstreamProtocolError(f"a chunk is not a JSON object: {type(chunk).__name__}")
        progress = self.progress
        model = _text(chunk.get("model"))
        progress.model = model or progress.model
        fingerprint = _text(chunk.get("system_fingerprint"))
        progress.system_fingerprint = fingerprint or progress.system_fingerprint
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            progress.usage = _without_none(usage)
        events: list[Event] = []
        if not progress.meta_sent:
            progress.meta_sent = True
            created = chunk.get("created")
            events.append(
                Meta(
                    model=model,
                    system_fingerprint=fingerprint,
                    id=_text(chunk.get("id")),
                    created=created if type(created) is int else None,
                )
            )
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            index = choice.get("index")
            index = index if isinstance(index, int) else 0
            progress.choices.add(index)
            delta = choice.get("delta")
            if isinstance(delta, dict):
                logprobs = choice.get("logprobs")
                logprobs = logprobs if isinstance(logprobs, dict) else {}
                events += _choice_events(delta, index, progress, self.joiner, logprobs)
            if choice.get("finish_reason"):
                progress.finish_reasons[index] = repair(str(choice["finish_reason"]))
        return events

    def finish(self) -> list[Event]:
        """The last events: text a lone surrogate held back (as U+FFFD), then :class:`Done`."""
        progress = self.progress
        if not progress.finish_reasons:
            raise IncompleteStream("the upstream stream ended without a finish reason")
        expected = set(range(self.expected_choices)) | progress.choices
        unfinished = sorted(expected - set(progress.finish_reasons))
        if unfinished:  # e.g. a proxy that ends an n=2 stream after choice 0
            raise IncompleteStream(f"the upstream stream ended before choices {unfinished} did")
        events = [_held_event(field, text) for field, text in self.joiner.rest()]
        reasons = [progress.finish_reasons.get(i) for i in range(max(progress.finish_reasons) + 1)]
        done = Done(
            finish_reason=reasons[0],
            finish_reasons=reasons,
            usage=progress.usage,
            model=progress.model or self.requested_model,
            system_fingerprint=progress.system_fingerprint,
        )
        return [*events, done]


def _text(value: object) -> str | None:
    """A non-empty string field of a chunk as valid Unicode, else None."""
    return repair(value) if isinstance(value, str) and value else None


def _without_none(value: dict[str, Any]) -> dict[str, Any]:
    return {
        key: _without_none(item) if isinstance(item, dict) else item
        for key, item in value.items()
        if item is not None
    }


_TEXT_EVENTS: dict[str, type[Delta | Reasoning | Refusal]] = {
    "reasoning": Reasoning,
    "content": Delta,
    "refusal": Refusal,
}


def _held_event(field: Any, text: str) -> Event:
    """The event for text that :class:`SurrogateJoiner` held under ``field``."""
    kind, choice, *call = field
    if kind == "arguments":
        return ToolCallDelta(index=call[0], arguments=text, choice=choice)
    return _TEXT_EVENTS[kind](text=text, choice=choice)


def _choice_events(
    delta: dict[str, Any],
    index: int,
    progress: _Progress,
    joiner: SurrogateJoiner,
    logprobs: dict[str, Any],
) -> list[Event]:
    events: list[Event] = []
    pieces = {
        "reasoning": delta.get("reasoning_content") or delta.get("reasoning"),
        "content": delta.get("content"),
        "refusal": delta.get("refusal"),
    }
    for kind, piece in pieces.items():
        if isinstance(piece, str) and piece:
            text = joiner.join((kind, index), piece)
            tokens = logprobs.get(kind) if kind != "reasoning" else None
            tokens = tokens if isinstance(tokens, list) and tokens else None
            if text or tokens:
                events.append(_TEXT_EVENTS[kind](text=text, choice=index, logprobs=tokens))
    for call in delta.get("tool_calls") or ():
        if not isinstance(call, dict):
            continue
        raw_function = call.get("function")
        function: dict[str, Any] = raw_function if isinstance(raw_function, dict) else {}
        call_id = call.get("id") or None
        arguments = function.get("arguments") or ""
        if not isinstance(arguments, str):  # some servers send the arguments as an object
            arguments = json.dumps(arguments)
        call_index = progress.call_index(index, call.get("index"), call_id)
        if arguments:
            arguments = joiner.join(("arguments", index, call_index), arguments)
        events.append(
            ToolCallDelta(
                index=call_index,
                id=repair(str(call_id)) if call_id is not None else None,
                name=repair(str(function["name"])) if function.get("name") else None,
                arguments=arguments,
                choice=index,
            )
        )
    return events


MIN_SECRET_LENGTH = 8


def error_event(exc: BaseException, *, secret: str | None = None) -> Error:
    """The ``error`` event describing why a job failed with ``exc``.

    ``secret`` (the API key) is masked out: some servers quote the key they refused. A
    placeholder shorter than :data:`MIN_SECRET_LENGTH` (``x`` for a local server) is not: it
    would mask pieces of ordinary words.
    """
    code, retryable = _classify(exc)
    message = str(exc) or type(exc).__name__
    if code == "upstream_timeout" and _refused(exc):
        # The aiohttp transport reports a refused connection as a connect timeout.
        code, message = "upstream_connection", "Connection error."
    if code == "upstream_protocol":  # the same words whichever parser noticed
        message = f"the upstream sent a malformed stream ({type(exc).__name__})"
    if isinstance(exc, openai.APIStatusError):
        message = f"upstream answered HTTP {exc.status_code}: {_upstream_message(exc)}"
    elif isinstance(exc, openai.APIConnectionError):  # "Connection error.": say where, and why
        message = _unreachable(exc, message)
    if secret and len(secret) >= MIN_SECRET_LENGTH:
        message = message.replace(secret, "***")
    hinted = retry_after(exc)
    return Error(code=code, message=message[:2000], retryable=retryable, retry_after=hinted)


def _unreachable(exc: openai.APIConnectionError, message: str) -> str:
    """``message`` with the URL that could not be reached (no credentials, no query string:
    some servers take a key there) and the network error underneath, if any."""
    try:
        url = _shown_url(str(exc.request.url))
    except RuntimeError:  # an error built without a request
        return message
    cause = exc.__cause__
    reason = f" ({type(cause).__name__}: {cause})" if cause is not None and str(cause) else ""
    timed_out = isinstance(exc, openai.APITimeoutError) and not _refused(exc)
    what = "timed out" if timed_out else "failed"
    return f"{message.rstrip('.')}: the request to {url} {what}{reason}"


def _refused(exc: BaseException) -> bool:
    """Whether a connection was refused or reset somewhere under ``exc`` (its causes)."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, ConnectionError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def _shown_url(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _classify(exc: BaseException) -> tuple[str, bool]:
    match exc:
        case openai.RateLimitError():
            return "upstream_rate_limited", True
        case openai.AuthenticationError():
            return "upstream_unauthorized", False
        case openai.PermissionDeniedError():
            return "upstream_forbidden", False
        case openai.NotFoundError():
            return "upstream_not_found", False
        case openai.BadRequestError() | openai.UnprocessableEntityError():
            return "upstream_bad_request", False
        case openai.APIStatusError() if exc.status_code >= 500:
            return "upstream_server_error", True
        case openai.APIStatusError():
            return "upstream_error", exc.status_code in (408, 409)
        case openai.APITimeoutError():
            return "upstream_timeout", True
        case openai.APIConnectionError():
            return "upstream_connection", True
        case openai.APIError():
            return "upstream_error", True
        case IncompleteStream():
            return "upstream_incomplete", True
        case (
            UnicodeDecodeError()
            | json.JSONDecodeError()
            | pydantic.ValidationError()
            | UpstreamProtocolError()
        ):
            return "upstream_protocol", True
        case TimeoutError():
            return "timeout", True
        case _:
            return "internal", False


# Error types and codes that servers put in an error event inside a 200 stream, by the HTTP
# status they stand for (OpenAI's, Anthropic's and common proxies' names).
_STATUS_OF_ERROR_NAME = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "invalid_api_key": 401,
    "permission_denied": 403,
    "permission_error": 403,
    "not_found_error": 404,
    "model_not_found": 404,
    "rate_limit_error": 429,
    "rate_limit_exceeded": 429,
    "insufficient_quota": 429,
    "tokens": 429,
    "requests": 429,
    "server_error": 500,
    "api_error": 500,
    "overloaded_error": 529,
}


_STATUS_ERRORS: dict[int, type[openai.APIStatusError]] = {
    400: openai.BadRequestError,
    401: openai.AuthenticationError,
    403: openai.PermissionDeniedError,
    404: openai.NotFoundError,
    409: openai.ConflictError,
    422: openai.UnprocessableEntityError,
    429: openai.RateLimitError,
}


def status_error_in_body(exc: openai.APIError) -> openai.APIStatusError | None:
    """The status error an error event inside a 200 stream names (``{"error": {"code": 429}}``
    or ``{"type": "rate_limit_error"}``), so it is retried or not like that HTTP status."""
    if isinstance(exc, openai.APIStatusError) or not isinstance(exc.body, dict):
        return None
    body = exc.body.get("error", exc.body)
    if not isinstance(body, dict):
        return None
    status = None
    for key in ("status", "status_code", "code", "type"):
        value = body.get(key)
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        if type(value) is int and 400 <= value <= 599:
            status = value
        elif isinstance(value, str):
            status = _STATUS_OF_ERROR_NAME.get(value)
        if status is not None:
            break
    if status is None:
        return None
    error_class = _STATUS_ERRORS.get(status, openai.APIStatusError)
    if status >= 500:
        error_class = openai.InternalServerError
    response = httpx2.Response(status, request=exc.request)
    return error_class(exc.message, response=response, body=body)


def _upstream_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return str(inner["message"])
    return exc.message
