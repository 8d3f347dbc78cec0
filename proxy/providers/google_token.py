"""Google OAuth access tokens for the Vertex AI batch lane (its jobs and its GCS objects), as an httpx Auth.

A static token (the deployment's `api_key`, or VERTEXAI_ACCESS_TOKEN) is sent as it is. Without one, Application
Default Credentials (google-auth's `google.auth.default()`: GOOGLE_APPLICATION_CREDENTIALS, gcloud's
application-default file, or the metadata server) are loaded once, at the first call, and refreshed only when
google-auth counts the token stale (within 3 min 45 s of its expiry), one refresh at a time, never per call. The
blocking google-auth calls run in a thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

import httpx

from proxy.providers.base import ErrorClass, ProviderError

SCOPE = "https://www.googleapis.com/auth/cloud-platform"  # Vertex AI and Cloud Storage


class GoogleToken(httpx.Auth):
    """`Authorization: Bearer <token>` on each request: `static` when given, else an ADC token kept fresh.
    ADC that cannot be loaded or refreshed raises ProviderError from the request: ACCOUNT_PROBLEM (no credentials,
    a refused refresh), TRANSIENT (the token endpoint unreachable, or google-auth calls the failure retryable)."""

    def __init__(self, static: str | None = None) -> None:
        self._static = static or None
        self._credentials: Any = None  # google.auth.credentials.Credentials, loaded at the first call
        self._lock = asyncio.Lock()

    @property
    def is_static(self) -> bool:
        return self._static is not None

    async def token(self) -> str:
        if self._static is not None:
            return self._static
        from google.auth import exceptions  # noqa: PLC0415 - loaded only by a deployment that uses ADC

        async with self._lock:
            try:
                if self._credentials is None:
                    self._credentials = await asyncio.to_thread(_default_credentials)
                if not self._credentials.valid:  # no token yet, or stale: google-auth's own threshold
                    await asyncio.to_thread(_refresh, self._credentials)
            except exceptions.GoogleAuthError as exc:
                transient = isinstance(exc, exceptions.TransportError) or getattr(exc, "retryable", False)
                kind = ErrorClass.TRANSIENT if transient else ErrorClass.ACCOUNT_PROBLEM
                status = None if transient else 401
                raise ProviderError(status, f"Google credentials: {exc}", classification=kind) from exc
            token: str = self._credentials.token
            return token

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        request.headers["authorization"] = f"Bearer {await self.token()}"
        yield request


def _default_credentials() -> Any:
    import google.auth  # noqa: PLC0415

    credentials, _ = google.auth.default(scopes=[SCOPE])
    return credentials


def _refresh(credentials: Any) -> None:
    from google.auth.transport.requests import Request  # noqa: PLC0415

    credentials.refresh(Request())
