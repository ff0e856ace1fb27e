"""Token and request budgets: what a generation is estimated to cost, and which budgets it
counts against.

A budget (``STREAMQ_MODEL_BUDGETS``, ``STREAMQ_TENANT_BUDGETS``) allows so many tokens and
requests in any window of ``STREAMQ_BUDGET_WINDOW`` seconds. A generation is admitted when its
estimate fits every budget that applies (``Admission`` decides, in Redis, for the whole fleet);
when it ends, the upstream's real ``usage`` replaces the estimate in the window. The estimate
is a quarter of the characters of the prompt's text, 4 tokens a message, plus the request's
maximum output (``max_tokens``, ``max_completion_tokens`` or ``max_output_tokens``) or
``STREAMQ_BUDGET_OUTPUT_TOKENS`` when it sets none.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from streamq.core.request import ChatRequest
from streamq.core.settings import Budget
from streamq.responses.request import ResponsesRequest

ANY = "*"
CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4
OUTPUT_PARAMS = ("max_completion_tokens", "max_tokens", "max_output_tokens")


@dataclass(frozen=True)
class Ask:
    """What one generation asks of the budgets: its estimated tokens, its model's budget and its
    tenant's (None: that one does not apply), over windows of ``window`` seconds."""

    tokens: int
    window: float
    model: Budget | None = None
    tenant: str | None = None
    tenant_budget: Budget | None = None


class Budgets:
    """The configured budgets, and what a job asks of them."""

    def __init__(
        self,
        models: Mapping[str, Budget],
        tenants: Mapping[str, Budget],
        *,
        window: float,
        output_tokens: int,
    ) -> None:
        self._models = dict(models)
        self._tenants = dict(tenants)
        self._output_tokens = output_tokens
        self._window = window

    @property
    def per_tenant(self) -> bool:
        """Whether any tenant has a budget (only then is a job's owner worth reading)."""
        return bool(self._tenants)

    def for_model(self, model: str) -> Budget | None:
        """``model``'s budget, or None when it has none."""
        return self._models.get(model, self._models.get(ANY))

    def ask(
        self, model: str, tenant: str | None, request: ChatRequest | ResponsesRequest
    ) -> Ask | None:
        """What the job asks of the budgets, or None when none applies to it."""
        model_budget = self.for_model(model)
        tenant_budget = (
            None if tenant is None else self._tenants.get(tenant, self._tenants.get(ANY))
        )
        if model_budget is None and tenant_budget is None:
            return None
        tokens = estimate_tokens(request, self._output_tokens)
        tenant = tenant if tenant_budget is not None else None
        return Ask(tokens, self._window, model_budget, tenant, tenant_budget)


def estimate_tokens(request: ChatRequest | ResponsesRequest, output_tokens: int) -> int:
    """The tokens a request is expected to cost: its prompt's estimate plus its maximum output
    (``output_tokens`` when it sets none)."""
    if isinstance(request, ResponsesRequest):
        items: list[Any] = [*request.input, request.instructions or ""]
    else:
        items = list(request.messages)
    chars = sum(_text_length(item) for item in items)
    prompt = math.ceil(chars / CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE * len(items)
    maximum = next(
        (
            request.params[name]
            for name in OUTPUT_PARAMS
            if isinstance(request.params.get(name), int)
        ),
        output_tokens,
    )
    return prompt + max(0, maximum)


def used_tokens(usage: Mapping[str, Any] | None) -> int | None:
    """The tokens a finished generation used, from its chat-shaped ``usage`` (None: unknown)."""
    if not usage:
        return None
    total = usage.get("total_tokens")
    if isinstance(total, int) and not isinstance(total, bool):
        return max(0, total)
    parts = [usage.get("prompt_tokens"), usage.get("completion_tokens")]
    if all(isinstance(part, int) and not isinstance(part, bool) for part in parts):
        return max(0, sum(parts))  # type: ignore[arg-type]
    return None


def _text_length(value: object) -> int:
    """Characters of the strings in a message (its content, tool calls' arguments...), keys
    and roles excepted."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, Mapping):
        return sum(_text_length(v) for k, v in value.items() if k not in ("role", "type"))
    if isinstance(value, list):
        return sum(_text_length(v) for v in value)
    return 0
