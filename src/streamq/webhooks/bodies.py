"""What a webhook posts when a job ends: OpenAI's event shape for a ``/v1/responses``
response, a documented one of the same form for a plain job (docs/operations.md, "Webhooks").

Built once from the job's terminal entry (and, for a stored response, its stream replayed as
``/v1/responses`` replays it) and kept in the delivery's record: every retry, by any worker,
posts the same ids and the same body.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from streamq.core.events import Cancelled, Done, Error, Event, entry_order
from streamq.responses.events import INCOMPLETE_REASONS

# The statuses a Response ends with, each the name of OpenAI's webhook event.
RESPONSE_ENDS = frozenset({"completed", "failed", "incomplete", "cancelled"})


@dataclass(frozen=True)
class Notice:
    """One ended job's webhook: its ``webhook-id``, event type and JSON body."""

    message_id: str
    type: str
    body: str


def notice(
    job_id: str, terminal: Event, response_id: str | None = None, status: str | None = None
) -> Notice:
    """The webhook for job ``job_id`` ended by ``terminal``; with ``response_id`` (the job
    answers a ``/v1/responses`` response) in OpenAI's shape, for the Response's ``status``
    (by default the one ``terminal`` gives)."""
    digest = hashlib.sha256(f"{job_id}\n{terminal.cursor}".encode()).hexdigest()[:32]
    created_at = entry_order(terminal.cursor)[0] // 1000
    data: dict[str, Any]
    if response_id is not None:
        kind = f"response.{status}" if status in RESPONSE_ENDS else response_type(terminal)
        data = {"id": response_id}
    else:
        kind = "job." + terminal.type
        data = job_data(job_id, terminal)
    body = {"id": f"evt_{digest}", "object": "event", "type": kind, "created_at": created_at}
    body["data"] = data
    text = json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return Notice(f"msg_{digest}", kind, text)


def response_type(terminal: Event) -> str:
    """The event a response that ended with ``terminal`` gets, as ``/v1/responses`` ends it."""
    if isinstance(terminal, Done):
        incomplete = (terminal.finish_reason or "") in INCOMPLETE_REASONS
        return "response.incomplete" if incomplete else "response.completed"
    if isinstance(terminal, Cancelled):
        return "response.cancelled"
    return "response.failed"


def job_data(job_id: str, terminal: Event) -> dict[str, Any]:
    """``data`` of a plain job's event: its id and status, the error or the usage."""
    data: dict[str, Any] = {"id": job_id, "status": terminal.type}
    if isinstance(terminal, Error):
        data["error"] = {"code": terminal.code, "message": terminal.message}
    elif isinstance(terminal, Done):
        data["finish_reason"] = terminal.finish_reason
        if terminal.usage is not None:
            data["usage"] = terminal.usage
    elif isinstance(terminal, Cancelled) and terminal.usage is not None:
        data["usage"] = terminal.usage
    return data
