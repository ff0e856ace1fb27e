"""The OpenAPI 3.1 description served at ``/openapi.json`` (written by hand; the schemathesis
test checks the running gateway against it)."""

from __future__ import annotations

from typing import Any

JSON = "application/json"
SSE = "text/event-stream"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": _ref("Error")}}}


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


COMMON_ERRORS = {
    "401": _error("no valid bearer token"),
    "429": _error("over the tenant's request rate or stream limit; see Retry-After"),
    "503": _error("Redis is unavailable"),
}
BODY_ERRORS = {
    "400": _error("invalid request"),
    "408": _error("the body did not arrive within STREAMQ_GATEWAY_BODY_TIMEOUT"),
    "413": _error("body over STREAMQ_MAX_REQUEST_BYTES"),
    "415": _error("body is not JSON"),
}
JOB_ID = {
    "name": "job_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"},
}
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "The same key (per tenant) always names the same job: never generated twice.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[ -~]+$"},
}

MESSAGE = {
    "type": "object",
    "required": ["role", "content"],
    "properties": {
        "role": {"enum": ["system", "developer", "user", "assistant"]},
        "content": {"type": "string", "maxLength": 200},
    },
}
CHAT_FIELDS: dict[str, Any] = {
    "messages": {"type": "array", "items": MESSAGE, "minItems": 1, "maxItems": 4},
    "model": {"type": "string", "minLength": 1, "maxLength": 64},
    "temperature": {"type": "number", "minimum": 0, "maximum": 2},
    "top_p": {"type": "number", "minimum": 0, "maximum": 1},
    "max_tokens": {"type": "integer", "minimum": 1, "maximum": 64},
    "seed": {"type": "integer"},
    "stop": {"type": "string", "maxLength": 20},
    "deadline": {"type": "number", "exclusiveMinimum": 0, "maximum": 600},
    "idle_timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": 600},
}
JOB_REQUEST = {
    "type": "object",
    "required": ["messages"],
    "properties": CHAT_FIELDS,
    "description": "A chat request: messages, optional model and any OpenAI Chat Completions "
    "parameter (provider-specific fields in extra_body); deadline and idle_timeout in seconds.",
}
COMPLETION_REQUEST = {
    "type": "object",
    "required": ["messages"],
    "properties": {
        **CHAT_FIELDS,
        "stream": {"type": "boolean"},
        "stream_options": {
            "type": "object",
            "properties": {"include_usage": {"type": "boolean"}},
        },
    },
}
CHAT_RESULT = {
    "type": "object",
    "required": ["job_id", "choices", "text", "finish_reason", "attempt", "cursor"],
    "properties": {
        "job_id": {"type": "string"},
        "text": {"type": "string"},
        "finish_reason": {"type": ["string", "null"]},
        "choices": {"type": "array", "items": {"type": "object"}},
        "usage": {"type": ["object", "null"]},
        "model": {"type": ["string", "null"]},
        "attempt": {"type": "integer"},
        "cursor": {"type": "string"},
    },
}
JOB_STATUS = {
    "type": "object",
    "required": ["id", "state", "attempt", "stalled"],
    "properties": {
        "id": {"type": "string"},
        "state": {"enum": ["queued", "running", "done", "error", "cancelled"]},
        "attempt": {"type": "integer"},
        "stalled": {"type": "boolean"},
        "lease_remaining": {"type": ["number", "null"]},
        "ahead": {
            "type": ["integer", "null"],
            "description": "while queued: the jobs that start before it",
        },
        "eta": {
            "type": ["number", "null"],
            "description": "while queued: estimated seconds until it starts, when known",
        },
        "result": CHAT_RESULT,
        "error": {"type": "object"},
        "cancelled": {"type": "object"},
    },
}
COMPLETION = {
    "type": "object",
    "required": ["id", "object", "created", "choices"],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "chat.completion"},
        "created": {"type": "integer"},
        "model": {"type": ["string", "null"]},
        "system_fingerprint": {"type": ["string", "null"]},
        "choices": {"type": "array", "items": {"type": "object"}},
        "usage": {"type": ["object", "null"]},
    },
}
MODEL = {
    "type": "object",
    "required": ["id", "object", "created", "owned_by"],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "model"},
        "created": {"type": "integer"},
        "owned_by": {"type": "string"},
    },
}
MODEL_LIST = {
    "type": "object",
    "required": ["object", "data"],
    "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": MODEL}},
}
RESPONSE_ID = {
    "name": "response_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^resp_[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"},
}
INPUT_MESSAGE = {
    "type": "object",
    "required": ["role", "content"],
    "properties": {
        "type": {"const": "message"},
        "role": {"enum": ["system", "developer", "user", "assistant"]},
        "content": {"type": "string", "minLength": 1, "maxLength": 200},
    },
}
RESPONSES_REQUEST = {
    "type": "object",
    "required": ["input"],
    "properties": {
        "input": {
            "oneOf": [
                {"type": "string", "minLength": 1, "maxLength": 200},
                {"type": "array", "items": INPUT_MESSAGE, "minItems": 1, "maxItems": 4},
            ]
        },
        "model": {"type": "string", "minLength": 1, "maxLength": 64},
        "instructions": {"type": "string", "maxLength": 200},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
        "top_p": {"type": "number", "minimum": 0, "maximum": 1},
        "max_output_tokens": {"type": "integer", "minimum": 1, "maximum": 64},
        "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
        "stream": {"type": "boolean"},
        "background": {"type": "boolean"},
        "store": {"type": "boolean"},
        "previous_response_id": {"type": "string"},
        "deadline": {"type": "number", "exclusiveMinimum": 0, "maximum": 600},
    },
    "description": "OpenAI's Responses request: input, optional model, instructions and any "
    "Responses parameter (provider-specific fields in extra_body); stream, background, store "
    "and previous_response_id as OpenAI's.",
}
RESPONSE = {
    "type": "object",
    "required": ["id", "object", "created_at", "status", "model", "output"],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "response"},
        "created_at": {"type": "integer"},
        "status": {
            "enum": ["queued", "in_progress", "completed", "incomplete", "failed", "cancelled"]
        },
        "model": {"type": "string"},
        "output": {"type": "array", "items": {"type": "object"}},
        "error": {"type": ["object", "null"]},
        "incomplete_details": {"type": ["object", "null"]},
        "usage": {"type": ["object", "null"]},
    },
}
RESPONSE_DELETED = {
    "type": "object",
    "required": ["id", "object", "deleted"],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "response.deleted"},
        "deleted": {"const": True},
    },
}
INPUT_ITEM_LIST = {
    "type": "object",
    "required": ["object", "data", "first_id", "last_id", "has_more"],
    "properties": {
        "object": {"const": "list"},
        "data": {"type": "array", "items": {"type": "object", "required": ["id", "type"]}},
        "first_id": {"type": ["string", "null"]},
        "last_id": {"type": ["string", "null"]},
        "has_more": {"type": "boolean"},
    },
}
# What a job may end with, as the door answers it before any output (failures.py).
JOB_FAILURES = {
    "404": _error("the upstream does not know the model"),
    "409": _error("the job was cancelled, or its Idempotency-Key id is taken"),
    "500": _error("a bug in streamq (the worker logged it)"),
    "502": _error("the upstream failed, or refused the worker's key"),
    "503": _error("Redis is unavailable, or the job was lost"),
    "504": _error("the job timed out"),
    "429": _error(
        "the upstream's rate limit, or the tenant's request rate or stream limit (with Retry-After)"
    ),
}
RESPONSES_SSE = (
    "OpenAI's Responses stream events: `event: <type>` and `data: <JSON>` with a "
    "sequence_number, the same on every read; no [DONE]"
)


def _responses_paths(security: list[dict[str, list[str]]]) -> dict[str, Any]:
    not_found = _error("no such response for this tenant")
    response_or_events = {
        JSON: {"schema": RESPONSE},
        SSE: {"schema": {}},  # SSE data: Responses stream events
    }
    return {
        "/v1/responses": {
            "post": {
                "summary": "OpenAI Responses, run as a queued job",
                "operationId": "createResponse",
                "security": security,
                "parameters": [IDEMPOTENCY_KEY],
                "requestBody": {
                    "required": True,
                    "content": {JSON: {"schema": RESPONSES_REQUEST}},
                },
                "responses": {
                    "200": {
                        "description": "the Response (queued at once with background), or its "
                        f"events when stream is true: {RESPONSES_SSE}",
                        "content": response_or_events,
                    },
                    **BODY_ERRORS,
                    **COMMON_ERRORS,
                    **JOB_FAILURES,
                },
            }
        },
        "/v1/responses/{response_id}": {
            "parameters": [RESPONSE_ID],
            "get": {
                "summary": "A response, or its events from the start or after a sequence number",
                "operationId": "getResponse",
                "security": security,
                "parameters": [
                    {"name": "stream", "in": "query", "schema": {"type": "boolean"}},
                    {
                        "name": "starting_after",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 0},
                    },
                ],
                "responses": {
                    "200": {
                        "description": f"the Response, or with stream: {RESPONSES_SSE}",
                        "content": response_or_events,
                    },
                    "400": _error("invalid stream or starting_after"),
                    "404": not_found,
                    **COMMON_ERRORS,
                },
            },
            "delete": {
                "summary": "Cancel a response if it runs, and forget it",
                "operationId": "deleteResponse",
                "security": security,
                "responses": {
                    "200": _json("deleted", RESPONSE_DELETED),
                    "404": not_found,
                    **COMMON_ERRORS,
                },
            },
        },
        "/v1/responses/{response_id}/cancel": {
            "post": {
                "summary": "Cancel a queued or running response",
                "operationId": "cancelResponse",
                "security": security,
                "parameters": [RESPONSE_ID],
                "responses": {
                    "200": _json("the Response, cancelled unless it had ended", RESPONSE),
                    "404": not_found,
                    **COMMON_ERRORS,
                },
            }
        },
        "/v1/responses/{response_id}/input_items": {
            "get": {
                "summary": "A response's own input items",
                "operationId": "listInputItems",
                "security": security,
                "parameters": [
                    RESPONSE_ID,
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 100},
                    },
                    {"name": "order", "in": "query", "schema": {"enum": ["asc", "desc"]}},
                    {"name": "after", "in": "query", "schema": {"type": "string"}},
                ],
                "responses": {
                    "200": _json("a page of input items", INPUT_ITEM_LIST),
                    "400": _error("invalid limit, order or after"),
                    "404": not_found,
                    **COMMON_ERRORS,
                },
            }
        },
    }


ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "code": {"type": "string"},
                "param": {"type": "null"},
            },
        }
    },
}
JOB_CREATED = {
    "type": "object",
    "required": ["id", "url", "events_url"],
    "properties": {
        "id": {"type": "string"},
        "url": {"type": "string"},
        "events_url": {"type": "string"},
    },
}
EVENTS_DESCRIPTION = (
    "Server-Sent Events, one per stream entry: `id:` its cursor, `event:` its type (start, "
    "delta, reasoning, refusal, tool_call, reset, done, error, cancelled), `data:` JSON. Ends "
    "after the terminal event; `expired` and `timeout` events (without id) end it early."
)


def openapi_schema() -> dict[str, Any]:
    """The OpenAPI document of the gateway."""
    security: list[dict[str, list[str]]] = [{"bearer": []}]
    job_paths: dict[str, Any] = {
        "/v1/jobs": {
            "post": {
                "summary": "Enqueue a chat job",
                "operationId": "createJob",
                "security": security,
                "parameters": [IDEMPOTENCY_KEY],
                "requestBody": {"required": True, "content": {JSON: {"schema": JOB_REQUEST}}},
                "responses": {
                    "202": _json(
                        "enqueued (or found, for a repeated Idempotency-Key)", JOB_CREATED
                    ),
                    **BODY_ERRORS,
                    "409": _error("the job id of this Idempotency-Key is taken"),
                    **COMMON_ERRORS,
                },
            }
        },
        "/v1/jobs/{job_id}": {
            "parameters": [JOB_ID],
            "get": {
                "summary": "A job's state, and its result once it ended",
                "operationId": "getJob",
                "security": security,
                "responses": {
                    "200": _json("the job", JOB_STATUS),
                    "404": _error("no such job for this tenant"),
                    **COMMON_ERRORS,
                },
            },
            "delete": {
                "summary": "Cancel a job",
                "operationId": "cancelJob",
                "security": security,
                "responses": {
                    "200": _json(
                        "the job had ended, or was cancelled before it started", _ref("Cancel")
                    ),
                    "202": _json("a worker is stopping it", _ref("Cancel")),
                    "404": _error("no such job for this tenant"),
                    **COMMON_ERRORS,
                },
            },
        },
        "/v1/jobs/{job_id}/events": {
            "get": {
                "summary": "Follow a job's events",
                "operationId": "jobEvents",
                "security": security,
                "parameters": [
                    JOB_ID,
                    {
                        "name": "after",
                        "in": "query",
                        "required": False,
                        "description": "resume after this cursor (Last-Event-ID wins)",
                        "schema": {"type": "string"},
                    },
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "pattern": "^[ -~]*$"},
                    },
                ],
                "responses": {
                    "200": {
                        "description": EVENTS_DESCRIPTION,
                        "content": {SSE: {"schema": {"type": "object"}}},
                    },
                    "204": {"description": "the job ended at or before the cursor"},
                    "400": _error("invalid cursor"),
                    "404": _error("no such job for this tenant"),
                    **COMMON_ERRORS,
                },
            }
        },
        "/v1/chat/completions": {
            "post": {
                "summary": "OpenAI Chat Completions, run as a queued job",
                "operationId": "createChatCompletion",
                "security": security,
                "parameters": [IDEMPOTENCY_KEY],
                "requestBody": {
                    "required": True,
                    "content": {JSON: {"schema": COMPLETION_REQUEST}},
                },
                "responses": {
                    "200": {
                        "description": "a chat.completion, or chat.completion.chunk events "
                        "ending with `data: [DONE]` when stream is true; the job id is in "
                        "X-Streamq-Job-Id",
                        "content": {
                            JSON: {"schema": COMPLETION},
                            # SSE data: chat.completion.chunk objects, then [DONE] or an error.
                            SSE: {"schema": {}},
                        },
                    },
                    **BODY_ERRORS,
                    **COMMON_ERRORS,
                    "404": _error("the upstream does not know the model"),
                    "409": _error("the job was cancelled, or its Idempotency-Key id is taken"),
                    "500": _error("a bug in streamq (the worker logged it)"),
                    "502": _error("the upstream failed, or refused the worker's key"),
                    "503": _error("Redis is unavailable, or the job was lost"),
                    "504": _error("the job timed out"),
                    "429": _error(
                        "the upstream's rate limit, or the tenant's request rate or stream "
                        "limit (with Retry-After)"
                    ),
                },
            }
        },
        **_responses_paths(security),
        "/v1/models": {
            "get": {
                "summary": "The models the fleet serves",
                "operationId": "listModels",
                "security": security,
                "responses": {"200": _json("the models", MODEL_LIST), **COMMON_ERRORS},
            }
        },
        "/v1/models/{model}": {
            "get": {
                "summary": "One model",
                "operationId": "retrieveModel",
                "security": security,
                "parameters": [
                    {"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {
                    "200": _json("the model", MODEL),
                    "404": _error("the fleet does not serve this model"),
                    **COMMON_ERRORS,
                },
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "streamq gateway",
            "version": "1",
            "description": "Queued LLM chat completions with resumable Server-Sent Events.",
        },
        "paths": job_paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": ERROR,
                "Cancel": {
                    "type": "object",
                    "required": ["id", "outcome"],
                    "properties": {
                        "id": {"type": "string"},
                        "outcome": {
                            "enum": [
                                "cancelled",
                                "cancelling",
                                "already_done",
                                "already_error",
                                "already_cancelled",
                            ]
                        },
                    },
                },
            },
        },
    }
