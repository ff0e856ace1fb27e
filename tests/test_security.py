"""Secrets stay secret: no API key in Redis or logs; Redis ACL users and TLS work."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from streamq import JobFailed, Settings, StreamQ
from streamq.core.exceptions import ConfigError
from streamq.core.request import chat_messages
from streamq.dev.local_redis import LocalRedis, free_port
from streamq.dev.simulator import SimulatorConfig, SimulatorThread, simulated_text
from streamq.worker.arq_worker import running_worker
from tests.harness.processes import run_cli, settings_environment, worker_processes
from tests.harness.redis_servers import dump_keys


async def test_api_key_and_prompts_stay_out_of_logs_and_redis(
    settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    """At DEBUG, worker logs hold neither the key nor the prompt; Redis never holds the key."""
    key = "sk-this-key-must-never-leak-0123456789"
    with SimulatorThread(SimulatorConfig(api_key="sk-another-key")) as refusing:
        refused = settings.replace(openai_api_key=key, openai_base_url=refusing.base_url)
        env = {"STREAMQ_LOG_LEVEL": "DEBUG", "STREAMQ_MAX_ATTEMPTS": "1"}
        with worker_processes(refused, 1, env=env, log_dir=tmp_path) as workers:
            async with StreamQ(redis, refused) as sq:
                job = await sq.enqueue_chat("a very private prompt 4711")
                with pytest.raises(JobFailed) as failed:
                    await job.result()
    assert failed.value.error.code == "upstream_unauthorized"
    text = workers.logs()
    assert "streamq_chat" in text  # the log was written
    assert key not in text
    assert "private prompt 4711" not in text
    assert key not in await dump_keys(redis, f"{settings.key_prefix}*")
    assert key not in await dump_keys(redis, f"arq:*{settings.key_prefix}*")


@pytest.fixture
def acl_redis() -> Iterator[LocalRedis]:
    """A redis-server whose only user is `app` with a password (the default user is off)."""
    port = free_port()
    args = ["--user", "default", "off", "--user", "app", "on", ">s3cret", "~*", "&*", "+@all"]
    with LocalRedis(port, args, url=f"redis://app:s3cret@127.0.0.1:{port}/0") as server:
        yield server


async def test_redis_acl_user_with_password(settings: Settings, acl_redis: LocalRedis) -> None:
    """Worker and CLI work as an ACL user; a wrong password is one clear line, redacted."""
    acl = settings.replace(redis_url=acl_redis.url)
    with worker_processes(acl, 1):
        code, out, err = await run_cli(acl, "enqueue", "over acl", "--follow")
    assert code == 0, err
    assert out == simulated_text(chat_messages("over acl")) + "\n"
    wrong = acl.replace(redis_url=acl_redis.url.replace("s3cret", "guess"))
    code, _, err = await run_cli(wrong, "enqueue", "hi", env=settings_environment(wrong))
    assert code == 2
    assert "guess" not in err
    assert "***" in err


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[LocalRedis]:
    """A TLS-only redis-server with a certificate for `localhost` from a test CA."""
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    files = {name: tmp_path / f"{name}.pem" for name in ("ca", "cert", "key")}
    ca.cert_pem.write_to_path(files["ca"])
    cert.cert_chain_pems[0].write_to_path(files["cert"])
    cert.private_key_pem.write_to_path(files["key"])
    port = free_port()
    args = [
        "--port", "0", "--tls-port", str(port), "--tls-auth-clients", "no",
        "--tls-cert-file", str(files["cert"]), "--tls-key-file", str(files["key"]),
        "--tls-ca-cert-file", str(files["ca"]),
    ]  # fmt: skip
    url = f"rediss://localhost:{port}/0?ssl_ca_certs={files['ca']}"
    server = LocalRedis(port, args, url=url)
    try:
        server.start()
    except ConfigError:
        pytest.skip("this redis-server cannot serve TLS (built without it); Debian's can")
    try:
        yield server
    finally:
        server.stop()


async def test_tls_with_hostname_check(settings: Settings, tls_redis: LocalRedis) -> None:
    """Jobs run over rediss://; a name the certificate does not cover is refused."""
    server = tls_redis
    secure = settings.replace(redis_url=server.url)
    async with running_worker(secure), StreamQ.from_url(server.url, secure) as sq:
        job = await sq.enqueue_chat("over tls")
        assert (await job.result()).text == simulated_text(chat_messages("over tls"))
    wrong_name = server.url.replace("localhost", "127.0.0.1")
    async with StreamQ.from_url(wrong_name, secure) as sq:
        with pytest.raises(RedisConnectionError, match=r"certificate|hostname"):
            await sq.enqueue_chat("refused")
