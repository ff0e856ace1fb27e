"""Errors that answer a request in the OpenAI API's JSON shape."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from streamq.dev.simulator._http import json_response

SERVER_ERROR: Final = "The server had an error while processing your request (simulated)."


class HTTPFailure(Exception):
    """Answer the current request with an error in OpenAI's shape."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(message)
        self.status, self.headers = status, headers
        self.body = {"error": {"message": message, "type": type_, "param": param, "code": code}}

    def response(self, keep_alive: bool, headers: Sequence[tuple[str, str]] = ()) -> bytes:
        headers = [*self.headers, *headers]
        return json_response(self.status, self.body, keep_alive=keep_alive, headers=headers)
