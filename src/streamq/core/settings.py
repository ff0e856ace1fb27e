"""Settings: a frozen dataclass read on purpose from the environment and an optional ``.env``."""

from __future__ import annotations

import base64
import binascii
import difflib
import math
import os
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from dotenv import dotenv_values

from streamq.core.exceptions import ConfigError, InvalidRequest
from streamq.core.keys import Keys, check_tenant
from streamq.core.redis_urls import CLUSTER_SCHEMES, SENTINEL_SCHEMES, SentinelURL, cluster_nodes

T = TypeVar("T")

DEFAULT_MODEL = "gpt-4o-mini"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("text", "json")
PARSERS = ("fast", "sdk")
UPSTREAM_APIS = ("chat", "responses")
MAX_PORT = 65_535
MAX_PUBLISH_LINGER = 1.0  # seconds: more would read as a stalled stream
BUDGET_PART = re.compile(r"(\d[\d_]*)\s*(tpm|rpm)")
PREFIX = "STREAMQ_"
# Every STREAMQ_* variable any part of streamq reads (tests/test_settings.py checks the sources
# against it): a set variable that is not here is most likely a typo, and gets a warning.
KNOWN_VARIABLES = frozenset(
    {
        "STREAMQ_BUDGET_OUTPUT_TOKENS",
        "STREAMQ_BUDGET_WINDOW",
        "STREAMQ_CHUNK_PARSER",
        "STREAMQ_CONCURRENCY",
        "STREAMQ_DRAIN_TIMEOUT",
        "STREAMQ_FAULTS",  # the fault-injection suite's length (tests/faults)
        "STREAMQ_IDLE_TIMEOUT",
        "STREAMQ_JOB_TIMEOUT",
        "STREAMQ_KEY_PREFIX",
        "STREAMQ_LEASE",
        "STREAMQ_LOG_FORMAT",
        "STREAMQ_LOG_LEVEL",
        "STREAMQ_MAX_ATTEMPTS",
        "STREAMQ_MAX_REQUEST_BYTES",
        "STREAMQ_MAX_RETRY_DELAY",
        "STREAMQ_METRICS_PORT",
        "STREAMQ_MODEL_BUDGETS",
        "STREAMQ_MODEL_LIMITS",
        "STREAMQ_POLL_INTERVAL",
        "STREAMQ_QUEUE",
        "STREAMQ_READ_TIMEOUT",
        "STREAMQ_RETRY_DELAY",
        "STREAMQ_START_CONCURRENCY",
        "STREAMQ_PUBLISH_LINGER",
        "STREAMQ_STREAMS_URL",
        "STREAMQ_STREAM_TTL",
        "STREAMQ_TENANT_WEIGHTS",
        "STREAMQ_TENANT_BUDGETS",
        "STREAMQ_UPSTREAM_API",
        "STREAMQ_WEBHOOK_RETRY_PERIOD",
        "STREAMQ_WEBHOOK_SECRET",
        "STREAMQ_WEBHOOK_TENANTS",
        "STREAMQ_WEBHOOK_TIMEOUT",
        "STREAMQ_WEBHOOK_URL",
        "STREAMQ_GATEWAY_ADMIN_TOKENS",
        "STREAMQ_GATEWAY_BODY_TIMEOUT",
        "STREAMQ_GATEWAY_CORS_ORIGINS",
        "STREAMQ_GATEWAY_HEADER_HOLD",
        "STREAMQ_GATEWAY_HEADER_TIMEOUT",
        "STREAMQ_GATEWAY_KEEPALIVE",
        "STREAMQ_GATEWAY_MAX_STREAMS",
        "STREAMQ_GATEWAY_MAX_STREAM_SECONDS",
        "STREAMQ_GATEWAY_MODELS",
        "STREAMQ_GATEWAY_RATE_BURST",
        "STREAMQ_GATEWAY_RATE_LIMIT",
        "STREAMQ_GATEWAY_TOKENS",
    }
)


@dataclass(frozen=True)
class Budget:
    """Tokens and requests allowed in any budget window (``STREAMQ_BUDGET_WINDOW``, a minute
    by default); None: that one is not limited."""

    tokens: int | None = None
    requests: int | None = None


class UnknownSettingWarning(UserWarning):
    """A ``STREAMQ_*`` variable is set that streamq does not read: most likely a typo."""


@dataclass(frozen=True)
class Settings:
    """Everything streamq reads from the environment; build it with :meth:`from_env`."""

    redis_url: str = "redis://localhost:6379/0"
    openai_api_key: str | None = field(default=None, repr=False)
    openai_base_url: str | None = None
    openai_model: str = DEFAULT_MODEL
    queue_name: str = "streamq:queue"
    key_prefix: str = "streamq"
    concurrency: int = 100
    # Jobs a worker process starts at once (worker/start_gate.py). Paired runs of 1,000 jobs
    # within 1 s on 2 cores (benchmarks/results/profile.md), 8 against 16: p99 publish lag of
    # the running streams 33-48 against 48-74 ms, 384-429 against 421-485 starts/s.
    start_concurrency: int = 8
    # Seconds a worker's publisher holds an attempt's text after its first, for company in one
    # call (worker/publisher.py); the first text, control entries and the end go at once.
    publish_linger: float = 0.005
    stream_ttl: int = 86_400
    job_timeout: float = 600.0
    read_timeout: float = 300.0
    idle_timeout: float = 60.0
    drain_timeout: int = 30
    max_attempts: int = 3
    lease: float = 10.0
    retry_delay: float = 0.5
    max_retry_delay: float = 30.0
    poll_interval: float = 0.5
    max_request_bytes: int = 1_000_000
    log_level: str = "INFO"
    log_format: str = "text"
    model_limits: dict[str, int] = field(default_factory=dict)
    # Token and request budgets per model (per API key) and per tenant, over a sliding window.
    model_budgets: dict[str, Budget] = field(default_factory=dict)
    tenant_budgets: dict[str, Budget] = field(default_factory=dict)
    budget_window: float = 60.0
    budget_output_tokens: int = 1000  # a job's output estimate when it sets no max tokens
    # Which API the upstream speaks: the fleet's default, and models that speak another.
    upstream_api: str = "chat"
    model_upstream_apis: dict[str, str] = field(default_factory=dict)
    streams_url: str | None = None
    chunk_parser: str = "fast"
    metrics_port: int = 0  # 0: no metrics
    # Webhooks when a job ends: the fleet's endpoint and each tenant's (URL, secret).
    webhook_url: str | None = field(default=None, repr=False)  # may carry a token
    webhook_secret: str | None = field(default=None, repr=False)
    webhook_tenants: dict[str, tuple[str, str]] = field(default_factory=dict, repr=False)
    webhook_retry_period: float = 86_400.0
    webhook_timeout: float = 10.0
    # Fair sharing between tenants: each tenant's weight (1 when not listed).
    tenant_weights: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        env_file: str | os.PathLike[str] | None = None,
    ) -> Settings:
        """Read settings from ``environ`` (default: ``os.environ`` over ``./.env``).

        An explicit ``env_file`` must exist. Variables already in the environment win over the
        file, as with ``python-dotenv``'s ``load_dotenv``. A bad value raises :class:`ConfigError`
        naming the variable and what it accepts.
        """
        env = merged_environment(environ, env_file)
        for message in unknown_variables(env):
            warnings.warn(message, UnknownSettingWarning, stacklevel=2)
        read = EnvReader(env)
        prefix = read.key_prefix("STREAMQ_KEY_PREFIX", cls.key_prefix)
        fleet_api, model_apis = read.upstream_apis("STREAMQ_UPSTREAM_API", cls.upstream_api)
        return cls(
            redis_url=read.redis_url("REDIS_URL", cls.redis_url),
            openai_api_key=env.get("OPENAI_API_KEY") or None,
            openai_base_url=read.http_url("OPENAI_BASE_URL"),
            openai_model=read.text("OPENAI_MODEL", cls.openai_model),
            queue_name=read.text("STREAMQ_QUEUE", Keys(prefix).default_queue()),
            key_prefix=prefix,
            concurrency=read.number("STREAMQ_CONCURRENCY", cls.concurrency, int),
            start_concurrency=read.number("STREAMQ_START_CONCURRENCY", cls.start_concurrency, int),
            publish_linger=read.number(
                "STREAMQ_PUBLISH_LINGER", cls.publish_linger, float, zero=True
            ),
            stream_ttl=read.number("STREAMQ_STREAM_TTL", cls.stream_ttl, int),
            job_timeout=read.number("STREAMQ_JOB_TIMEOUT", cls.job_timeout, float),
            read_timeout=read.number("STREAMQ_READ_TIMEOUT", cls.read_timeout, float),
            idle_timeout=read.number("STREAMQ_IDLE_TIMEOUT", cls.idle_timeout, float),
            drain_timeout=read.number("STREAMQ_DRAIN_TIMEOUT", cls.drain_timeout, int),
            max_attempts=read.number("STREAMQ_MAX_ATTEMPTS", cls.max_attempts, int),
            lease=read.number("STREAMQ_LEASE", cls.lease, float),
            retry_delay=read.number("STREAMQ_RETRY_DELAY", cls.retry_delay, float),
            max_retry_delay=read.number("STREAMQ_MAX_RETRY_DELAY", cls.max_retry_delay, float),
            poll_interval=read.number("STREAMQ_POLL_INTERVAL", cls.poll_interval, float),
            max_request_bytes=read.number("STREAMQ_MAX_REQUEST_BYTES", cls.max_request_bytes, int),
            log_level=read.choice("STREAMQ_LOG_LEVEL", cls.log_level, LOG_LEVELS),
            log_format=read.choice("STREAMQ_LOG_FORMAT", cls.log_format, LOG_FORMATS),
            chunk_parser=read.choice("STREAMQ_CHUNK_PARSER", cls.chunk_parser, PARSERS),
            model_limits=read.limits("STREAMQ_MODEL_LIMITS"),
            model_budgets=read.budgets("STREAMQ_MODEL_BUDGETS"),
            tenant_budgets=read.budgets("STREAMQ_TENANT_BUDGETS"),
            budget_window=read.number("STREAMQ_BUDGET_WINDOW", cls.budget_window, float),
            budget_output_tokens=read.number(
                "STREAMQ_BUDGET_OUTPUT_TOKENS", cls.budget_output_tokens, int
            ),
            upstream_api=fleet_api,
            model_upstream_apis=model_apis,
            streams_url=read.streams_url("STREAMQ_STREAMS_URL"),
            metrics_port=read.port("STREAMQ_METRICS_PORT"),
            webhook_url=read.http_url("STREAMQ_WEBHOOK_URL"),
            webhook_secret=env.get("STREAMQ_WEBHOOK_SECRET") or None,
            webhook_tenants=read.webhook_tenants(
                "STREAMQ_WEBHOOK_TENANTS", env.get("STREAMQ_WEBHOOK_SECRET") or None
            ),
            webhook_retry_period=read.number(
                "STREAMQ_WEBHOOK_RETRY_PERIOD", cls.webhook_retry_period, float
            ),
            webhook_timeout=read.number("STREAMQ_WEBHOOK_TIMEOUT", cls.webhook_timeout, float),
            tenant_weights=read.weights("STREAMQ_TENANT_WEIGHTS"),
        )

    def upstream_api_for(self, model: str) -> str:
        """The API (``chat`` or ``responses``) a job for ``model`` runs against by default."""
        return self.model_upstream_apis.get(model, self.upstream_api)

    def tenant_weight(self, tenant: str) -> float:
        """``tenant``'s weight in fair sharing (``STREAMQ_TENANT_WEIGHTS``; 1 if not listed)."""
        return self.tenant_weights.get(tenant, 1.0)

    def replace(self, **changes: Any) -> Settings:
        """A copy with some fields changed (validated like the originals)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return Settings(**values)

    def __post_init__(self) -> None:
        for name in (
            "concurrency",
            "start_concurrency",
            "stream_ttl",
            "max_request_bytes",
            "drain_timeout",
            "max_attempts",
            "budget_output_tokens",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        floats = ("job_timeout", "read_timeout", "poll_interval", "idle_timeout", "lease")
        for name in (*floats, "retry_delay", "max_retry_delay", "budget_window"):
            # Finite too: an infinite idle timeout or deadline would let a silent upstream hold
            # its job forever (the SDK's own read timeout is off in the worker).
            value = getattr(self, name)
            if not value > 0 or not math.isfinite(value):
                raise ConfigError(f"{name} must be a positive number, got {value!r}")
        if not 0 <= self.publish_linger <= MAX_PUBLISH_LINGER:
            raise ConfigError(
                f"publish_linger must be 0 to {MAX_PUBLISH_LINGER} seconds, "
                f"got {self.publish_linger!r}"
            )
        for api in (self.upstream_api, *self.model_upstream_apis.values()):
            if api not in UPSTREAM_APIS:
                accepted = ", ".join(UPSTREAM_APIS)
                raise ConfigError(f"upstream_api must be one of {accepted}, got {api!r}")
        for tenant, weight in self.tenant_weights.items():
            try:
                check_tenant(tenant)
            except InvalidRequest as exc:
                raise ConfigError(f"tenant_weights: {exc}") from None
            if not (isinstance(weight, int | float) and math.isfinite(weight) and weight > 0):
                raise ConfigError(f"tenant_weights[{tenant!r}] must be positive, got {weight!r}")
        for budget in (*self.model_budgets.values(), *self.tenant_budgets.values()):
            if any(n is not None and n < 1 for n in (budget.tokens, budget.requests)):
                raise ConfigError(f"a budget allows at least 1 token and 1 request: {budget!r}")
        if not 0 <= self.metrics_port <= MAX_PORT:
            raise ConfigError(f"metrics_port must be 0 (off) to {MAX_PORT}: {self.metrics_port}")
        self._check_webhooks()

    def _check_webhooks(self) -> None:
        if self.webhook_retry_period <= 0 or self.webhook_timeout <= 0:
            raise ConfigError("webhook_retry_period and webhook_timeout must be positive")
        if self.webhook_url is not None and not self.webhook_secret:
            raise ConfigError("STREAMQ_WEBHOOK_URL needs STREAMQ_WEBHOOK_SECRET (whsec_...)")
        secrets = [self.webhook_secret] + [secret for _, secret in self.webhook_tenants.values()]
        for secret in filter(None, secrets):
            try:
                webhook_secret_key(secret)
            except ValueError:  # never echo a secret in the message
                message = "a webhook secret starting whsec_ must be base64 after it"
                raise ConfigError(message) from None


def webhook_secret_key(secret: str) -> bytes:
    """The HMAC key a webhook secret stands for, decoded as OpenAI's SDK decodes one: base64
    after a ``whsec_`` prefix, else the string's UTF-8 bytes (``ValueError`` for a ``whsec_``
    secret that is not base64)."""
    if secret.startswith("whsec_"):
        try:
            return base64.b64decode(secret[len("whsec_") :], validate=True)
        except binascii.Error:
            raise ValueError("a whsec_ secret must be base64 after its prefix") from None
    return secret.encode()


def unknown_variables(env: Mapping[str, str]) -> list[str]:
    """A warning for each ``STREAMQ_*`` variable in ``env`` that streamq does not read, naming
    the known one closest to it."""
    messages = []
    for name in sorted(env):
        if not name.startswith(PREFIX) or name in KNOWN_VARIABLES:
            continue
        close = difflib.get_close_matches(name, KNOWN_VARIABLES, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else "see .env.example for the known ones"
        messages.append(f"{name} is not a streamq setting and is ignored: {hint}")
    return messages


def merged_environment(
    environ: Mapping[str, str] | None, env_file: str | os.PathLike[str] | None
) -> dict[str, str]:
    """``environ`` (default: ``os.environ``) over the ``.env`` file (default: ``./.env``)."""
    if env_file is not None and not Path(env_file).is_file():
        raise ConfigError(f"--env-file {os.fspath(env_file)!r} does not exist")
    path = Path(env_file) if env_file is not None else Path(".env")
    from_file = {k: v for k, v in dotenv_values(path).items() if v is not None}
    return {**from_file, **(os.environ if environ is None else environ)}


class EnvReader:
    """Parses one variable at a time; every failure names the variable and the accepted values."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def _raw(self, name: str) -> str | None:
        value = self.env.get(name, "").strip()
        return value or None

    def text(self, name: str, default: str) -> str:
        return self._raw(name) or default

    def number(self, name: str, default: T, kind: Callable[[str], T], *, zero: bool = False) -> T:
        raw = self._raw(name)
        if raw is None:
            return default
        what = "a positive integer" if kind is int else "a positive number (seconds)"
        what = f"0 or {what}" if zero else what
        try:
            value = kind(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not valid: expected {what}") from None
        low_enough = value >= 0 if zero else value > 0  # type: ignore[operator]
        if not low_enough or not math.isfinite(value):  # type: ignore[arg-type]
            raise ConfigError(f"{name}={raw!r} is not valid: expected {what}")
        return value

    def choice(self, name: str, default: str, accepted: tuple[str, ...]) -> str:
        raw = self._raw(name)
        if raw is None:
            return default
        match = {choice.lower(): choice for choice in accepted}.get(raw.lower())
        if match is None:
            raise ConfigError(f"{name}={raw!r} is not valid: expected one of {', '.join(accepted)}")
        return match

    def _items(self, name: str) -> list[str]:
        """The comma-separated items of ``name``, stripped, empty ones left out."""
        parts = (part.strip() for part in (self._raw(name) or "").split(","))
        return [part for part in parts if part]

    def limits(self, name: str) -> dict[str, int]:
        """``MODEL=N,...`` (``*=N`` for every other model) -> ``{model: N}``."""
        limits: dict[str, int] = {}
        for item in self._items(name):
            model, sep, number = item.rpartition("=")
            if not sep or not model.strip() or not number.strip().isdigit() or int(number) < 1:
                raise ConfigError(
                    f"{name}: {item!r} is not valid: expected MODEL=N (N >= 1), comma-separated"
                )
            limits[model.strip()] = int(number)
        return limits

    def budgets(self, name: str) -> dict[str, Budget]:
        """``NAME=Ntpm/Nrpm,...`` (either part alone too; ``*=...`` for every other name, each
        its own budget) -> ``{name: Budget}``."""
        budgets: dict[str, Budget] = {}
        for item in self._items(name):
            key, sep, spec = (part.strip() for part in item.rpartition("="))
            amounts: dict[str, int] = {}
            for part in spec.split("/"):
                match = BUDGET_PART.fullmatch(part.strip().lower())
                if match is None or match[2] in amounts or int(match[1].replace("_", "")) < 1:
                    amounts.clear()
                    break
                amounts[match[2]] = int(match[1].replace("_", ""))
            if not sep or not key or not amounts:
                raise ConfigError(
                    f"{name}: {item!r} is not valid: expected NAME=Ntpm, NAME=Nrpm or "
                    "NAME=Ntpm/Nrpm (N >= 1; tokens and requests per window), comma-separated"
                )
            budgets[key] = Budget(tokens=amounts.get("tpm"), requests=amounts.get("rpm"))
        return budgets

    def upstream_apis(self, name: str, default: str) -> tuple[str, dict[str, str]]:
        """``API[,MODEL=API...]`` (``*=API`` is the default too) -> the fleet's default API and
        the models that differ."""
        fleet, apis = None, {}
        for item in self._items(name):
            model, sep, api = (part.strip() for part in item.rpartition("="))
            if api.lower() not in UPSTREAM_APIS or (sep and not model):
                raise ConfigError(
                    f"{name}: {item!r} is not valid: expected {' or '.join(UPSTREAM_APIS)} (the "
                    "default) and MODEL=API pairs, comma-separated: chat,gpt-5=responses"
                )
            if sep and model != "*":
                apis[model] = api.lower()
            elif fleet is None:
                fleet = api.lower()
            else:
                raise ConfigError(f"{name}: the default API is given twice ({fleet}, {item})")
        return fleet or default, apis

    def weights(self, name: str) -> dict[str, float]:
        """``TENANT=WEIGHT,...`` (positive numbers) -> ``{tenant: weight}``."""
        weights: dict[str, float] = {}
        for item in self._items(name):
            tenant, sep, number = (part.strip() for part in item.rpartition("="))
            try:
                weight = float(number)
                valid = bool(sep) and math.isfinite(weight) and weight > 0
                valid = valid and check_tenant(tenant) == tenant
            except (ValueError, InvalidRequest):
                valid = False
            if not valid:
                raise ConfigError(
                    f"{name}: {item!r} is not valid: expected TENANT=WEIGHT (a positive number), "
                    "comma-separated: acme=3,beta=1"
                )
            weights[tenant] = weight
        return weights

    def webhook_tenants(self, name: str, fleet_secret: str | None) -> dict[str, tuple[str, str]]:
        """``TENANT=URL[|SECRET],...`` (the fleet's secret when none) -> ``{tenant: (url,
        secret)}``; an error never repeats a secret."""
        endpoints: dict[str, tuple[str, str]] = {}
        for item in self._items(name):
            tenant, sep, target = (part.strip() for part in item.partition("="))
            url, _, secret = (part.strip() for part in target.partition("|"))
            try:
                valid = bool(sep) and check_tenant(tenant) == tenant
            except InvalidRequest:
                valid = False
            if not valid or not url.startswith(("http://", "https://")):
                raise ConfigError(
                    f"{name}: entry for {tenant!r} is not valid: expected TENANT=URL|SECRET "
                    "(an http(s) URL; the secret defaults to STREAMQ_WEBHOOK_SECRET), "
                    "comma-separated"
                )
            if not (secret or fleet_secret):
                raise ConfigError(f"{name}: tenant {tenant!r} has no secret (nor a fleet one)")
            endpoints[tenant] = (url, secret or fleet_secret or "")
        return endpoints

    def streams_url(self, name: str) -> str | None:
        raw = self._raw(name)
        if raw is None:
            return None
        if raw.startswith(CLUSTER_SCHEMES):
            try:
                cluster_nodes(raw)
            except ValueError as exc:
                raise ConfigError(f"{name}={raw!r} is not valid: {exc}") from None
            return raw
        if not raw.startswith(("redis://", "rediss://")):
            raise ConfigError(
                f"{name}={raw!r} is not valid: expected a redis://, rediss:// or "
                "redis+cluster://HOST:PORT[,HOST:PORT...] URL"
            )
        return raw

    def port(self, name: str) -> int:
        """A TCP port; empty or 0 is 0 (off)."""
        raw = self._raw(name) or "0"
        if not raw.isdigit() or int(raw) > MAX_PORT:
            raise ConfigError(f"{name}={raw!r} is not valid: expected a port (1-{MAX_PORT}) or 0")
        return int(raw)

    def redis_url(self, name: str, default: str) -> str:
        raw = self._raw(name) or default
        if raw.startswith(SENTINEL_SCHEMES):
            try:
                SentinelURL.parse(raw)
            except ValueError as exc:
                raise ConfigError(f"{name}={raw!r} is not valid: {exc}") from None
        elif not raw.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(
                f"{name}={raw!r} is not valid: expected a redis://, rediss://, unix:// or "
                "redis+sentinel://HOST:PORT/SERVICE URL"
            )
        return raw

    def http_url(self, name: str) -> str | None:
        raw = self._raw(name)
        if raw is not None and not raw.startswith(("http://", "https://")):
            raise ConfigError(f"{name}={raw!r} is not valid: expected an http:// or https:// URL")
        return raw

    def key_prefix(self, name: str, default: str) -> str:
        raw = self._raw(name) or default
        if any(c in raw for c in "{} \t\n"):
            raise ConfigError(f"{name}={raw!r} is not valid: no braces or whitespace allowed")
        return raw
