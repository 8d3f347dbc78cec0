"""Google OAuth access tokens for the Vertex AI batch lane (its jobs and its GCS objects), as an httpx Auth.

A static token (the deployment's `api_key`, or VERTEXAI_ACCESS_TOKEN) is sent as it is. Without one, the
deployment's `vertex_credentials` (as litellm reads them: a credentials file's path, or its JSON) or else
Application Default Credentials (google-auth's `google.auth.default()`: GOOGLE_APPLICATION_CREDENTIALS, gcloud's
application-default file, or the metadata server) are loaded once, at the first call, and refreshed only when
google-auth counts the token stale (within 3 min 45 s of its expiry), one refresh at a time, never per call. The
blocking google-auth calls run in a thread.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import httpx

from proxy.providers.base import ErrorClass, ProviderError

SCOPE = "https://www.googleapis.com/auth/cloud-platform"  # Vertex AI and Cloud Storage


class GoogleToken(httpx.Auth):
    """`Authorization: Bearer <token>` on each request: `static` when given, else a token of `credentials` (a
    credentials file's path or its JSON text or object) or of ADC, kept fresh.
    ADC that cannot be loaded or refreshed raises ProviderError from the request: ACCOUNT_PROBLEM (no credentials,
    a refused refresh), TRANSIENT (the token endpoint unreachable, or google-auth calls the failure retryable)."""

    def __init__(self, static: str | None = None, credentials: str | Mapping[str, Any] | None = None) -> None:
        self._static = static or None
        self._source = credentials or None
        self._credentials: Any = None  # google.auth.credentials.Credentials, loaded at the first call
        self._lock = asyncio.Lock()

    async def token(self) -> str:
        """The access token to send (the static one, else the credentials' current token, loaded or refreshed
        first when google-auth counts it missing or stale); ProviderError as the class says."""
        if self._static is not None:
            return self._static
        from google.auth import exceptions  # noqa: PLC0415 - loaded only by a deployment that uses ADC

        async with self._lock:
            try:
                if self._credentials is None:
                    self._credentials = await asyncio.to_thread(_load_credentials, self._source)
                if not self._credentials.valid:  # no token yet, or stale: google-auth's own threshold
                    await asyncio.to_thread(_refresh, self._credentials)
            except (exceptions.GoogleAuthError, ValueError) as exc:  # ValueError: credentials that do not parse
                transient = isinstance(exc, exceptions.TransportError) or getattr(exc, "retryable", False)
                kind = ErrorClass.TRANSIENT if transient else ErrorClass.ACCOUNT_PROBLEM
                status = None if transient else 401
                raise ProviderError(status, f"Google credentials: {exc}", classification=kind) from exc
            token: str = self._credentials.token
            return token

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        request.headers["authorization"] = f"Bearer {await self.token()}"
        yield request


def _load_credentials(source: str | Mapping[str, Any] | None) -> Any:
    import google.auth  # noqa: PLC0415

    if source is None:
        credentials, _ = google.auth.default(scopes=[SCOPE])
        return credentials
    if isinstance(source, str) and os.path.exists(source):
        with open(source, encoding="utf-8") as handle:
            source = handle.read()
    info = json.loads(source) if isinstance(source, str) else dict(source)
    return _typed_credentials(info)


def _typed_credentials(info: dict[str, Any]) -> Any:
    """Credentials of the kinds litellm reads (service account, authorized user, workload identity federation),
    each through its own loader (google-auth's generic loader warns that it validates nothing)."""
    kind = info.get("type")
    if kind == "service_account":
        from google.oauth2 import service_account  # noqa: PLC0415

        return service_account.Credentials.from_service_account_info(info, scopes=[SCOPE])
    if kind == "authorized_user":
        from google.oauth2 import credentials  # noqa: PLC0415

        return credentials.Credentials.from_authorized_user_info(info, scopes=[SCOPE])
    if kind == "external_account":
        source = info.get("credential_source")
        source = source if isinstance(source, dict) else {}
        if "aws" in str(source.get("environment_id", "")):
            from google.auth import aws  # noqa: PLC0415

            return aws.Credentials.from_info(info, scopes=[SCOPE])
        if "executable" in source:
            from google.auth import pluggable  # noqa: PLC0415

            return pluggable.Credentials.from_info(info, scopes=[SCOPE])
        from google.auth import identity_pool  # noqa: PLC0415

        return identity_pool.Credentials.from_info(info, scopes=[SCOPE])
    raise ValueError(f"unsupported Google credentials type {kind!r}")


def _refresh(credentials: Any) -> None:
    from google.auth.transport.requests import Request  # noqa: PLC0415

    credentials.refresh(Request())
