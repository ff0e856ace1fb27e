"""Every error the gateway answers, as JSON in OpenAI's error shape.

``{"error": {"message": ..., "type": ..., "code": ..., "param": null}}`` on every endpoint, so
the ``openai`` SDK raises its usual exceptions and other clients parse one shape.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from redis.exceptions import RedisError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from streamq.core.exceptions import InvalidRequest, JobNotFound

logger = logging.getLogger("streamq.gateway")

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
}


class ApiError(Exception):
    """An error answer: HTTP ``status``, a machine ``code`` and a message saying what to do."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def error_body(status: int, code: str, message: str) -> dict[str, Any]:
    """The JSON body of an error."""
    kind = ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "code": code, "param": None}}


def error_response(error: ApiError) -> JSONResponse:
    """``error`` as a response."""
    body = error_body(error.status, error.code, error.message)
    return JSONResponse(body, status_code=error.status, headers=error.headers)


async def handle_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc)


async def handle_invalid_request(request: Request, exc: Exception) -> Response:
    return error_response(ApiError(400, "invalid_request", str(exc)))


async def handle_not_found(request: Request, exc: Exception) -> Response:
    job_id = exc.job_id if isinstance(exc, JobNotFound) else "?"
    return error_response(ApiError(404, "job_not_found", f"no job with id {job_id!r}"))


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    message = {404: f"no such endpoint: {request.url.path}"}.get(exc.status_code, exc.detail)
    return error_response(ApiError(exc.status_code, code, message, exc.headers))


async def handle_redis_error(request: Request, exc: Exception) -> Response:
    logger.warning("Redis error while serving %s %s: %r", request.method, request.url.path, exc)
    return error_response(ApiError(503, "redis_unavailable", "Redis is unavailable; retry later"))


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    logger.error("error serving %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(ApiError(500, "internal", "internal error; the gateway logged it"))


EXCEPTION_HANDLERS = {
    ApiError: handle_api_error,
    InvalidRequest: handle_invalid_request,
    JobNotFound: handle_not_found,
    HTTPException: handle_http_exception,
    RedisError: handle_redis_error,
    Exception: handle_unexpected,
}
