"""OpenAI chat-completions wire format: body validation, `chat.completion` objects and SSE chunks."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import orjson

from proxy.simulator.answers import Answer

SYSTEM_FINGERPRINT = "fp_batchgate_sim"
ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
SERVICE_TIERS = frozenset({"auto", "default", "flex", "priority", "scale"})
MAX_CHOICES = 128

Problem = tuple[str, str | None]  # (message, param)


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _message_problem(index: int, message: Any) -> Problem | None:
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        return f"Invalid type for '{where}': expected an object.", where
    role = message.get("role")
    if role not in ROLES:
        return f"Invalid value for '{where}.role': {role!r} is not a supported role.", f"{where}.role"
    content = message.get("content")
    if content is None and not (role == "assistant" and (message.get("tool_calls") or message.get("refusal"))):
        return f"Missing required parameter: '{where}.content'.", f"{where}.content"
    if content is not None and not isinstance(content, str | list):
        return f"Invalid type for '{where}.content': expected a string or an array.", f"{where}.content"
    return None


def _options_problem(body: Mapping[str, Any]) -> Problem | None:
    for key in ("max_tokens", "max_completion_tokens"):
        if body.get(key) is not None and not _positive_int(body[key]):
            return f"Invalid '{key}': expected an integer of at least 1.", key
    n = body.get("n")
    if n is not None and not (_positive_int(n) and n <= MAX_CHOICES):
        return f"Invalid 'n': expected an integer from 1 to {MAX_CHOICES}.", "n"
    tier = body.get("service_tier")
    if tier is not None and tier not in SERVICE_TIERS:
        return f"Invalid value for 'service_tier': {tier!r}.", "service_tier"
    if body.get("stream") is not None and not isinstance(body["stream"], bool):
        return "Invalid type for 'stream': expected a boolean.", "stream"
    if body.get("stream_options") is not None and not body.get("stream"):
        return "The 'stream_options' parameter is only allowed when 'stream' is enabled.", "stream_options"
    return None


def chat_problem(body: Any) -> Problem | None:
    """Why a chat-completions body is invalid (OpenAI's 400 message and param), or None."""
    if not isinstance(body, dict):
        return "The request body must be a JSON object.", None
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return "you must provide a model parameter", "model"
    messages = body.get("messages")
    if messages is None:
        return "Missing required parameter: 'messages'.", "messages"
    if not isinstance(messages, list) or not messages:
        return "Invalid 'messages': expected a non-empty array.", "messages"
    for index, message in enumerate(messages):
        problem = _message_problem(index, message)
        if problem:
            return problem
    return _options_problem(body)


def store_problem(body: Mapping[str, Any]) -> Problem | None:
    """OpenAI refuses chat `metadata` unless the completion is stored (`store: true`)."""
    if body.get("metadata") is not None and body.get("store") is not True:
        return "The 'metadata' parameter is only allowed when 'store' is enabled.", "metadata"
    return None


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:29]}"


def usage_json(answer: Answer) -> dict[str, Any]:
    return {
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "total_tokens": answer.total_tokens,
        "prompt_tokens_details": {"cached_tokens": answer.cache_read_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def response_tier(body: Mapping[str, Any]) -> str:
    return "flex" if body.get("service_tier") == "flex" else "default"


def tool_calls_json(answer: Answer) -> list[dict[str, Any]]:
    return [
        {
            "id": f"call_{call.key}",
            "type": "function",
            "function": {"name": call.name, "arguments": call.arguments_json},
        }
        for call in answer.tool_calls
    ]


def completion(model: str, answer: Answer, *, service_tier: str, created: int | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": None if answer.tool_calls else answer.content,
        "refusal": None,
        "annotations": [],
    }
    if answer.tool_calls:
        message["tool_calls"] = tool_calls_json(answer)
    return {
        "id": completion_id(),
        "object": "chat.completion",
        "created": created if created is not None else int(time.time()),
        "model": model,
        "choices": [
            {"index": index, "message": message, "logprobs": None, "finish_reason": answer.finish_reason}
            for index in range(answer.choices)
        ],
        "usage": usage_json(answer),
        "service_tier": service_tier,
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }


def sse_events(body: Mapping[str, Any], answer: Answer, *, chunk_chars: int) -> Iterator[bytes]:
    """The whole SSE stream, event by event, as OpenAI sends it (ends with `data: [DONE]`)."""
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    base: dict[str, Any] = {
        "id": completion_id(),
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": body["model"],
        "service_tier": response_tier(body),
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }
    choices = range(answer.choices)

    def event(deltas: list[dict[str, Any]], finish: str | None) -> bytes:
        chunk = {
            **base,
            "choices": [
                {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
                for index, delta in zip(choices, deltas, strict=True)
            ],
        }
        if include_usage:
            chunk["usage"] = None
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    first = {"role": "assistant", "content": None if answer.tool_calls else "", "refusal": None}
    yield event([first for _ in choices], None)
    for index, call in enumerate(tool_calls_json(answer)):
        opening = {**call, "function": {"name": call["function"]["name"], "arguments": ""}}
        yield event([{"tool_calls": [{"index": index, **opening}]} for _ in choices], None)
        arguments = {"index": index, "function": {"arguments": call["function"]["arguments"]}}
        yield event([{"tool_calls": [arguments]} for _ in choices], None)
    text = answer.content
    for start in range(0, len(text), chunk_chars):
        yield event([{"content": text[start : start + chunk_chars]} for _ in choices], None)
    yield event([{} for _ in choices], answer.finish_reason)
    if include_usage:
        yield b"data: " + orjson.dumps({**base, "choices": [], "usage": usage_json(answer)}) + b"\n\n"
    yield b"data: [DONE]\n\n"


def with_compatible_server_nulls(answer: dict[str, Any]) -> dict[str, Any]:
    """A chat.completion as OpenAI-compatible servers write it: optional fields null instead of absent."""
    for choice in answer["choices"]:
        choice["message"].setdefault("tool_calls", None)
        choice["message"]["function_call"] = None
    answer["usage"]["prompt_tokens_details"] = None
    answer["usage"]["completion_tokens_details"] = None
    return answer


def compatible_server_events(events: Iterator[bytes]) -> Iterator[bytes]:
    """`sse_events` as some OpenAI-compatible servers send them: the usage asked for rides on the finishing
    content chunk, no other chunk has a `usage` key, and no usage-only chunk follows."""
    chunks = [orjson.loads(event[6:]) for event in events if event != b"data: [DONE]\n\n"]
    usage = next((chunk["usage"] for chunk in chunks if chunk.get("usage")), None)
    content = [chunk for chunk in chunks if chunk["choices"]]
    for chunk in content:
        chunk.pop("usage", None)
    if usage is not None:
        content[-1]["usage"] = {**usage, "prompt_tokens_details": None, "completion_tokens_details": None}
    for chunk in content:
        yield b"data: " + orjson.dumps(chunk) + b"\n\n"
    yield b"data: [DONE]\n\n"
