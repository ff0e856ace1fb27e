"""Reading a request's JSON body: its media type, size and nesting are bounded before use."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from streamq.gateway.errors import ApiError

# Far beyond any chat request (tool schemas included), and far below the interpreter's
# recursion limit, so every accepted body can be serialised again (by the producer, the worker).
MAX_DEPTH = 64


async def read_json_object(request: Request, max_bytes: int) -> dict[str, Any]:
    """The request body as a JSON object, read at most ``max_bytes`` far, nested at most
    :data:`MAX_DEPTH` deep; a 4xx :class:`ApiError` otherwise."""
    content_type = request.headers.get("content-type", "application/json")
    media_type = content_type.split(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    too_large = ApiError(
        413, "request_too_large", f"the body is over {max_bytes} bytes (STREAMQ_MAX_REQUEST_BYTES)"
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise too_large
    too_deep = ApiError(400, "json_too_deep", f"the body nests more than {MAX_DEPTH} levels deep")
    try:
        value = json.loads(body)
    except RecursionError:  # the decoder's own guard, long before MAX_DEPTH could be checked
        raise too_deep from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid UTF-8 JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ApiError(400, "invalid_json", "the body must be a JSON object")
    if depth(value) > MAX_DEPTH:
        raise too_deep
    return value


def depth(value: Any) -> int:
    """How deeply ``value``'s objects and arrays nest (0 for a scalar); without recursion."""
    deepest = 0
    pending = [(value, 1)]
    while pending:
        item, level = pending.pop()
        if isinstance(item, dict):
            children = list(item.values())
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            break  # deep enough to refuse: no need to walk the rest
        pending.extend((child, level + 1) for child in children)
    return deepest
