"""schemathesis against /openapi.json: generated requests, valid and not, never get a 5xx, and
every answer matches the schema (status code, content type, body)."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from schemathesis import Case, CheckContext, GenerationMode, Response
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from streamq import Settings
from streamq.gateway import GatewayConfig, create_app
from tests.harness.gateway import TOKEN_A, TOKENS, GatewayThread

# What the job itself ended with, reported by the front door: a request may well set a
# deadline it cannot meet (504) or make the upstream refuse it (502). Both are documented.
JOB_OUTCOMES = {502, 504}


def not_a_gateway_error(ctx: CheckContext, response: Response, case: Case[Any]) -> bool | None:
    """schemathesis's not_a_server_error, minus the job outcomes above."""
    status = response.status_code
    if status >= 500 and status not in JOB_OUTCOMES:
        raise AssertionError(f"{status} from the gateway: {response.text[:300]}")
    return None


CHECKS = [
    not_a_gateway_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
EXAMPLES = 25  # per generation mode, across all operations: a few seconds


# schemathesis's strategies draw from `random` themselves, and so does the worker's jitter on the
# gateway's thread; nothing of ours to fix. Hypothesis warns with a FutureWarning subclass.
@pytest.mark.filterwarnings("ignore:Do not use the `random` module:FutureWarning")
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_generated_requests_never_fail_the_gateway(
    settings: Settings, mode: GenerationMode
) -> None:
    """Property-based requests from the gateway's own schema, with a worker running the jobs."""
    with GatewayThread(
        create_app(settings, GatewayConfig(tokens=TOKENS)), worker=settings
    ) as server:
        schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")

        @given(case=schema.as_strategy(mode))
        @hypothesis_settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: Case[Any]) -> None:
            case.call_and_validate(
                base_url=server.url,
                headers={"Authorization": f"Bearer {TOKEN_A}"},
                checks=CHECKS,
                timeout=20,
            )

        check()
        assert httpx2.get(f"{server.url}/openapi.json").status_code == 200
