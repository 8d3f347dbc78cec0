"""Synchronous calls through `litellm.acompletion`, for providers with no OpenAI-compatible endpoint (Anthropic,
Bedrock, Vertex, ...). litellm translates both ways; the caller still gets OpenAI-shaped bytes.

litellm is imported on the first call (the import takes seconds), with its price map kept local.
It costs a few milliseconds of CPU per call more than the raw OpenAI-shaped path; that path stays for the
providers that can take it. Errors become an UpstreamResponse with the provider's status and an OpenAI error
body whose message is short: the provider's own error message when it gave one, else a fixed sentence (never
litellm's text, which can carry a traceback, file paths and a bug-report link); the whole exception goes to the
log. The deployment's key is masked out of every message. The provider's request id and rate-limit headers
(passed_headers.py) come back on answers and errors alike.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import httpx
import orjson

from proxy.errors import error_body
from proxy.providers import openai_shape
from proxy.providers.base import UpstreamResponse, UpstreamStream
from proxy.providers.claude_rules import refusal
from proxy.providers.openai_http import RETRYABLE_STATUSES, RetryPolicy
from proxy.providers.passed_headers import from_litellm
from proxy.providers.redaction import Redactor
from proxy.providers.upstream_body import without_unstored_metadata

JSON_HEADERS = {"content-type": "application/json"}
SSE_HEADERS = {"content-type": "text/event-stream"}
DONE = b"data: [DONE]\n\n"
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout",
    422: "invalid_request_error",
    429: "rate_limit_error",
}
GENERIC_MESSAGES = {
    "upstream_timeout": "The upstream provider timed out.",
    "upstream_unreachable": "The upstream provider could not be reached.",
}
# "litellm.BadRequestError: AnthropicException - <detail>. Handle with `litellm.BadRequestError`."
_LITELLM_PREFIX = re.compile(r"^(?:litellm\.\w+:\s*)+(?:\w+Exception\s+-\s+)?")
_LITELLM_SUFFIX = re.compile(r"\.?\s*Handle with `litellm\.\w+`\.?$")
_NOT_FOR_CALLERS = re.compile(r"Traceback|File \"|\.py\b|site-packages|github\.com|bug|<\w+[ >]", re.IGNORECASE)
MAX_MESSAGE_CHARS = 300

log = logging.getLogger("batchgate.providers.litellm")


@functools.cache
def import_litellm() -> Any:
    """litellm, imported and warmed: its stream types build their pydantic schemas on first use and warn
    (UserWarning on a ReadOnly TypedDict item) while doing so; build them here, with that warning silenced.
    Once per process (a batch line asks for it each time; warming again cost 0.3 ms a line)."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm  # noqa: PLC0415 - slow import, deferred to the first call
    from litellm.types.utils import Delta, ModelResponse, ModelResponseStream  # noqa: PLC0415

    litellm.suppress_debug_info = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for model in (ModelResponse(), ModelResponseStream(), Delta(content="")):
            model.model_dump()
    return litellm


class LitellmCompletionClient:
    """Chat completions for one deployment (`provider/model`) through litellm."""

    def __init__(
        self,
        *,
        model: str,
        api_base: str | None,
        api_key: str | None,
        retry: RetryPolicy,
        timeout: float = 600.0,
        extra_params: Mapping[str, Any] | None = None,
    ) -> None:
        self._params: dict[str, Any] = {
            **(extra_params or {}),
            "model": model,
            "timeout": timeout,
            "drop_params": True,  # OpenAI-only options (service_tier, logprobs, ...) are dropped, not refused
            "num_retries": 0,  # retried here, by the same policy as the OpenAI-shaped path
        }
        if api_base:
            self._params["api_base"] = api_base
        if api_key:
            self._params["api_key"] = api_key
        self._retry = retry
        secrets = (api_key, self._params.get("azure_ad_token"))  # an Entra ID token is a credential too
        self._redactor = Redactor([str(secret) for secret in secrets if secret])
        self._litellm: Any = None

    def _library(self) -> Any:
        if self._litellm is None:
            self._litellm = import_litellm()
        return self._litellm

    def _call_params(self, body: Mapping[str, Any], *, stream: bool) -> dict[str, Any]:
        sent = without_unstored_metadata(body)
        params = {key: value for key, value in sent.items() if key not in ("model", "stream", "stream_options")}
        params.update(self._params)
        if stream:
            params["stream"] = True
            if body.get("stream_options"):
                params["stream_options"] = body["stream_options"]
        return params

    def _refused(self, body: Mapping[str, Any]) -> UpstreamResponse | None:
        """The 400 for a call Claude's rules refuse (the batch lane asks the same), before anything is sent."""
        model = str(self._params["model"])
        problem = refusal(body, model) if model.startswith("anthropic/") else None
        if problem is None:
            return None
        body_json = error_body(problem.message, "invalid_request_error", param=problem.param)
        return UpstreamResponse(400, orjson.dumps(body_json), dict(JSON_HEADERS))

    async def _with_retries(self, call: Callable[[], Awaitable[Any]]) -> tuple[Any, UpstreamResponse | None]:
        """(litellm's answer, None), or (None, the OpenAI-shaped failure) once a retryable failure (429, 5xx) has
        used up the retry policy or another failure came. `call` makes one attempt (an `a...` call of litellm)."""
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                return await call(), None
            except Exception as exc:  # every litellm failure becomes an OpenAI-shaped answer
                failure = self.failure(exc)
                if failure.status in RETRYABLE_STATUSES and await self._backoff(attempt, started, failure):
                    continue
                return None, failure

    async def complete(self, body: Mapping[str, Any]) -> UpstreamResponse:
        refused = self._refused(body)
        if refused is not None:
            return refused
        litellm = self._library()
        params = self._call_params(body, stream=False)
        response, failure = await self._with_retries(lambda: litellm.acompletion(**params))
        if failure is not None:
            return failure
        headers = {**from_litellm(hidden_headers(response)), **JSON_HEADERS}
        content = orjson.dumps(openai_shape.completion(_data(response)), default=str)
        return UpstreamResponse(200, self._redactor.bytes(content), headers)

    @asynccontextmanager
    async def stream(self, body: Mapping[str, Any]) -> AsyncIterator[UpstreamStream]:
        refused = self._refused(body)
        if refused is not None:
            yield UpstreamStream(refused.status, refused.headers, _single(refused.body))
            return
        litellm = self._library()
        params = self._call_params(body, stream=True)
        chunks, failure = await self._with_retries(lambda: litellm.acompletion(**params))
        if failure is not None:
            yield UpstreamStream(failure.status, failure.headers, _single(failure.body))
            return
        headers = {**from_litellm(hidden_headers(chunks)), **SSE_HEADERS}
        yield UpstreamStream(200, headers, self._sse(chunks, include_usage=openai_shape.include_usage(body)))

    async def _sse(self, chunks: Any, *, include_usage: bool) -> AsyncIterator[bytes]:
        try:
            async for chunk in chunks:
                for shaped in openai_shape.chunks(_data(chunk), include_usage=include_usage):
                    yield b"data: " + self._redactor.bytes(orjson.dumps(shaped, default=str)) + b"\n\n"
        except Exception as exc:  # a failure mid-stream is reported in the stream, as OpenAI does
            yield b"data: " + self.failure(exc).body + b"\n\n"
        yield DONE

    def failure(self, exc: Exception) -> UpstreamResponse:
        """An OpenAI-shaped error answer for a litellm exception, with the provider's status."""
        status, code = _status_of(exc)
        detail = self._redactor.text(str(getattr(exc, "message", None) or exc))
        message = public_message(detail, status, code)
        log.warning(
            "upstream call failed: %s", detail, extra={"status": status, "model": self._params["model"]},
            exc_info=exc if message not in detail else None,  # the traceback when the caller got a fixed sentence
        )  # fmt: skip
        error_type = ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        body = error_body(message, error_type, code=code)
        headers = {**from_litellm(_error_headers(exc)), **JSON_HEADERS}
        return UpstreamResponse(status, orjson.dumps(body), headers)

    async def _backoff(self, attempt: int, started: float, failure: UpstreamResponse) -> bool:
        hinted = failure.headers.get("retry-after")
        try:
            retry_after = float(hinted) if hinted else None
        except ValueError:
            retry_after = None
        return await self._retry.wait(attempt, started, retry_after)

    async def aclose(self) -> None:
        """litellm keeps its own pooled clients for the life of the process."""


def _data(model: Any) -> dict[str, Any]:
    """A litellm ModelResponse / stream chunk as a dict (shaped for callers by openai_shape)."""
    data: dict[str, Any] = model.model_dump(exclude_none=False) if hasattr(model, "model_dump") else dict(model)
    return data


def _status_of(exc: Exception) -> tuple[int, str | None]:
    causes = _causes(exc)
    if "Timeout" in type(exc).__name__ or any(
        isinstance(cause, TimeoutError | httpx.TimeoutException) for cause in causes
    ):
        return 504, "upstream_timeout"
    if any(isinstance(cause, OSError | httpx.TransportError | aiohttp.ClientConnectionError) for cause in causes):
        return 502, "upstream_unreachable"
    if type(exc).__name__ == "APIConnectionError":  # litellm's name for any failure it did not expect
        return 502, "upstream_error"
    status = getattr(exc, "status_code", None)
    if isinstance(status, int) and 400 <= status <= 599:
        return status, getattr(exc, "code", None) if isinstance(getattr(exc, "code", None), str) else None
    return 502, "upstream_error"


def _causes(exc: BaseException) -> list[BaseException]:
    """The exception and what it was raised from or during (litellm wraps the network error it met)."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def public_message(detail: str, status: int, code: str | None) -> str:
    """What the caller reads of a litellm exception's text `detail`: the provider's own error message when the
    text carries the provider's error object, else litellm's one-line explanation when it is short and names no
    code (a parameter the provider refuses, say), else a fixed sentence for the status."""
    text = _LITELLM_SUFFIX.sub("", _LITELLM_PREFIX.sub("", detail.strip(), count=1))
    provider = _provider_message(text)
    if provider is not None:
        return provider[:MAX_MESSAGE_CHARS]
    if code in GENERIC_MESSAGES:
        return GENERIC_MESSAGES[code]
    if "\n" in text or not text or len(text) > MAX_MESSAGE_CHARS or _NOT_FOR_CALLERS.search(text) or status >= 500:
        return f"The upstream provider's call failed (HTTP {status})."
    return text


def _provider_message(text: str) -> str | None:
    """The message of a provider error object (OpenAI's or Anthropic's shape) that `text` is, if it is one."""
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return message if isinstance(message, str) and message and not _NOT_FOR_CALLERS.search(message) else None


def hidden_headers(result: Any) -> Mapping[str, Any] | None:
    hidden = getattr(result, "_hidden_params", None)
    headers = hidden.get("additional_headers") if isinstance(hidden, dict) else None
    return headers if isinstance(headers, Mapping) else None


def _error_headers(exc: Exception) -> Mapping[str, Any] | None:
    headers = getattr(exc, "litellm_response_headers", None)
    if headers is None:
        response = getattr(exc, "response", None)
        headers = getattr(response, "headers", None)
    return headers if isinstance(headers, Mapping) else None


async def _single(content: bytes) -> AsyncIterator[bytes]:
    yield content
