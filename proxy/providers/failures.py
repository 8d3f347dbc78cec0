"""A provider failure as the caller's answer: the translation from ProviderError (providers/base.py) to the
HTTP error of the error map (errors.py), kept beside the providers so that errors.py imports none of them."""

from __future__ import annotations

from proxy.errors import UPSTREAM_AUTH_STATUS, UpstreamError, is_provider_auth_failure, upstream_auth_error_object
from proxy.providers.base import ProviderError


def upstream_failure(exc: ProviderError) -> UpstreamError:
    """A provider call that failed without an answer to pass on (the provider's own error answers are passed on
    as they are): 504 for a timeout, 502 when the provider could not be reached or refused batchgate's key."""
    if is_provider_auth_failure(exc.status, {"code": exc.code}):
        error = upstream_auth_error_object()
        return UpstreamError(UPSTREAM_AUTH_STATUS, error["message"], error_type=error["type"], code=error["code"])
    status = exc.status if exc.status is not None else (504 if exc.code == "upstream_timeout" else 502)
    return UpstreamError(status, exc.message, error_type="server_error", code=exc.code)
