"""A finished job as a ``chat.completion``: the last attempt's answer, with its log probabilities,
the upstream's model name and system fingerprint."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from streamq.core.events import (
    Delta,
    Done,
    Event,
    Meta,
    Reasoning,
    Refusal,
    Reset,
    Start,
    ToolCallDelta,
)


@dataclass
class _Choice:
    content: str = ""
    reasoning: str = ""
    refusal: str | None = None
    tool_calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    content_logprobs: list[dict[str, Any]] | None = None
    refusal_logprobs: list[dict[str, Any]] | None = None

    def message(self) -> dict[str, Any]:
        calls = [self.tool_calls[i] for i in sorted(self.tool_calls)]
        message: dict[str, Any] = {
            "role": "assistant",
            "content": self.content if self.content or not calls else None,
            "refusal": self.refusal,
        }
        if self.reasoning:
            message["reasoning_content"] = self.reasoning
        if calls:
            message["tool_calls"] = calls
        return message

    def logprobs(self) -> dict[str, Any] | None:
        if self.content_logprobs is None and self.refusal_logprobs is None:
            return None
        return {"content": self.content_logprobs, "refusal": self.refusal_logprobs}


class CompletionBuilder:
    """Collects a job's events; :meth:`build` the ``chat.completion`` once it is ``done``."""

    def __init__(self, job_id: str, model: str) -> None:
        self.job_id = job_id
        self._requested = model
        self._meta = Meta()
        self._choices: dict[int, _Choice] = {}

    def add(self, event: Event) -> None:
        """Take the next event of the job's stream (a new attempt starts over)."""
        match event:
            case Reset() | Start():
                self._meta, self._choices = Meta(), {}
                if isinstance(event, Start):
                    self._requested = event.model
            case Meta():
                self._meta = event
            case Delta() | Reasoning() | Refusal():
                self._add_text(event)
            case ToolCallDelta():
                choice = self._choices.setdefault(event.choice, _Choice())
                call = choice.tool_calls.setdefault(
                    event.index, {"id": None, "type": "function", "function": {"arguments": ""}}
                )
                call["id"] = event.id or call["id"]
                if event.name:
                    call["function"]["name"] = event.name
                call["function"]["arguments"] += event.arguments

    def _add_text(self, event: Delta | Reasoning | Refusal) -> None:
        choice = self._choices.setdefault(event.choice, _Choice())
        tokens = event.logprobs or []
        if isinstance(event, Refusal):
            choice.refusal = (choice.refusal or "") + event.text
            if event.logprobs is not None:
                choice.refusal_logprobs = (choice.refusal_logprobs or []) + tokens
            return
        if isinstance(event, Delta):
            choice.content += event.text
        else:
            choice.reasoning += event.text
        if event.logprobs is not None:
            choice.content_logprobs = (choice.content_logprobs or []) + tokens

    def build(self, done: Done) -> dict[str, Any]:
        """The ``chat.completion`` of the attempt that ended with ``done``."""
        reasons = done.finish_reasons or [done.finish_reason]
        indexes = sorted(set(range(len(reasons))) | set(self._choices))
        choices = []
        for index in indexes:
            choice = self._choices.get(index, _Choice())
            choices.append(
                {
                    "index": index,
                    "message": choice.message(),
                    "logprobs": choice.logprobs(),
                    "finish_reason": reasons[index] if index < len(reasons) else None,
                }
            )
        return {
            "id": f"chatcmpl-{self.job_id}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self._meta.model or done.model or self._requested,
            "system_fingerprint": self._meta.system_fingerprint or done.system_fingerprint,
            "choices": choices,
            "usage": done.usage,
        }
