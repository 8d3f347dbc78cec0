"""Anthropic error objects -> OpenAI error answers (status and body), for Message Batch result lines.

The request and answer translation lives in anthropic_translation.py (litellm's, shared by both lanes).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from proxy.errors import error_body

# Anthropic error type -> (HTTP status, OpenAI error type)
ERROR_TYPES: Mapping[str, tuple[int, str]] = {
    "invalid_request_error": (400, "invalid_request_error"),
    "authentication_error": (401, "authentication_error"),
    "billing_error": (402, "invalid_request_error"),
    "permission_error": (403, "permission_error"),
    "not_found_error": (404, "not_found_error"),
    "request_too_large": (413, "invalid_request_error"),
    "rate_limit_error": (429, "rate_limit_error"),
    "api_error": (500, "server_error"),
    "timeout_error": (504, "server_error"),
    "overloaded_error": (529, "server_error"),
}


def error_status(error_type: str | None) -> tuple[int, str]:
    """(HTTP status, OpenAI error type) of an Anthropic error type."""
    return ERROR_TYPES.get(str(error_type), (500, "server_error"))


def chat_error(error: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
    """(status, OpenAI error body) for an Anthropic error object `{"type": "...", "message": "..."}`."""
    kind = error.get("type")
    status, openai_type = error_status(str(kind))
    body = error_body(str(error.get("message", "")), openai_type, code=None if kind is None else str(kind))
    return status, body
