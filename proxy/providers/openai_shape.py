"""OpenAI-exact answers: a provider answer already in OpenAI's shape (litellm's ModelResponse dumped, a batch
line's body, an Anthropic message translated) made to validate against OpenAI's OpenAPI schemas
(`CreateChatCompletionResponse`, `CreateChatCompletionStreamResponse`; vendored in tests/support/openai_schema/).

The rules, the same on every lane and provider path:
- a key whose value is null is omitted (litellm dumps `tool_calls: null`, `function_call: null`, `audio: null`,
  null token-detail counts, ...), except where the schema requires the key and lets it be null: a choice's
  `logprobs`, a message's `content` and `refusal`, a chunk choice's `finish_reason`, a logprobs object's
  `content` and `refusal`, a token's `bytes`; those are added as null when missing;
- a stream's usage travels on its own last chunk with `choices: []`; when the caller asked for usage
  (`stream_options.include_usage`) every other chunk has `usage: null`, and when it did not no chunk has usage.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson

from proxy.providers.stream_usage import SSE_EVENT_END


def completion(data: Mapping[str, Any]) -> dict[str, Any]:
    """A `chat.completion` object as OpenAI sends it (see the module docstring for the rules)."""
    shaped: dict[str, Any] = _pruned(data)
    for choice in _dicts(shaped.get("choices")):
        choice.setdefault("logprobs", None)
        _shape_logprobs(choice["logprobs"])
        message = choice.get("message")
        if isinstance(message, dict):
            message.setdefault("content", None)
            message.setdefault("refusal", None)
    return shaped


def chunks(data: Mapping[str, Any], *, include_usage: bool) -> list[dict[str, Any]]:
    """One stream chunk as the chunks OpenAI would send for it: itself, or (usage riding on a chunk that still
    carries a choice with something in it) that chunk with `usage: null` followed by the usage-only chunk."""
    shaped: dict[str, Any] = _pruned(data)
    for choice in _dicts(shaped.get("choices")):
        choice.setdefault("finish_reason", None)
        choice.setdefault("logprobs", None)
        _shape_logprobs(choice["logprobs"])
        choice.setdefault("delta", {})
    usage = shaped.pop("usage", None)
    if not include_usage:
        return [shaped]
    if usage is None:
        return [{**shaped, "usage": None}]
    if not any(_carries_something(choice) for choice in _dicts(shaped.get("choices"))):
        return [{**shaped, "choices": [], "usage": usage}]
    return [{**shaped, "usage": None}, {**shaped, "choices": [], "usage": usage}]


def completion_bytes(content: bytes) -> bytes:
    """`completion` applied to a JSON answer body; a body that is not a JSON object (or too deep to walk) is
    returned as it came, so the caller gets the upstream's own bytes rather than an error of ours."""
    try:
        data = orjson.loads(content)
        return orjson.dumps(completion(data)) if isinstance(data, dict) else content
    except (orjson.JSONDecodeError, RecursionError):
        return content


async def stream_bytes(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """An SSE chat-completions stream (`data: {chunk}` events, then `data: [DONE]`) with every chunk made
    OpenAI-exact by `chunks(..., include_usage=True)`; events that are not a JSON chunk pass through unchanged.
    Used for OpenAI-shaped providers other than OpenAI (which are asked for usage on every stream)."""
    pending = b""
    async for received in chunks:
        pending += received
        *events, pending = SSE_EVENT_END.split(pending)
        if events:
            yield b"".join(_reshaped_event(event) for event in events)
    if pending:
        yield _reshaped_event(pending)


def _reshaped_event(event: bytes) -> bytes:
    if not event.startswith(b"data:"):
        return event + b"\n\n"
    payload = event[5:].strip()
    try:
        data = orjson.loads(payload)
        if not isinstance(data, dict):
            return event + b"\n\n"
        return b"".join(b"data: " + orjson.dumps(chunk) + b"\n\n" for chunk in chunks(data, include_usage=True))
    except (orjson.JSONDecodeError, RecursionError):
        return event + b"\n\n"


def include_usage(body: Mapping[str, Any]) -> bool:
    """Whether a chat request asked for a stream's usage chunk (`stream_options.include_usage`)."""
    options = body.get("stream_options")
    return isinstance(options, Mapping) and options.get("include_usage") is True


def _pruned(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _pruned(item) for key, item in value.items() if item is not None}
    if isinstance(value, list | tuple):
        return [_pruned(item) for item in value]
    return value


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _shape_logprobs(logprobs: Any) -> None:
    if not isinstance(logprobs, dict):
        return
    for key in ("content", "refusal"):
        logprobs.setdefault(key, None)
        for token in _dicts(logprobs[key]):
            token.setdefault("bytes", None)
            token.setdefault("top_logprobs", [])
            for alternative in _dicts(token.get("top_logprobs")):
                alternative.setdefault("bytes", None)


def _carries_something(choice: Mapping[str, Any]) -> bool:
    return bool(choice.get("delta")) or choice.get("finish_reason") is not None or choice.get("logprobs") is not None
