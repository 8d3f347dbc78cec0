"""One error hierarchy, mapped in one place to the OpenAI error shape.

Every error a caller can see is an `ApiError`; `app.py` installs the handlers that turn it (and FastAPI's own
validation and HTTP errors) into `{"error": {"message", "type", "param", "code"}}` with the right status.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from proxy.providers.base import ProviderError

JSON_MEDIA_TYPE = "application/json"


class ApiError(Exception):
    """An error meant for the caller: status, OpenAI error type, message, and optionally param and code."""

    status = 500
    error_type = "server_error"
    default_code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        self.headers = headers or {}

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


class PayloadTooLarge(ApiError):
    status = 413
    error_type = "invalid_request_error"
    default_code = "request_too_large"


class UnsupportedMediaType(ApiError):
    status = 415
    error_type = "invalid_request_error"
    default_code = "unsupported_media_type"


class ServiceUnavailable(ApiError):
    status = 503
    error_type = "server_error"
    default_code = "service_unavailable"


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
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, param=param, code=code, headers=headers)
        self.status = status
        if error_type:
            self.error_type = error_type


def upstream_failure(exc: ProviderError) -> UpstreamError:
    """A provider call that failed without an answer to pass on (the provider's own error answers are passed on
    as they are): 504 for a timeout, 502 when the provider could not be reached."""
    status = exc.status if exc.status is not None else (504 if exc.code == "upstream_timeout" else 502)
    return UpstreamError(status, exc.message, error_type="server_error", code=exc.code)


class ConfigError(Exception):
    """A configuration file that does not validate. The message names the file, the key path and the expectation."""


def error_body(message: str, error_type: str, *, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def error_bytes(message: str, error_type: str, *, param: str | None = None, code: str | None = None) -> bytes:
    return orjson.dumps(error_body(message, error_type, param=param, code=code))


def error_response(exc: ApiError) -> Response:
    """The one mapping from an ApiError to an HTTP response."""
    return Response(
        error_bytes(exc.message, exc.error_type, param=exc.param, code=exc.code),
        status_code=exc.status,
        media_type=JSON_MEDIA_TYPE,
        headers=exc.headers,
    )


def internal_error_response() -> Response:
    return Response(
        error_bytes("The server had an error while processing your request.", "server_error"),
        status_code=500,
        media_type=JSON_MEDIA_TYPE,
    )


def store_unavailable_response() -> Response:
    """Redis could not be reached (or its pool is exhausted): nothing was accepted, the caller may retry."""
    return error_response(
        ServiceUnavailable("The job store is unavailable right now; please retry.", headers={"retry-after": "1"})
    )
