"""Reading a request: its JSON body, integer parameters and simulator options."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from streamq.dev.simulator.config import OPTION_TYPES, SimulatorConfig, option_problem
from streamq.dev.simulator.errors import HTTPFailure


def load_body(raw: bytes) -> dict[str, Any]:
    """The request's body, checked to be a JSON object."""
    try:
        body = json.loads(raw)
    except ValueError:
        raise HTTPFailure(400, "We could not parse the JSON body of your request.") from None
    if not isinstance(body, dict):
        raise HTTPFailure(400, "The request body must be a JSON object.")
    return body


def parse_body(raw: bytes) -> dict[str, Any]:
    """The request's JSON object, checked to have a model and a list of message objects."""
    body = load_body(raw)
    for name, kind in (("model", str), ("messages", list)):
        if name not in body:
            message = f"Missing required parameter: '{name}'."
            raise HTTPFailure(400, message, param=name, code="missing_required_parameter")
        if not isinstance(body[name], kind) or not body[name]:
            raise HTTPFailure(400, f"Invalid value for '{name}'.", param=name)
    if not all(isinstance(message, dict) for message in body["messages"]):
        raise HTTPFailure(400, "Each message must be an object.", param="messages")
    return body


def int_param(body: Mapping[str, Any], name: str, *, minimum: int) -> int | None:
    """The integer parameter ``name`` of the body, or None when it is absent or null."""
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise HTTPFailure(400, f"'{name}' must be an integer >= {minimum}.", param=name)
    return value


def request_options(config: SimulatorConfig, body: Mapping[str, Any]) -> SimulatorConfig:
    """``config`` with the request's ``"simulator"`` options applied."""
    overrides = body.get("simulator", {})
    if not isinstance(overrides, dict):
        raise HTTPFailure(400, "'simulator' must be an object.", param="simulator")
    for name, value in overrides.items():
        if name not in OPTION_TYPES:
            message = f"Unknown simulator option {name!r}; known: {', '.join(OPTION_TYPES)}."
            raise HTTPFailure(400, message, param=f"simulator.{name}")
        if problem := option_problem(name, value):
            raise HTTPFailure(400, problem, param=f"simulator.{name}")
    return dataclasses.replace(config, **overrides)
