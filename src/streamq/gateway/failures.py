"""A job that failed, in OpenAI's terms: the HTTP status for each of streamq's error codes.

The client's own credentials are the gateway token, checked before the job exists; so when the
upstream refuses the *worker's* key (401, 403) the door answers 502, a fault of the service,
not 401/403, which would tell the client to fix its key. docs/gateway.md has the table.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from streamq.core.events import Cancelled, Error
from streamq.gateway.errors import ApiError

FAILED_STATUS: Mapping[str, int] = {
    "invalid_request": 400,
    "upstream_bad_request": 400,
    "upstream_not_found": 404,
    "cancelled": 409,
    "upstream_rate_limited": 429,
    "internal": 500,
    "invalid_job": 500,
    "upstream_unauthorized": 502,
    "upstream_forbidden": 502,
    "upstream_server_error": 502,
    "upstream_connection": 502,
    "upstream_incomplete": 502,
    "upstream_protocol": 502,
    "upstream_error": 502,
    "unpublishable": 502,
    "request_missing": 503,
    "attempts_exhausted": 503,
    "expired": 503,
    "timeout": 504,
    "upstream_timeout": 504,
    "read_timeout": 504,
}
DEFAULT_STATUS = 502
CANCELLED_MESSAGE = "the job was cancelled"


def status_of(code: str) -> int:
    """The HTTP status of a failure with streamq error ``code``."""
    return FAILED_STATUS.get(code, DEFAULT_STATUS)


def failure(event: Error | Cancelled, headers: Mapping[str, str] | None = None) -> ApiError:
    """The error answer for a job that ended with ``event``."""
    if isinstance(event, Cancelled):
        return ApiError(409, "cancelled", CANCELLED_MESSAGE, headers)
    status = status_of(event.code)
    if status == 429 and event.retry_after is not None:  # the upstream's own hint
        headers = {**(headers or {}), "Retry-After": str(math.ceil(event.retry_after))}
    return ApiError(status, event.code, event.message, headers)
