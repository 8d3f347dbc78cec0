"""One error hierarchy, and one table from exception class to the OpenAI error shape.

Every error a caller can see is an `ApiError`: status, OpenAI error type, message, param, code and headers,
rendered as `{"error": {"message", "type", "param", "code"}}`; `proxy/error_map.py` turns any exception into
one and answers it over HTTP. This module imports no web framework, so the worker process can use it without
loading FastAPI. Error objects anywhere else (a job's error, a provider's error turned into the OpenAI shape)
are built by `error_object`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from proxy.reasons import FailureReason

JSON_MEDIA_TYPE = "application/json"
INTERNAL_MESSAGE = "The server had an error while processing your request."


class ApiError(Exception):
    """An error meant for the caller: status, OpenAI error type, message, and optionally param and code.

    Subclasses fix the status and type; `status` and `error_type` given here override them (an HTTP error
    of the framework, a provider's status passed on)."""

    status = 500
    error_type = "server_error"
    default_code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
        status: int | None = None,
        error_type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        self.headers = dict(headers or {})
        if status is not None:
            self.status = status
        if error_type:
            self.error_type = error_type

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.error_type, param=self.param, code=self.code)


class InvalidRequest(ApiError):
    status = 400
    error_type = "invalid_request_error"


class Unauthorized(ApiError):
    status = 401
    error_type = "invalid_request_error"
    default_code = "invalid_api_key"


class PermissionDenied(ApiError):
    status = 403
    error_type = "invalid_request_error"
    default_code = "permission_denied"


class NotFound(ApiError):
    status = 404
    error_type = "invalid_request_error"
    default_code = "not_found"


class Conflict(ApiError):
    status = 409
    error_type = "invalid_request_error"
    default_code = "conflict"


class Unprocessable(ApiError):
    status = 422
    error_type = "invalid_request_error"
    default_code = "unprocessable"


class PayloadTooLarge(ApiError):
    status = 413
    error_type = "invalid_request_error"
    default_code = "request_too_large"


class UnsupportedMediaType(ApiError):
    status = 415
    error_type = "invalid_request_error"
    default_code = "unsupported_media_type"


class MethodNotAllowed(ApiError):
    status = 405
    error_type = "invalid_request_error"
    default_code = "method_not_allowed"


class ServiceUnavailable(ApiError):
    status = 503
    error_type = "server_error"
    default_code = "service_unavailable"


class InternalError(ApiError):
    """An error of batchgate's own: the caller learns nothing of its cause (the log does)."""

    status = 500
    error_type = "server_error"


class UpstreamError(ApiError):
    """The provider answered with an error; its status and (sanitised) error object are passed on."""

    error_type = "upstream_error"

    def __init__(
        self,
        status: int,
        message: str,
        *,
        error_type: str | None = None,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, param=param, code=code, headers=headers, status=status, error_type=error_type)


class ConfigError(Exception):
    """A configuration file that does not validate. The message names the file, the key path and the expectation."""


def error_object(message: str, error_type: str, *, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """The OpenAI error object: {"message", "type", "param", "code"} (param and code may be None)."""
    return {"message": message, "type": error_type, "param": param, "code": code}


def error_body(message: str, error_type: str, *, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """The OpenAI error answer: {"error": error_object(...)}."""
    return {"error": error_object(message, error_type, param=param, code=code)}


def error_bytes(message: str, error_type: str, *, param: str | None = None, code: str | None = None) -> bytes:
    return orjson.dumps(error_body(message, error_type, param=param, code=code))


UPSTREAM_AUTH_CODE = "upstream_authentication_error"
UPSTREAM_AUTH_STATUS = 502
_PROVIDER_AUTH_TYPES = frozenset({"authentication_error"})
_PROVIDER_AUTH_CODES = frozenset({"invalid_api_key", "authentication_error"})


def is_provider_auth_failure(status: int | None, error: Mapping[str, Any] | None = None) -> bool:
    """The provider refused batchgate's own credentials (its 401, or an error object saying so)."""
    if status == 401:
        return True
    if not error:
        return False
    return str(error.get("type") or "") in _PROVIDER_AUTH_TYPES or str(error.get("code") or "") in _PROVIDER_AUTH_CODES


def upstream_auth_error_object() -> dict[str, Any]:
    """What a caller learns when the provider refused batchgate's key: not `invalid_api_key`, which would tell
    the caller that their own key is wrong (answered with HTTP 502)."""
    return error_object(
        "The upstream provider refused the credentials batchgate holds for this model; the operator must fix "
        "the provider key (your own API key is fine).",
        "upstream_error",
        code=UPSTREAM_AUTH_CODE,
    )


def caller_facing_error(error: dict[str, Any]) -> dict[str, Any]:
    """A stored provider error object as a caller sees it: a provider auth failure becomes the upstream one."""
    return upstream_auth_error_object() if is_provider_auth_failure(None, error) else error


def provider_error_object(status: int, content: bytes) -> dict[str, Any]:
    """The error object of a provider's error answer (HTTP `status`, body `content`), in the OpenAI shape:
    its own `error` object when it has one with a message, else a generic `upstream_error` naming the status;
    a refusal of batchgate's own key is `upstream_auth_error_object()` whatever the provider said."""
    try:
        parsed = orjson.loads(content)
    except orjson.JSONDecodeError:
        parsed = None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if is_provider_auth_failure(status, error if isinstance(error, dict) else None):
        return upstream_auth_error_object()
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return error_object(
            error["message"],
            str(error.get("type") or "upstream_error"),
            param=error.get("param") if isinstance(error.get("param"), str) else None,
            code=str(error["code"]) if error.get("code") is not None else None,
        )
    return error_object(
        f"The upstream provider answered with HTTP {status}.", "upstream_error", code=FailureReason.UPSTREAM_ERROR
    )
