"""The lean synchronous path for OpenAI-shaped upstreams: bytes over a pooled aiohttp session.

aiohttp rather than httpx here: measured on this path, httpx spent ~70% of the proxy's CPU (anyio layers and a
per-request scan of the whole connection pool); aiohttp's C parser and TCP_NODELAY default keep it lean.

Upstream 429 and 5xx answers (and connection failures) are retried with exponential backoff that honours
`Retry-After`, within a bounded number of attempts and a time budget. A streaming call is retried only before
its first byte reaches the caller.
"""

from __future__ import annotations

import asyncio
import io
import random
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import orjson
from multidict import CIMultiDictProxy
from yarl import URL

from proxy.providers import openai_shape
from proxy.providers.base import ErrorClass, ProviderError, UpstreamResponse, UpstreamStream
from proxy.providers.passed_headers import passed_headers
from proxy.providers.redaction import Redactor
from proxy.providers.upstream_body import without_unstored_metadata

RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
LARGE_BODY_BYTES = 1 << 20  # aiohttp warns that sending more as raw bytes may block the event loop


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 3
    base_delay: float = 0.2
    max_delay: float = 8.0
    budget: float = 30.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_delay)
        backoff = min(self.max_delay, self.base_delay * 2.0 ** (attempt - 1))
        return backoff * (0.5 + random.random() / 2)

    async def wait(self, attempt: int, started: float, retry_after: float | None) -> bool:
        """Sleep before attempt `attempt + 1`; False (no sleep) when the attempts or the time budget are spent."""
        if attempt >= self.max_attempts:
            return False
        delay = self.delay(attempt, retry_after)
        if time.monotonic() - started + delay > self.budget:
            return False
        await asyncio.sleep(delay)
        return True


class SharedSession:
    """One pooled aiohttp session for every deployment, opened on first use inside the running event loop."""

    def __init__(self, *, total_timeout: float, connect_timeout: float) -> None:
        self._timeout = aiohttp.ClientTimeout(total=total_timeout, connect=connect_timeout)
        self._session: aiohttp.ClientSession | None = None

    def get(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=512, keepalive_timeout=60),
                timeout=self._timeout,
                skip_auto_headers=("User-Agent",),
                cookie_jar=aiohttp.DummyCookieJar(),  # a proxy keeps no cookies; the real jar filters every call
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class OpenAICompletionClient:
    """Chat completions against one OpenAI-shaped deployment (OpenAI, vLLM, Groq, the simulator, ...); with
    `path="/embeddings"` the same raw relay serves the embeddings endpoint."""

    def __init__(
        self,
        *,
        http: SharedSession,
        base_url: str,
        api_key: str | None,
        upstream_model: str,
        retry: RetryPolicy,
        extra_headers: Mapping[str, str] | None = None,
        reshape: bool = False,
        path: str = "/chat/completions",
    ) -> None:
        """`reshape`: make answers OpenAI-exact (proxy/providers/openai_shape.py), for OpenAI-shaped providers
        other than OpenAI itself, whose answers are relayed byte for byte."""
        self._http = http
        self._reshape = reshape
        self._url = URL(base_url.rstrip("/") + path)  # parsed once, not on every call
        self._keeps_metadata = path == "/responses"  # the Responses API takes metadata without `store`
        self._model = upstream_model
        self._retry = retry
        self._redactor = Redactor([api_key] if api_key else [])
        headers = {"content-type": "application/json", **(extra_headers or {})}
        if api_key:
            headers["authorization"] = f"Bearer {api_key}"
        self._headers = headers

    def _payload(self, body: Mapping[str, Any]) -> bytes:
        sent = body if self._keeps_metadata else without_unstored_metadata(body)
        return orjson.dumps({**sent, "model": self._model})

    async def complete(self, body: Mapping[str, Any]) -> UpstreamResponse:
        payload = self._payload(body)
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self._http.get().post(self._url, data=_sendable(payload), headers=self._headers) as response:
                    content = await response.read()
                    status, headers = response.status, response.headers
            except TimeoutError as exc:
                if not await self._backoff(attempt, started, None):
                    raise _timed_out() from exc
                continue
            except aiohttp.ClientError as exc:
                if not await self._backoff(attempt, started, None):
                    raise _unreachable() from exc
                continue
            if status in RETRYABLE_STATUSES and await self._backoff(attempt, started, _retry_after(headers)):
                continue
            content = self._redactor.bytes(content)
            if self._reshape and status < 400:
                content = openai_shape.completion_bytes(content)
            return UpstreamResponse(status, content, kept_headers(headers))

    @asynccontextmanager
    async def stream(self, body: Mapping[str, Any]) -> AsyncIterator[UpstreamStream]:
        payload = self._payload(body)
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self._http.get().post(self._url, data=_sendable(payload), headers=self._headers)
            except (TimeoutError, aiohttp.ClientError) as exc:
                if await self._backoff(attempt, started, None):
                    continue
                raise _unreachable() from exc
            if response.status in RETRYABLE_STATUSES and await self._backoff(
                attempt, started, _retry_after(response.headers)
            ):
                response.release()
                continue
            try:
                if response.status >= 400:
                    content = self._redactor.bytes(await response.read())
                    yield UpstreamStream(response.status, kept_headers(response.headers), _single_chunk(content))
                else:
                    chunks: AsyncIterator[bytes] = response.content.iter_any()
                    if self._reshape:
                        chunks = openai_shape.stream_bytes(chunks)
                    yield UpstreamStream(response.status, kept_headers(response.headers), chunks)
            finally:
                response.release()
            return

    async def _backoff(self, attempt: int, started: float, retry_after: float | None) -> bool:
        return await self._retry.wait(attempt, started, retry_after)

    async def aclose(self) -> None:
        """The pooled session is owned by the registry."""


async def _single_chunk(content: bytes) -> AsyncIterator[bytes]:
    yield content


def _timed_out() -> ProviderError:
    return ProviderError(
        None, "The upstream provider timed out.", code="upstream_timeout", classification=ErrorClass.TRANSIENT
    )


def _unreachable() -> ProviderError:
    return ProviderError(
        None,
        "The upstream provider could not be reached.",
        code="upstream_unreachable",
        classification=ErrorClass.TRANSIENT,
    )


def kept_headers(headers: CIMultiDictProxy[str]) -> dict[str, str]:
    """The provider's headers a caller gets (passed_headers.py), with its content type."""
    kept = passed_headers(headers.items())
    if "content-type" in headers:
        kept["content-type"] = headers["content-type"]
    return kept


def _retry_after(headers: CIMultiDictProxy[str]) -> float | None:
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _sendable(payload: bytes) -> bytes | io.BytesIO:
    """A large body (vision calls with base64 images) goes as a stream that aiohttp reads off the event loop; a
    fresh one per attempt, since a stream is consumed by the attempt that sends it."""
    return io.BytesIO(payload) if len(payload) > LARGE_BODY_BYTES else payload
