"""Gateway settings: bearer tokens and their tenants, CORS, SSE timing, limits on clients."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from streamq.core.exceptions import ConfigError
from streamq.core.keys import DEFAULT_TENANT, TENANT_PATTERN
from streamq.core.settings import EnvReader, merged_environment

MIN_TOKEN_LENGTH = 16
ANONYMOUS = DEFAULT_TENANT
OFF = "off"
T = TypeVar("T", int, float)


@dataclass(frozen=True)
class GatewayConfig:
    """How the gateway authenticates and streams; build it with :meth:`from_env`.

    ``tokens`` maps each bearer token to its tenant. With no tokens the gateway refuses to
    start unless ``allow_anonymous`` is set (``streamq serve --open`` or ``--demo``): then every
    caller is the one tenant ``anonymous``. ``max_stream_seconds`` ends each event stream after
    that long (clients resume with ``Last-Event-ID``), e.g. to rebalance long-lived connections.

    Slow and greedy clients: a request's head must arrive within ``header_timeout`` seconds and
    its body within ``body_timeout``; each tenant holds at most ``max_streams`` responses that
    follow a job (event streams, chat completions) and makes at most ``rate_limit`` requests a
    second, in bursts of ``rate_burst`` (``None``: no limit). Limits count per gateway process.

    The OpenAI door: a streamed answer's head waits up to ``header_hold`` seconds for the job's
    first chunk or its end, so a failure before any text gets its HTTP status (``None``: send
    the head at once); ``models`` is what ``GET /v1/models`` lists (empty: the worker's
    default model, ``OPENAI_MODEL``).

    ``admin_tokens`` open the operators' page ``/admin`` and its ``/admin/api`` (none: no
    ``/admin``); they are not tenant tokens, and a tenant token never opens ``/admin``.
    """

    tokens: Mapping[str, str] = field(default_factory=dict, repr=False)
    allow_anonymous: bool = False
    cors_origins: tuple[str, ...] = ()
    keepalive: float = 15.0
    max_stream_seconds: float | None = None
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_streams: int | None = 100
    rate_limit: float | None = 50.0
    rate_burst: int = 100
    header_hold: float | None = 20.0
    models: tuple[str, ...] = ()
    admin_tokens: tuple[str, ...] = field(default=(), repr=False)

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        env_file: str | os.PathLike[str] | None = None,
        allow_anonymous: bool = False,
    ) -> GatewayConfig:
        """Read ``STREAMQ_GATEWAY_*`` from ``environ`` (default: ``os.environ`` over ``./.env``)."""
        env = merged_environment(environ, env_file)
        read = EnvReader(env)
        return cls(
            tokens=parse_tokens(env.get("STREAMQ_GATEWAY_TOKENS", "")),
            allow_anonymous=allow_anonymous,
            cors_origins=_names(env.get("STREAMQ_GATEWAY_CORS_ORIGINS", "")),
            keepalive=read.number("STREAMQ_GATEWAY_KEEPALIVE", cls.keepalive, float),
            # 0.0 only when unset: the reader refuses zero and negative values.
            max_stream_seconds=read.number("STREAMQ_GATEWAY_MAX_STREAM_SECONDS", 0.0, float)
            or None,
            header_timeout=read.number("STREAMQ_GATEWAY_HEADER_TIMEOUT", cls.header_timeout, float),
            body_timeout=read.number("STREAMQ_GATEWAY_BODY_TIMEOUT", cls.body_timeout, float),
            max_streams=_limit(read, "STREAMQ_GATEWAY_MAX_STREAMS", 100, int),
            rate_limit=_limit(read, "STREAMQ_GATEWAY_RATE_LIMIT", 50.0, float),
            rate_burst=read.number("STREAMQ_GATEWAY_RATE_BURST", cls.rate_burst, int),
            header_hold=_limit(read, "STREAMQ_GATEWAY_HEADER_HOLD", 20.0, float),
            models=_names(env.get("STREAMQ_GATEWAY_MODELS", "")),
            admin_tokens=_names(env.get("STREAMQ_GATEWAY_ADMIN_TOKENS", "")),
        )

    def __post_init__(self) -> None:
        for token, tenant in self.tokens.items():
            check_token(token, tenant)
        for number, token in enumerate(self.admin_tokens, start=1):
            where = f"STREAMQ_GATEWAY_ADMIN_TOKENS item {number}"
            check_token(token, "admin", where=where)
            if token in self.tokens:
                raise ConfigError(f"{where} is also a tenant token: give operators their own")
        if self.keepalive <= 0:
            raise ConfigError(f"keepalive must be a positive number, got {self.keepalive!r}")
        if self.max_stream_seconds is not None and self.max_stream_seconds <= 0:
            raise ConfigError(
                f"max_stream_seconds must be positive or None, got {self.max_stream_seconds!r}"
            )
        limits = ("header_timeout", "body_timeout", "max_streams", "rate_limit", "rate_burst")
        for name in (*limits, "header_hold"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"{name} must be a positive number, got {value!r}")
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


def _names(raw: str) -> tuple[str, ...]:
    """A comma-separated list, without blanks."""
    return tuple(name.strip() for name in raw.split(",") if name.strip())


def _limit(read: EnvReader, name: str, default: T, kind: Callable[[str], T]) -> T | None:
    """A positive limit, or ``None`` for ``off``."""
    if read.text(name, "").lower() == OFF:
        return None
    return read.number(name, default, kind)


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
