"""Gateway settings: bearer tokens and their tenants, CORS, SSE timing; read on purpose."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from streamq.exceptions import ConfigError
from streamq.settings import _merged_environment, _Reader

TENANT_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MIN_TOKEN_LENGTH = 16
ANONYMOUS = "anonymous"


@dataclass(frozen=True)
class GatewayConfig:
    """How the gateway authenticates and streams; build it with :meth:`from_env`.

    ``tokens`` maps each bearer token to its tenant. With no tokens the gateway refuses to
    start unless ``allow_anonymous`` is set (``streamq serve --open`` or ``--demo``): then every
    caller is the one tenant ``anonymous``. ``max_stream_seconds`` ends each event stream after
    that long (clients resume with ``Last-Event-ID``), e.g. to rebalance long-lived connections.
    """

    tokens: Mapping[str, str] = field(default_factory=dict, repr=False)
    allow_anonymous: bool = False
    cors_origins: tuple[str, ...] = ()
    keepalive: float = 15.0
    max_stream_seconds: float | None = None

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        env_file: str | os.PathLike[str] | None = None,
        allow_anonymous: bool = False,
    ) -> GatewayConfig:
        """Read ``STREAMQ_GATEWAY_*`` from ``environ`` (default: ``os.environ`` over ``./.env``)."""
        env = _merged_environment(environ, env_file)
        read = _Reader(env)
        return cls(
            tokens=parse_tokens(env.get("STREAMQ_GATEWAY_TOKENS", "")),
            allow_anonymous=allow_anonymous,
            cors_origins=tuple(
                origin.strip()
                for origin in env.get("STREAMQ_GATEWAY_CORS_ORIGINS", "").split(",")
                if origin.strip()
            ),
            keepalive=read.number("STREAMQ_GATEWAY_KEEPALIVE", cls.keepalive, float),
            # 0.0 only when unset: the reader refuses zero and negative values.
            max_stream_seconds=read.number("STREAMQ_GATEWAY_MAX_STREAM_SECONDS", 0.0, float)
            or None,
        )

    def __post_init__(self) -> None:
        for token, tenant in self.tokens.items():
            check_token(token, tenant)
        if self.keepalive <= 0:
            raise ConfigError(f"keepalive must be a positive number, got {self.keepalive!r}")
        if self.max_stream_seconds is not None and self.max_stream_seconds <= 0:
            raise ConfigError(
                f"max_stream_seconds must be positive or None, got {self.max_stream_seconds!r}"
            )
        for origin in self.cors_origins:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise ConfigError(
                    f"STREAMQ_GATEWAY_CORS_ORIGINS: {origin!r} is not an origin "
                    "(expected e.g. https://app.example.com, or *)"
                )

    @property
    def open(self) -> bool:
        """Whether requests need no token (no tokens configured, anonymous access allowed)."""
        return not self.tokens and self.allow_anonymous


def parse_tokens(raw: str) -> dict[str, str]:
    """``"token1=tenantA,token2=tenantB"`` as ``{token: tenant}``."""
    tokens: dict[str, str] = {}
    for number, item in enumerate(raw.split(","), start=1):
        item = item.strip()
        if not item:
            continue
        token, sep, tenant = item.partition("=")
        if not sep:
            raise ConfigError(
                f"STREAMQ_GATEWAY_TOKENS: item {number} is not TOKEN=TENANT "
                "(expected e.g. 'token1=tenantA,token2=tenantB')"
            )
        check_token(token.strip(), tenant.strip(), where=f"STREAMQ_GATEWAY_TOKENS item {number}")
        if token.strip() in tokens:
            raise ConfigError(f"STREAMQ_GATEWAY_TOKENS: item {number} repeats a token")
        tokens[token.strip()] = tenant.strip()
    return tokens


def check_token(token: str, tenant: str, where: str = "gateway token") -> None:
    """Raise :class:`ConfigError` for a weak token or a malformed tenant name (token unsaid)."""
    if len(token) < MIN_TOKEN_LENGTH or any(c.isspace() or c in ",=" for c in token):
        raise ConfigError(
            f"{where}: tokens need at least {MIN_TOKEN_LENGTH} characters, without spaces, "
            "commas or '=' (e.g. from `python -c 'import secrets; print(secrets.token_urlsafe())'`)"
        )
    if not TENANT_PATTERN.match(tenant):
        raise ConfigError(
            f"{where}: tenant {tenant!r} is not valid: use 1-64 characters from "
            "A-Z a-z 0-9 . _ -, starting with a letter or digit"
        )
