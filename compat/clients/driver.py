"""The loop every Python client driver runs (in .venv-compat): JSON requests in, outcomes out.

One request per line on stdin, one outcome per line on stdout, in order; the fields are
described in driver.mjs. tests/compat/drivers.py is the other end.
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable, Mapping
from typing import Any

Request = Mapping[str, Any]
Outcome = dict[str, Any]


def outcome(**fields: Any) -> Outcome:
    """An outcome with what the client returned; ``texts`` defaults to one empty choice."""
    return {
        "ok": True,
        "texts": [""],
        "tool_calls": [],
        "usage": None,
        "finish_reason": None,
        "error": None,
        **fields,
    }


def failure(error: BaseException, texts: list[str] | None = None) -> Outcome:
    """The outcome of a call the client raised ``error`` for, after showing ``texts``."""
    status = getattr(error, "status_code", None)
    described = {
        "kind": type(error).__name__,
        "status": status if isinstance(status, int) else None,
        "message": str(error),
    }
    return outcome(ok=False, texts=texts or [""], error=described)


def serve(entries: Mapping[str, Callable[[Request], Outcome]]) -> None:
    """Answer requests for ``entries`` until stdin closes."""
    out = sys.stdout
    sys.stdout = sys.stderr  # a library's print() must not break the protocol
    out.write(json.dumps({"ready": True}) + "\n")
    out.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            answer = entries[request["entry"]](request)
        except Exception:
            answer = {"driver_error": traceback.format_exc()}
        out.write(json.dumps(answer) + "\n")
        out.flush()
