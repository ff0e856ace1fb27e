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


class Authenticator:
    """Maps a request's ``Authorization: Bearer TOKEN`` to its tenant."""

    def __init__(self, config: GatewayConfig) -> None:
        self._tokens = [(token.encode(), tenant) for token, tenant in config.tokens.items()]
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

    def _refuse(self, request: Request, what: str) -> NoReturn:
        client = request.client.host if request.client else "?"
        logger.info("401 for %s %s from %s: %s", request.method, request.url.path, client, what)
        raise ApiError(
            401,
            "unauthorized",
            "send 'Authorization: Bearer TOKEN' with a token from STREAMQ_GATEWAY_TOKENS",
            CHALLENGE,
        )
