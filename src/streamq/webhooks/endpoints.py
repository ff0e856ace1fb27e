"""Where webhooks go: only endpoints the operator configured (``STREAMQ_WEBHOOK_URL``,
``STREAMQ_WEBHOOK_TENANTS``), never a URL from a request, so no caller can aim a worker at an
address of its choosing."""

from __future__ import annotations

from dataclasses import dataclass, field

from streamq.core.settings import Settings

FLEET = "fleet"
TENANT_PREFIX = "tenant:"


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
