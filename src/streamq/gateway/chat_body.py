"""The JSON body of a chat request, split the way :meth:`StreamQ.enqueue` takes it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from streamq.gateway.errors import ApiError

OPTION_NAMES = ("deadline", "idle_timeout", "buffered")


@dataclass(frozen=True)
class ChatBody:
    """Messages, model, streamq options (deadline, idle_timeout, buffered) and OpenAI parameters.

    Validation of the values is :func:`streamq.core.request.build_request`'s job, as for any
    producer.
    """

    messages: Any
    model: Any
    options: dict[str, Any]
    params: dict[str, Any]

    @classmethod
    def parse(cls, body: dict[str, Any]) -> ChatBody:
        """Split ``body``; the caller has already taken out fields of its own (``stream``)."""
        body = dict(body)
        if "job_id" in body:
            raise ApiError(
                400, "invalid_request", "job_id is not a body field: send an Idempotency-Key header"
            )
        if "messages" not in body:
            raise ApiError(400, "invalid_request", "messages is required")
        options = {name: body.pop(name) for name in OPTION_NAMES if name in body}
        return cls(body.pop("messages"), body.pop("model", None), options, body)
