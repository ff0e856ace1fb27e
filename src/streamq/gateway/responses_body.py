"""The JSON body of ``POST /v1/responses``: what the door decides itself (``stream``,
``background``, ``store``, ``previous_response_id``) apart from what the job carries.

The values the job carries are validated by
:func:`~streamq.responses.request.build_responses_request`, as for any producer; fields OpenAI
does not define travel to the upstream in the job's ``extra_body``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from streamq.gateway.errors import ApiError
from streamq.responses.request import PARAMS, RESERVED

OPTION_NAMES = ("deadline", "idle_timeout")
UNSUPPORTED = {
    "conversation": "conversation is not supported: chain turns with previous_response_id",
    "prompt": "prompt templates are not supported: send instructions and input",
}


@dataclass(frozen=True)
class ResponsesBody:
    """A ``POST /v1/responses`` body, split."""

    input: Any
    model: Any
    instructions: Any
    params: dict[str, Any]
    options: dict[str, Any]
    stream: bool = False
    background: bool = False
    store: bool = True
    previous_response_id: str | None = None

    @classmethod
    def parse(cls, body: dict[str, Any]) -> ResponsesBody:
        """Split ``body``; a 400 :class:`ApiError` for what the door itself refuses."""
        body = dict(body)
        if "job_id" in body:
            raise ApiError(
                400, "invalid_request", "job_id is not a body field: send an Idempotency-Key header"
            )
        for name, message in UNSUPPORTED.items():
            if body.get(name) is not None:
                raise ApiError(400, "unsupported_parameter", message)
            body.pop(name, None)
        if "input" not in body:
            raise ApiError(400, "invalid_request", "input is required")
        stream, background = _flag(body, "stream", False), _flag(body, "background", False)
        store = _flag(body, "store", True)
        if background and not store:
            raise ApiError(
                400,
                "invalid_request",
                "background responses must be stored: a background response with store=false "
                "could never be read",
            )
        options = body.pop("stream_options", None)
        if options is not None and not isinstance(options, dict):
            raise ApiError(400, "invalid_request", "stream_options must be an object")
        previous = body.pop("previous_response_id", None)
        if previous is not None and not isinstance(previous, str):
            raise ApiError(400, "invalid_request", "previous_response_id must be a string")
        _move_provider_fields(body)
        return cls(
            input=body.pop("input"),
            model=body.pop("model", None),
            instructions=body.pop("instructions", None),
            options={name: body.pop(name) for name in OPTION_NAMES if name in body},
            params=body,
            stream=stream,
            background=background,
            store=store,
            previous_response_id=previous,
        )


def _flag(body: dict[str, Any], name: str, default: bool) -> bool:
    value = body.pop(name, None)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ApiError(400, "invalid_request", f"{name} must be true or false")
    return value


def _move_provider_fields(body: dict[str, Any]) -> None:
    # As the chat door does: the SDK's extra_body arrives at the top level.
    known = PARAMS | RESERVED | set(OPTION_NAMES)
    extra = {name: body.pop(name) for name in list(body) if name not in known}
    nested = body.get("extra_body")
    if extra and (nested is None or isinstance(nested, dict)):  # else the request check says why
        body["extra_body"] = {**extra, **(nested or {})}
