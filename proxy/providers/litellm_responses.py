"""The Responses API through `litellm.aresponses`, for providers that do not serve `/v1/responses` themselves
(litellm speaks it natively where the provider has it, and bridges it to the provider's chat API elsewhere).

The answer is litellm's Response object dumped as OpenAI's (`object: response`, `output[]`, `usage` with input
and output tokens); a stream is litellm's events written as OpenAI's server-sent events (`event: <type>` and
`data: <event JSON>`), `response.completed` carrying the usage. Errors are the completion client's (same
statuses and short messages). A provider litellm cannot bridge answers with litellm's error, made OpenAI-shaped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import orjson

from proxy.providers.base import UpstreamResponse, UpstreamStream
from proxy.providers.litellm_completion import JSON_HEADERS, SSE_HEADERS, LitellmCompletionClient, hidden_headers
from proxy.providers.passed_headers import from_litellm

NOT_SENT = ("model", "stream", "stream_options")


class LitellmResponsesClient(LitellmCompletionClient):
    """`/v1/responses` for one deployment through litellm: `complete(body)` and `stream(body)`."""

    def _responses_params(self, body: Mapping[str, Any]) -> dict[str, Any]:
        params = {key: value for key, value in body.items() if key not in NOT_SENT}  # metadata needs no store
        params.update(self._params)
        return params

    async def _call(self, body: Mapping[str, Any], *, stream: bool) -> tuple[Any, UpstreamResponse | None]:
        """(litellm's answer, None), or (None, the OpenAI-shaped failure) once retries are spent."""
        litellm = self._library()
        params = self._responses_params(body)
        if stream:
            params["stream"] = True
        return await self._with_retries(lambda: litellm.aresponses(**params))

    async def complete(self, body: Mapping[str, Any]) -> UpstreamResponse:
        response, failure = await self._call(body, stream=False)
        if failure is not None:
            return failure
        headers = {**from_litellm(hidden_headers(response)), **JSON_HEADERS}
        content = orjson.dumps(_dumped(response), default=str)
        return UpstreamResponse(200, self._redactor.bytes(content), headers)

    @asynccontextmanager
    async def stream(self, body: Mapping[str, Any]) -> AsyncIterator[UpstreamStream]:
        events, failure = await self._call(body, stream=True)
        if failure is not None:
            yield UpstreamStream(failure.status, failure.headers, _single(failure.body))
            return
        yield UpstreamStream(200, {**from_litellm(hidden_headers(events)), **SSE_HEADERS}, self._events(events))

    async def _events(self, events: Any) -> AsyncIterator[bytes]:
        try:
            async for event in events:
                data = _dumped(event)
                kind = str(data.get("type") or "message").encode()
                payload = self._redactor.bytes(orjson.dumps(data, default=str))
                yield b"event: " + kind + b"\ndata: " + payload + b"\n\n"
        except Exception as exc:  # a failure mid-stream is reported in the stream, as OpenAI's `error` event
            error = orjson.loads(self.failure(exc).body).get("error", {})
            yield b"event: error\ndata: " + orjson.dumps({"type": "error", **error}) + b"\n\n"


def _dumped(value: Any) -> dict[str, Any]:
    data = value.model_dump(exclude_none=True) if hasattr(value, "model_dump") else dict(value)
    return data if isinstance(data, dict) else {}


async def _single(content: bytes) -> AsyncIterator[bytes]:
    yield content
