"""Bearer tokens to tenants. Tokens are compared in constant time and never logged."""

from __future__ import annotations

import hmac
import logging
from typing import NoReturn

from starlette.requests import Request

from streamq.gateway.config import ANONYMOUS, GatewayConfig
from streamq.gateway.errors import ApiError

logger = logging.getLogger("streamq.gateway")

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="streamq"'}
TENANT_HINT = "a token from STREAMQ_GATEWAY_TOKENS"
ADMIN_HINT = "an operator's token from STREAMQ_GATEWAY_ADMIN_TOKENS"


class Authenticator:
    """Maps a request's ``Authorization: Bearer TOKEN`` to its tenant."""

    def __init__(self, config: GatewayConfig) -> None:
        self._tokens = [(token.encode(), tenant) for token, tenant in config.tokens.items()]
        self._admin_tokens = [token.encode() for token in config.admin_tokens]
        self._open = config.open

    def tenant(self, request: Request) -> str:
        """The caller's tenant; raises a 401 :class:`ApiError` without a known token."""
        if self._open:
            return ANONYMOUS
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            self._refuse(request, "no bearer token")
        candidate = presented.strip().encode()
        found = None
        for token, tenant in self._tokens:  # every token, so the timing tells nothing
            if hmac.compare_digest(token, candidate):
                found = tenant
        if found is None:
            self._refuse(request, "an unknown bearer token")
        return found

    def admin(self, request: Request) -> None:
        """Let an operator through: 401 without a known token, 403 for a tenant's token."""
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            self._refuse(request, "no bearer token", ADMIN_HINT)
        candidate = presented.strip().encode()
        admin = tenant = False
        for token in self._admin_tokens:  # every token, so the timing tells nothing
            admin |= hmac.compare_digest(token, candidate)
        for token, _ in self._tokens:
            tenant |= hmac.compare_digest(token, candidate)
        if admin:
            return
        if tenant:
            client = request.client.host if request.client else "?"
            logger.info("403 for %s %s from %s: a tenant token", request.method, request.url.path,
                        client)  # fmt: skip
            raise ApiError(403, "forbidden", f"this is a tenant token; {ADMIN_HINT}")
        self._refuse(request, "an unknown bearer token", ADMIN_HINT)

    def _refuse(self, request: Request, what: str, hint: str = TENANT_HINT) -> NoReturn:
        client = request.client.host if request.client else "?"
        logger.info("401 for %s %s from %s: %s", request.method, request.url.path, client, what)
        raise ApiError(
            401,
            "unauthorized",
            f"send 'Authorization: Bearer TOKEN' with {hint}",
            CHALLENGE,
        )
