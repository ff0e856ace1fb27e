"""Settings are read on purpose, validated, and never leak the API key."""

from __future__ import annotations

import base64
import inspect
import re
from pathlib import Path

import pytest

from streamq import ConfigError, Settings
from streamq.core.redis_urls import SentinelURL
from streamq.core.settings import KNOWN_VARIABLES, Budget, UnknownSettingWarning


def test_defaults_without_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With nothing set, every setting has its documented default."""
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env({})
    assert settings == Settings()
    assert settings.concurrency == 100
    assert settings.stream_ttl == 86_400


def test_environment_values_are_parsed() -> None:
    """Every variable maps onto its field, typed."""
    settings = Settings.from_env(
        {
            "REDIS_URL": "rediss://user:pw@redis.internal:6380/2",
            "OPENAI_API_KEY": "sk-abc",
            "OPENAI_BASE_URL": "http://localhost:8000/v1",
            "OPENAI_MODEL": "llama3",
            "STREAMQ_QUEUE": "q",
            "STREAMQ_KEY_PREFIX": "app",
            "STREAMQ_CONCURRENCY": "250",
            "STREAMQ_START_CONCURRENCY": "32",
            "STREAMQ_PUBLISH_LINGER": "0",
            "STREAMQ_STREAM_TTL": "60",
            "STREAMQ_JOB_TIMEOUT": "12.5",
            "STREAMQ_READ_TIMEOUT": "3",
            "STREAMQ_POLL_INTERVAL": "0.2",
            "STREAMQ_MAX_REQUEST_BYTES": "2048",
            "STREAMQ_LOG_LEVEL": "debug",
        }
    )
    assert settings.redis_url == "rediss://user:pw@redis.internal:6380/2"
    assert settings.openai_model == "llama3"
    assert settings.concurrency == 250
    assert settings.start_concurrency == 32
    assert settings.publish_linger == 0
    assert settings.job_timeout == 12.5
    assert settings.log_level == "DEBUG"


@pytest.mark.parametrize(
    ("name", "value", "accepted"),
    [
        ("STREAMQ_CONCURRENCY", "many", "positive integer"),
        ("STREAMQ_CONCURRENCY", "0", "positive integer"),
        ("STREAMQ_START_CONCURRENCY", "0", "positive integer"),
        ("STREAMQ_PUBLISH_LINGER", "-0.001", "0 or a positive number"),
        ("STREAMQ_PUBLISH_LINGER", "inf", "0 or a positive number"),
        ("STREAMQ_STREAM_TTL", "-5", "positive integer"),
        ("STREAMQ_JOB_TIMEOUT", "soon", "positive number"),
        ("STREAMQ_IDLE_TIMEOUT", "inf", "positive number"),
        ("STREAMQ_JOB_TIMEOUT", "nan", "positive number"),
        ("STREAMQ_LOG_LEVEL", "loud", "DEBUG, INFO, WARNING, ERROR"),
        ("REDIS_URL", "localhost:6379", "redis://"),
        ("OPENAI_BASE_URL", "localhost:8000", "http://"),
        ("STREAMQ_KEY_PREFIX", "a{b}", "no braces"),
        ("STREAMQ_MODEL_LIMITS", "gpt-4o=0", "MODEL=N (N >= 1)"),
        ("STREAMQ_MODEL_LIMITS", "gpt-4o", "MODEL=N (N >= 1)"),
        ("STREAMQ_LOG_FORMAT", "xml", "text, json"),
        ("STREAMQ_UPSTREAM_API", "completions", "MODEL=API"),
        ("STREAMQ_UPSTREAM_API", "gpt-5=soap", "chat or responses"),
        ("STREAMQ_UPSTREAM_API", "=responses", "MODEL=API"),
        ("STREAMQ_UPSTREAM_API", "chat,responses", "given twice"),
        ("REDIS_URL", "redis+sentinel://127.0.0.1:26379", "/SERVICE"),
    ],
)
def test_bad_values_name_the_variable_and_accepted_values(
    name: str, value: str, accepted: str
) -> None:
    """A bad value fails with a message naming the variable and what it accepts."""
    with pytest.raises(ConfigError, match=name) as error:
        Settings.from_env({name: value})
    assert accepted in str(error.value)


def test_env_file_is_read_and_environment_wins(tmp_path: Path) -> None:
    """Values come from the .env file unless the environment sets them."""
    env_file = tmp_path / "custom.env"
    env_file.write_text("OPENAI_MODEL=from-file\nSTREAMQ_CONCURRENCY=7\n")
    settings = Settings.from_env({"OPENAI_MODEL": "from-env"}, env_file=env_file)
    assert settings.openai_model == "from-env"
    assert settings.concurrency == 7


def test_missing_env_file_is_an_error(tmp_path: Path) -> None:
    """An explicit --env-file that does not exist is a clear error."""
    with pytest.raises(ConfigError, match="does not exist"):
        Settings.from_env({}, env_file=tmp_path / "nope.env")


def test_api_key_is_not_in_repr() -> None:
    """The API key never shows up when settings are printed or logged."""
    settings = Settings.from_env({"OPENAI_API_KEY": "sk-secret-value"})
    assert "sk-secret-value" not in repr(settings)


def test_env_example_documents_every_variable() -> None:
    """.env.example lists every variable Settings reads."""
    example = (Path(__file__).parent.parent / ".env.example").read_text()
    source = Path(inspect.getfile(Settings)).read_text()  # wherever the package keeps it

    names = set(re.findall(r'"((?:OPENAI|REDIS|STREAMQ)_[A-Z_]+)"', source))
    assert names
    for name in names:
        assert f"\n{name}=" in example, name


def test_model_limits_are_parsed_per_model_with_a_default() -> None:
    """STREAMQ_MODEL_LIMITS=MODEL=N,... with `*` for every model not named."""
    settings = Settings.from_env({"STREAMQ_MODEL_LIMITS": "gpt-4o=20, *=100"})
    assert settings.model_limits == {"gpt-4o": 20, "*": 100}
    assert Settings.from_env({}).model_limits == {}


def test_budgets_are_parsed_per_model_and_tenant_with_a_window() -> None:
    """Token and request budgets per model and per tenant, either part alone or both."""
    settings = Settings.from_env(
        {
            "STREAMQ_MODEL_BUDGETS": "gpt-4o-mini=200_000tpm/500rpm, *=40000TPM",
            "STREAMQ_TENANT_BUDGETS": "acme=100rpm/5000tpm",
            "STREAMQ_BUDGET_WINDOW": "2.5",
            "STREAMQ_BUDGET_OUTPUT_TOKENS": "256",
        }
    )
    assert settings.model_budgets == {
        "gpt-4o-mini": Budget(tokens=200_000, requests=500),
        "*": Budget(tokens=40_000),
    }
    assert settings.tenant_budgets == {"acme": Budget(tokens=5000, requests=100)}
    assert (settings.budget_window, settings.budget_output_tokens) == (2.5, 256)
    assert Settings.from_env({}).budget_window == 60.0


@pytest.mark.parametrize(
    "value", ["gpt-4o=0tpm", "gpt-4o", "=5tpm", "gpt-4o=5tps", "gpt-4o=5tpm/6tpm", "a=5tpm/"]
)
def test_bad_budgets_say_what_is_accepted(value: str) -> None:
    """A budget that is not NAME=Ntpm/Nrpm fails naming the variable and the syntax."""
    for name in ("STREAMQ_MODEL_BUDGETS", "STREAMQ_TENANT_BUDGETS"):
        with pytest.raises(ConfigError, match=f"{name}: .*expected NAME=Ntpm, NAME=Nrpm"):
            Settings.from_env({name: value})
    with pytest.raises(ConfigError, match="STREAMQ_BUDGET_WINDOW"):
        Settings.from_env({"STREAMQ_BUDGET_WINDOW": "0"})
    with pytest.raises(ConfigError, match="at least 1 token"):
        Settings(tenant_budgets={"acme": Budget(tokens=0)})


def test_upstream_api_is_a_default_and_per_model_overrides() -> None:
    """STREAMQ_UPSTREAM_API=API,MODEL=API,...: a bare word is the fleet's default."""
    settings = Settings.from_env(
        {"STREAMQ_UPSTREAM_API": "chat, gpt-5=responses,o4-mini=Responses"}
    )
    assert settings.upstream_api == "chat"
    assert settings.model_upstream_apis == {"gpt-5": "responses", "o4-mini": "responses"}
    assert settings.upstream_api_for("gpt-5") == "responses"
    assert settings.upstream_api_for("gpt-4o") == "chat"
    assert Settings.from_env({"STREAMQ_UPSTREAM_API": "responses"}).upstream_api_for("x") == (
        "responses"
    )
    assert Settings.from_env({}).upstream_api_for("x") == "chat"
    with pytest.raises(ConfigError, match="upstream_api"):
        Settings(model_upstream_apis={"gpt-5": "soap"})


def test_a_sentinel_url_names_its_sentinels_service_and_db() -> None:
    """redis+sentinel://[user:pass@]HOST:PORT,HOST[:PORT]/SERVICE[/DB] (26379 by default)."""
    url = "redis+sentinel://app:s3cret@10.0.0.1:26380,10.0.0.2/primary/2?sentinel_password=x"
    assert Settings.from_env({"REDIS_URL": url}).redis_url == url
    target = SentinelURL.parse(url)
    assert target.sentinels == (("10.0.0.1", 26380), ("10.0.0.2", 26379))
    assert (target.service, target.db, target.username, target.password) == (
        "primary",
        2,
        "app",
        "s3cret",
    )
    assert target.sentinel_password == "x"
    assert not target.tls


def test_a_misspelled_variable_warns_naming_the_closest_known_one() -> None:
    """STREAMQ_CONCURENCY (one R) warns, suggesting STREAMQ_CONCURRENCY; known ones do not."""
    with pytest.warns(UnknownSettingWarning, match="did you mean STREAMQ_CONCURRENCY") as caught:
        Settings.from_env({"STREAMQ_CONCURENCY": "4", "STREAMQ_CONCURRENCY": "3"})
    assert len(caught) == 1


def test_every_streamq_variable_the_sources_read_is_known() -> None:
    """Each STREAMQ_* name in src/ is in KNOWN_VARIABLES, so none is ever taken for a typo."""
    src = Path(__file__).resolve().parents[1] / "src"
    named = {
        name
        for path in src.rglob("*.py")
        for name in re.findall(r"\bSTREAMQ_[A-Z0-9_]*[A-Z0-9]\b", path.read_text())
    }
    assert named - KNOWN_VARIABLES == set()


WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"a-webhook-secret-of-32-bytes-000").decode()


def test_webhook_settings_are_read_and_checked() -> None:
    """The fleet's endpoint and the tenants' (their secret defaulting to the fleet's); an
    error never repeats a secret."""
    settings = Settings.from_env(
        {
            "STREAMQ_WEBHOOK_URL": "https://hooks.example/fleet",
            "STREAMQ_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "STREAMQ_WEBHOOK_TENANTS": "acme=https://acme.example/h|whsec_YWNtZQ==, beta=http://b/h",
            "STREAMQ_WEBHOOK_RETRY_PERIOD": "3600",
            "STREAMQ_WEBHOOK_TIMEOUT": "3",
        }
    )
    assert settings.webhook_tenants == {
        "acme": ("https://acme.example/h", "whsec_YWNtZQ=="),
        "beta": ("http://b/h", WEBHOOK_SECRET),
    }
    assert settings.webhook_retry_period == 3600
    assert settings.webhook_timeout == 3
    assert WEBHOOK_SECRET not in repr(settings)
    for env in (
        {"STREAMQ_WEBHOOK_URL": "https://hooks.example/fleet"},
        {"STREAMQ_WEBHOOK_TENANTS": "acme=ftp://x|whsec_YWNtZQ=="},
        {"STREAMQ_WEBHOOK_TENANTS": "acme=https://x"},
        {"STREAMQ_WEBHOOK_URL": "https://h", "STREAMQ_WEBHOOK_SECRET": "whsec_not base64!"},
    ):
        with pytest.raises(ConfigError) as caught:
            Settings.from_env(env)
        assert "whsec_not" not in str(caught.value)


@pytest.mark.parametrize("name", ["idle_timeout", "job_timeout", "lease"])
def test_timeouts_built_in_code_must_be_finite(name: str) -> None:
    """An infinite timeout would let a silent upstream hold its job for ever."""
    with pytest.raises(ConfigError, match="positive number"):
        Settings().replace(**{name: float("inf")})


def test_the_publish_linger_is_bounded() -> None:
    """A linger past a second would read as a stalled stream."""
    assert Settings.from_env({"STREAMQ_PUBLISH_LINGER": "1"}).publish_linger == 1
    with pytest.raises(ConfigError, match=r"publish_linger must be 0 to 1\.0 seconds"):
        Settings.from_env({"STREAMQ_PUBLISH_LINGER": "1.5"})
