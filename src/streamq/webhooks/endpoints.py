"""Where webhooks go: only endpoints the operator configured (``STREAMQ_WEBHOOK_URL``,
``STREAMQ_WEBHOOK_TENANTS``), never a URL from a request, so no caller can aim a worker at an
address of its choosing."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from streamq.core.settings import Settings

FLEET = "fleet"
TENANT_PREFIX = "tenant:"
BREAK_AFTER = 5  # failures in a row before a worker holds its posts to an endpoint back
MAX_PAUSE = 60.0  # seconds; the pause before the next probe doubles up to this


@dataclass(frozen=True)
class Endpoint:
    """One receiver: ``name`` is what Redis, logs and ``streamq inspect`` show of it."""

    name: str
    url: str = field(repr=False)
    secret: str = field(repr=False)


def configured(settings: Settings) -> bool:
    """Whether any webhook endpoint is configured (else workers do nothing for webhooks)."""
    return settings.webhook_url is not None or bool(settings.webhook_tenants)


def endpoints_for(settings: Settings, tenant: str | None) -> list[Endpoint]:
    """The endpoints an ended job of ``tenant`` is posted to: the fleet's, and its tenant's."""
    found = []
    if settings.webhook_url is not None and settings.webhook_secret:
        found.append(Endpoint(FLEET, settings.webhook_url, settings.webhook_secret))
    if tenant is not None and tenant in settings.webhook_tenants:
        url, secret = settings.webhook_tenants[tenant]
        found.append(Endpoint(TENANT_PREFIX + tenant, url, secret))
    return found


@dataclass
class _Record:
    failures: int = 0
    pause: float = 0.0  # 0 while posts go freely
    paused_until: float = 0.0
    probing: bool = False


class EndpointHealth:
    """One worker's view of its endpoints. After ``BREAK_AFTER`` failures in a row its posts to
    an endpoint are held back: one probe at a time, after a pause that doubles up to
    ``MAX_PAUSE``; a success lets them all go again. So an endpoint that hangs until every post
    times out holds one post of the worker's, not all of them."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._records: dict[str, _Record] = {}

    def may_post(self, name: str) -> bool:
        """Whether to post to endpoint ``name`` now (if not, the delivery waits its backoff)."""
        record = self._records.get(name)
        if record is None or record.failures < BREAK_AFTER:
            return True
        if record.probing or self._clock() < record.paused_until:
            return False
        record.probing = True
        return True

    def posted(self, name: str, ok: bool) -> None:
        """Count a post's outcome."""
        record = self._records.setdefault(name, _Record())
        probe, record.probing = record.probing, False
        if ok:
            record.failures, record.pause = 0, 0.0
            return
        record.failures += 1
        # The first pause, or a failed probe's longer one; posts already out when it began
        # (failing together, as they do) do not lengthen it.
        if record.failures >= BREAK_AFTER and (probe or not record.pause):
            record.pause = min(record.pause * 2, MAX_PAUSE) if record.pause else 1.0
            record.paused_until = self._clock() + record.pause
