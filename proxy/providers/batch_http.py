"""The httpx plumbing both batch adapters share: provider answers and transport failures become ProviderError."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import httpx

from proxy.providers.base import ErrorClass, ProviderError
from proxy.providers.redaction import Redactor

# Idle connections are dropped after 2 s: servers commonly close them after 5 s (uvicorn does), and a request
# sent on a connection the server is closing fails with "server disconnected".
KEEPALIVE_EXPIRY = 2.0
_REENCODED = frozenset({"content-length", "content-encoding", "transfer-encoding"})  # the body is decoded, masked


def batch_http(
    *,
    base_url: str,
    headers: dict[str, str],
    timeout: float,
    params: Mapping[str, str] | None = None,
    auth: httpx.Auth | None = None,
) -> httpx.AsyncClient:
    """A client for one provider account; the credentials in `headers` (and a Bearer token `auth` sets) are masked
    out of every error answer. `params` are sent as the query string of every call (merged with a call's own)."""
    transport = httpx.AsyncHTTPTransport(retries=2, limits=httpx.Limits(keepalive_expiry=KEEPALIVE_EXPIRY))
    secrets = [value.removeprefix("Bearer ").strip() for value in headers.values()]
    masking = MaskingTransport(transport, Redactor(secrets))
    return httpx.AsyncClient(
        base_url=base_url, headers=headers, timeout=timeout, transport=masking, params=dict(params or {}), auth=auth
    )


class MaskingTransport(httpx.AsyncBaseTransport):
    """Masks the account's secrets in error answers (status >= 400) before anything reads them: a provider may
    echo the key it was sent, and error texts reach logs, job errors and callers. Successful answers (batch
    output files can be large) stream through untouched."""

    def __init__(self, inner: httpx.AsyncBaseTransport, redactor: Redactor) -> None:
        self._inner = inner
        self._redactor = redactor

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        # the token this call sent: a refreshed one (GoogleToken) is not among the secrets known at construction
        sent = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if response.status_code < 400 or not (self._redactor or sent):
            return response
        try:
            content = Redactor([sent]).bytes(self._redactor.bytes(await response.aread()))
        finally:
            await response.aclose()
        headers = [(name, value) for name, value in response.headers.multi_items() if name.lower() not in _REENCODED]
        return httpx.Response(response.status_code, headers=headers, content=content, request=request)

    async def aclose(self) -> None:
        await self._inner.aclose()


async def answer_json(
    request: Awaitable[httpx.Response], *, read: Callable[[httpx.Response], dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The JSON object the provider answers to `request` (an httpx call, not yet awaited). Raises ProviderError:
    TRANSIENT when no answer came (`provider_errors`), else as `read` says (default `json_or_raise`: the
    provider's status, code and message)."""
    with provider_errors():
        response = await request
    return (read or json_or_raise)(response)


@contextmanager
def provider_errors() -> Iterator[None]:
    """Network failures (no answer, a broken stream, a timeout) become a TRANSIENT ProviderError."""
    try:
        yield
    except httpx.HTTPError as exc:
        raise ProviderError(None, f"{type(exc).__name__}: {exc}", classification=ErrorClass.TRANSIENT) from exc


def json_or_raise(response: httpx.Response, *, code_field: str = "code") -> dict[str, Any]:
    """The JSON object of a successful answer; a ProviderError with the provider's status, code and message
    otherwise (`code_field`: where the provider puts its error code: OpenAI `code`, Anthropic `type`)."""
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if response.status_code >= 400 or not isinstance(payload, dict):
        error = payload.get("error") if isinstance(payload, dict) else None
        message = error.get("message") if isinstance(error, dict) else response.text[:500]
        code = error.get(code_field) if isinstance(error, dict) else None
        raise ProviderError(response.status_code, str(message), code=code if isinstance(code, str) else None)
    return payload
