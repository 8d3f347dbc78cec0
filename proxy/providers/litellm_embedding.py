"""Synchronous embeddings through `litellm.aembedding`, for providers with no OpenAI-shaped endpoint.

The answer is OpenAI's CreateEmbeddingResponse (`object: list`, `data[]` of `embedding` objects, `model`,
`usage` with prompt and total tokens only); errors are the completion client's (same statuses and messages).
Floats are always asked of the provider (many litellm providers have no base64, and litellm's own types expect
floats); a caller that asked `encoding_format: base64` (the openai client's default) gets the floats encoded as
OpenAI does: little-endian float32, base64.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import orjson

from proxy.errors import error_body
from proxy.providers.base import UpstreamResponse, UpstreamStream
from proxy.providers.litellm_completion import JSON_HEADERS, LitellmCompletionClient, hidden_headers
from proxy.providers.passed_headers import from_litellm

ANSWER_FIELDS = ("object", "data", "model", "usage")


class LitellmEmbeddingClient(LitellmCompletionClient):
    """`/v1/embeddings` for one deployment through litellm; `complete(body)` embeds, `stream` is refused (the
    endpoint has no streaming)."""

    async def complete(self, body: Mapping[str, Any]) -> UpstreamResponse:
        litellm = self._library()
        params = self._call_params(body, stream=False)
        params.pop("encoding_format", None)
        as_base64 = body.get("encoding_format") == "base64"
        response, failure = await self._with_retries(lambda: litellm.aembedding(**params))
        if failure is not None:
            return failure
        headers = {**from_litellm(hidden_headers(response)), **JSON_HEADERS}
        content = orjson.dumps(embedding_answer(response, as_base64=as_base64), default=str)
        return UpstreamResponse(200, self._redactor.bytes(content), headers)

    @asynccontextmanager
    async def stream(self, body: Mapping[str, Any]) -> AsyncIterator[UpstreamStream]:
        refused = orjson.dumps(error_body("Embeddings cannot be streamed.", "invalid_request_error", param="stream"))
        yield UpstreamStream(400, dict(JSON_HEADERS), _single(refused))


def embedding_answer(response: Any, *, as_base64: bool = False) -> dict[str, Any]:
    """litellm's EmbeddingResponse as OpenAI's CreateEmbeddingResponse (usage: prompt and total tokens), each
    vector base64-encoded float32 when `as_base64`."""
    data: dict[str, Any] = response.model_dump() if hasattr(response, "model_dump") else dict(response)
    usage = data.get("usage") or {}
    prompt = int(usage.get("prompt_tokens") or 0)
    items = [
        {"object": "embedding", "index": int(item.get("index", index)), "embedding": _encoded(item, as_base64)}
        for index, item in enumerate(data.get("data") or [])
        if isinstance(item, Mapping)
    ]
    return {
        "object": "list",
        "data": items,
        "model": data.get("model"),
        "usage": {"prompt_tokens": prompt, "total_tokens": int(usage.get("total_tokens") or prompt)},
    }


def _encoded(item: Mapping[str, Any], as_base64: bool) -> Any:
    vector = item.get("embedding")
    if not as_base64 or not isinstance(vector, list):
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


async def _single(content: bytes) -> AsyncIterator[bytes]:
    yield content
