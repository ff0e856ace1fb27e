"""A local server that imitates the OpenAI Chat Completions and Responses APIs, for demos,
tests and benchmarks.

Replies are deterministic: :func:`simulated_tokens` returns exactly the tokens the server streams
for a request, so tests can check output without a real model. Each request can change speed,
reply mode and inject faults through an object under the body key ``"simulator"``; with the
openai SDK: ``extra_body={"simulator": {"fault": "disconnect", "after": 3}}``. The accepted keys
are the :class:`SimulatorConfig` fields except ``seed``, ``models`` and ``api_key``.

``POST /v1/responses`` answers a Responses request with the reply of the equivalent chat
request (``instructions`` as a system message, ``input`` as the messages), with the same
options: a forced ``tool_choice`` gives ``function_call`` items, a ``reasoning`` object a
reasoning item first, ``max_output_tokens`` a ``response.incomplete`` ending.

Mode ``demo`` is the demo's answer: it says it comes from the simulator, echoes the question
and shows a list, a code block, and a tool call when asked (:func:`simulated_demo_text`).

A request for structured output (chat ``response_format`` of type ``json_schema`` or
``json_object``, Responses ``text.format``) is answered with JSON that satisfies the schema,
made up from it like tool arguments: :func:`simulated_json` predicts it, and it streams in
:func:`simulated_json_tokens` pieces, each a completion token.

Modules, in the order a request meets them: ``server`` (routing, runners), ``request`` (the
body and its options), ``config``, ``reply`` (planning the choices) with ``text`` (their
deterministic content), ``chunks`` (the OpenAI JSON), ``send`` (pacing), ``faults``, ``stats``,
``errors`` and ``_http`` (just enough HTTP/1.1); for the Responses API ``responses_request``
(restating it as a chat request), ``responses_plan`` and ``responses_events``.
"""

from streamq.dev.simulator.canned import simulated_demo_text
from streamq.dev.simulator.config import SimulatorConfig
from streamq.dev.simulator.server import Simulator, SimulatorThread, serve
from streamq.dev.simulator.stats import SimulatorStats
from streamq.dev.simulator.text import (
    DEFAULT_REPLY_TOKENS,
    REFUSAL_TEXT,
    count_prompt_tokens,
    simulated_json,
    simulated_json_tokens,
    simulated_reasoning,
    simulated_text,
    simulated_tokens,
    simulated_tool_arguments,
)

__all__ = [
    "DEFAULT_REPLY_TOKENS",
    "REFUSAL_TEXT",
    "Simulator",
    "SimulatorConfig",
    "SimulatorStats",
    "SimulatorThread",
    "count_prompt_tokens",
    "serve",
    "simulated_demo_text",
    "simulated_json",
    "simulated_json_tokens",
    "simulated_reasoning",
    "simulated_text",
    "simulated_tokens",
    "simulated_tool_arguments",
]
