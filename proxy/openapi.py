"""The OpenAPI 3.1 description of batchgate's own routes, served at `/openapi.json`.

FastAPI describes the routes it serves; `POST /v1/chat/completions` is routed around FastAPI (proxy/app.py), so
its entry is written here, with the request body `proxy/requests.py` accepts and the headers batchgate reads.
Every error answers `{"error": {"message", "type", "param", "code"}}` (the `Error` schema), so FastAPI's 422
validation schema is replaced by it: batchgate answers a bad parameter with 400 in that shape.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib.metadata import version
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from proxy.delivery.preferences import PREFER_HEADER
from proxy.embedding_requests import ENCODING_FORMATS, MAX_INPUTS
from proxy.endpoints import Endpoint
from proxy.policy.facts import DEADLINE_HEADER
from proxy.requests import MAX_METADATA_KEY, MAX_METADATA_PAIRS, MAX_METADATA_VALUE, SERVICE_TIERS

CHAT_PATH = "/v1/chat/completions"
EMBEDDINGS_PATH = Endpoint.EMBEDDINGS.path
RESPONSES_PATH = Endpoint.RESPONSES.path
PUBLIC_PATHS = frozenset({"/healthz", "/readyz"})
ERROR_REF = {"$ref": "#/components/schemas/Error"}
NULLABLE_STRING = {"type": ["string", "null"]}

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": NULLABLE_STRING,
                "code": NULLABLE_STRING,
            },
        }
    },
}

MESSAGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["role"],
    "properties": {
        "role": {"type": "string", "enum": ["system", "developer", "user", "assistant", "tool"]},
        "content": {
            "anyOf": [
                {"type": "string"},
                {"type": "array", "items": {"type": "object"}},
                {"type": "null"},
            ]
        },
        "name": {"type": "string"},
        "tool_call_id": {"type": "string"},
    },
}


def chat_request_schema(models: Iterable[str]) -> dict[str, Any]:
    """The chat-completions body batchgate validates (`proxy/requests.py`); `model` is one of `models`."""
    number = {"type": "number"}
    integer = {"type": "integer"}
    return {
        "type": "object",
        "required": ["model", "messages"],
        "properties": {
            "model": {"type": "string", "enum": sorted(models)},
            "messages": {"type": "array", "minItems": 1, "items": MESSAGE_SCHEMA},
            "stream": {"type": "boolean"},
            "temperature": number,
            "top_p": number,
            "presence_penalty": number,
            "frequency_penalty": number,
            "max_tokens": integer,
            "max_completion_tokens": integer,
            "n": integer,
            "seed": integer,
            "user": {"type": "string"},
            "service_tier": {"type": "string", "enum": sorted(SERVICE_TIERS)},
            "stop": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
            "metadata": {
                "type": "object",
                "maxProperties": MAX_METADATA_PAIRS,
                "propertyNames": {"maxLength": MAX_METADATA_KEY},
                "additionalProperties": {"type": "string", "maxLength": MAX_METADATA_VALUE},
            },
            "response_format": {"type": "object"},
            "tools": {"type": "array", "items": {"type": "object"}},
        },
    }


def _header(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": False, "schema": {"type": "string"}, "description": description}


def chat_operation(models: Iterable[str]) -> dict[str, Any]:
    return {
        "operationId": "create_chat_completion",
        "summary": "Create a chat completion: answered now, or deferred to a batch lane",
        "parameters": [
            _header(DEADLINE_HEADER, "A duration (4h, 1h30m) or an RFC 3339 time: the call may be deferred."),
            _header(PREFER_HEADER, "RFC 7240: respond-async, wait=N (seconds, 0-2147483648; else 400)."),
            _header("X-Batch-Callback-Url", "Deliver the deferred answer to this URL as a signed webhook."),
            _header("Idempotency-Key", "A retry with the same key attaches to the first call's job."),
        ],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": chat_request_schema(models)}},
        },
        "responses": {
            "200": {"description": "The ChatCompletion (or its event stream)", "content": {"application/json": {}}},
            "202": {"description": "Deferred: the job object", "content": {"application/json": {}}},
            "default": {"description": "An error", "content": {"application/json": {"schema": ERROR_REF}}},
        },
    }


def embeddings_request_schema(models: Iterable[str]) -> dict[str, Any]:
    """The embeddings body batchgate validates (`proxy/embedding_requests.py`, OpenAI's CreateEmbeddingRequest)."""
    tokens = {"type": "array", "minItems": 1, "items": {"type": "integer"}}
    many = {"minItems": 1, "maxItems": MAX_INPUTS}
    return {
        "type": "object",
        "required": ["model", "input"],
        "properties": {
            "model": {"type": "string", "enum": sorted(models)},
            "input": {
                "anyOf": [
                    {"type": "string", "minLength": 1},
                    {"type": "array", **many, "items": {"type": "string", "minLength": 1}},
                    {"type": "array", **many, "items": {"type": "integer"}},
                    {"type": "array", **many, "items": tokens},
                ]
            },
            "encoding_format": {"type": "string", "enum": sorted(ENCODING_FORMATS)},
            "dimensions": {"type": "integer", "minimum": 1},
            "user": {"type": "string"},
        },
    }


def embeddings_operation(models: Iterable[str]) -> dict[str, Any]:
    return _call_operation(
        models,
        "create_embedding",
        "Create embeddings: answered now, or deferred to a batch lane",
        embeddings_request_schema(models),
        "The CreateEmbeddingResponse",
    )


def responses_request_schema(models: Iterable[str]) -> dict[str, Any]:
    """The fields of a CreateResponse body batchgate reads (`proxy/responses_requests.py`); the rest is the
    provider's to check."""
    return {
        "type": "object",
        "required": ["model", "input"],
        "properties": {
            "model": {"type": "string", "enum": sorted(models)},
            "input": {"anyOf": [{"type": "string", "minLength": 1}, {"type": "array", "items": {"type": "object"}}]},
            "instructions": {"type": "string"},
            "max_output_tokens": {"type": "integer", "minimum": 16},
            "stream": {"type": "boolean"},
            "store": {"type": "boolean"},
            "background": {"type": "boolean"},
            "previous_response_id": {"type": "string"},
        },
    }


def responses_operation(models: Iterable[str]) -> dict[str, Any]:
    return _call_operation(
        models,
        "create_response",
        "Create a model response: answered now (or streamed), or deferred to a batch lane",
        responses_request_schema(models),
        "The Response object (an SSE event stream with stream: true)",
    )


def _call_operation(
    models: Iterable[str], operation_id: str, summary: str, schema: dict[str, Any], answer: str
) -> dict[str, Any]:
    """An endpoint's POST described as chat's is, with its own body schema and answer."""
    operation = chat_operation(models)
    return {
        **operation,
        "operationId": operation_id,
        "summary": summary,
        "requestBody": {"required": True, "content": {"application/json": {"schema": schema}}},
        "responses": {**operation["responses"], "200": {"description": answer, "content": {"application/json": {}}}},
    }


def openapi_document(api: FastAPI, models: Iterable[str]) -> dict[str, Any]:
    """The description of every route `api` serves plus the chat route; `models` are the configured names."""
    document = get_openapi(title="batchgate", version=version("batchgate"), routes=api.routes)
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    schemas["Error"] = ERROR_SCHEMA
    components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    document["security"] = [{"bearer": []}]
    paths = document.setdefault("paths", {})
    paths[CHAT_PATH] = {"post": chat_operation(models)}
    paths[EMBEDDINGS_PATH] = {"post": embeddings_operation(models)}
    paths.setdefault(RESPONSES_PATH, {})["post"] = responses_operation(models)
    for path, operations in paths.items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            responses["default"] = {"description": "An error", "content": {"application/json": {"schema": ERROR_REF}}}
            if path in PUBLIC_PATHS:
                operation["security"] = []
    return document
