"""OpenAI chat-completions <-> Anthropic Messages: request params, result messages, usage and errors.

Pure functions, so a batch's lines translate the same way everywhere and the unit tests need no network.
What Anthropic has no counterpart for is dropped, not refused: `n` (always one choice), `response_format`,
`logprobs`, `seed`, penalties, `service_tier`. Temperatures above Anthropic's ceiling of 1 are clamped.
Claude's own rules are kept: `top_p` is dropped when `temperature` is set too (Claude 4.5 and later refuse
both), and empty text blocks are left out (Claude refuses them; an assistant turn `content: ""` with tool
calls becomes its tool_use blocks alone).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from proxy.errors import error_body

# Anthropic requires max_tokens; OpenAI callers often leave it out. litellm uses the same default.
DEFAULT_MAX_TOKENS = 4096
MAX_TEMPERATURE = 1.0
SYSTEM_ROLES = frozenset({"system", "developer"})

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# Anthropic error type -> (HTTP status, OpenAI error type)
ERROR_TYPES: Mapping[str, tuple[int, str]] = {
    "invalid_request_error": (400, "invalid_request_error"),
    "authentication_error": (401, "authentication_error"),
    "billing_error": (402, "invalid_request_error"),
    "permission_error": (403, "permission_error"),
    "not_found_error": (404, "not_found_error"),
    "request_too_large": (413, "invalid_request_error"),
    "rate_limit_error": (429, "rate_limit_error"),
    "api_error": (500, "server_error"),
    "timeout_error": (504, "server_error"),
    "overloaded_error": (529, "server_error"),
}


# OpenAI request -> Anthropic params


def messages_params(body: Mapping[str, Any], *, model: str | None = None) -> dict[str, Any]:
    """Anthropic Messages params for an OpenAI chat body (the body is assumed to have passed OpenAI validation)."""
    system, messages = _split_messages(body.get("messages") or ())
    params: dict[str, Any] = {
        "model": model or str(body.get("model", "")),
        "max_tokens": _max_tokens(body),
        "messages": messages,
    }
    if system is not None:
        params["system"] = system
    temperature = body.get("temperature")
    if isinstance(temperature, int | float) and not isinstance(temperature, bool):
        params["temperature"] = min(float(temperature), MAX_TEMPERATURE)
    if isinstance(body.get("top_p"), int | float) and "temperature" not in params:
        params["top_p"] = body["top_p"]
    stop = body.get("stop")
    if isinstance(stop, str):
        params["stop_sequences"] = [stop]
    elif isinstance(stop, list) and stop:
        params["stop_sequences"] = [str(item) for item in stop]
    if isinstance(body.get("user"), str):
        params["metadata"] = {"user_id": body["user"]}
    tools = body.get("tools")
    if isinstance(tools, list) and tools:
        params["tools"] = [_tool(tool) for tool in tools if isinstance(tool, Mapping)]
        choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
        if choice is not None:
            params["tool_choice"] = choice
    return params


def _max_tokens(body: Mapping[str, Any]) -> int:
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return value
    return DEFAULT_MAX_TOKENS


def _split_messages(raw: Sequence[Any]) -> tuple[str | list[dict[str, Any]] | None, list[dict[str, Any]]]:
    """(system, messages): system and developer messages become the top-level `system`; consecutive tool
    results become one user message, as Anthropic wants every result of a turn together."""
    system_parts: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    for message in raw:
        if not isinstance(message, Mapping):
            continue
        role = message.get("role")
        if role in SYSTEM_ROLES:
            system_parts.extend(_content_blocks(message.get("content")))
        elif role == "tool":
            block = _tool_result(message)
            if messages and messages[-1]["role"] == "user" and _all_tool_results(messages[-1]["content"]):
                messages[-1]["content"].append(block)
            else:
                messages.append({"role": "user", "content": [block]})
        elif role == "assistant":
            messages.append({"role": "assistant", "content": _assistant_content(message)})
        else:
            messages.append({"role": "user", "content": _content(message.get("content"))})
    return _system(system_parts), messages


def _system(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]] | None:
    if not parts:
        return None
    if len(parts) == 1 and set(parts[0]) == {"type", "text"}:
        text: str = parts[0]["text"]
        return text
    return parts


def _all_tool_results(content: Any) -> bool:
    return isinstance(content, list) and all(block.get("type") == "tool_result" for block in content)


def _content(content: Any) -> str | list[dict[str, Any]]:
    """A string stays a string (the common case); a list of parts becomes content blocks."""
    if isinstance(content, str):
        return content
    return _content_blocks(content)


def _content_blocks(content: Any) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for part in content if isinstance(content, list) else ():
        if not isinstance(part, Mapping):
            continue
        block = _block(part)
        if block is not None and block != {"type": "text", "text": ""}:
            if isinstance(part.get("cache_control"), Mapping):
                block["cache_control"] = dict(part["cache_control"])
            blocks.append(block)
    return blocks


def _block(part: Mapping[str, Any]) -> dict[str, Any] | None:
    kind = part.get("type")
    if kind == "text":
        return {"type": "text", "text": str(part.get("text", ""))}
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, Mapping) else image
        return _image(str(url or ""))
    return None


def _image(url: str) -> dict[str, Any]:
    if url.startswith("data:") and ";base64," in url:
        header, _, data = url.partition(";base64,")
        return {"type": "image", "source": {"type": "base64", "media_type": header.removeprefix("data:"), "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _assistant_content(message: Mapping[str, Any]) -> str | list[dict[str, Any]]:
    calls = message.get("tool_calls")
    if not calls:
        content = message.get("content")
        return content if isinstance(content, str) else _content_blocks(content)
    blocks = _content_blocks(message.get("content"))
    for call in calls:
        function = call.get("function") or {}
        blocks.append(
            {
                "type": "tool_use",
                "id": str(call.get("id", "")),
                "name": str(function.get("name", "")),
                "input": _arguments(function.get("arguments")),
            }
        )
    return blocks


def _arguments(raw: Any) -> Any:
    if isinstance(raw, str):
        try:
            return orjson.loads(raw) if raw.strip() else {}
        except orjson.JSONDecodeError:
            return {"arguments": raw}
    return raw if isinstance(raw, dict) else {}


def _tool_result(message: Mapping[str, Any]) -> dict[str, Any]:
    content = message.get("content")
    result: Any = content if isinstance(content, str) else _content_blocks(content)
    return {"type": "tool_result", "tool_use_id": str(message.get("tool_call_id", "")), "content": result}


def _tool(tool: Mapping[str, Any]) -> dict[str, Any]:
    function = tool.get("function") or {}
    converted: dict[str, Any] = {
        "name": str(function.get("name", "")),
        "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
    }
    if function.get("description"):
        converted["description"] = function["description"]
    return converted


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    converted: dict[str, Any] | None
    if choice == "auto":
        converted = {"type": "auto"}
    elif choice == "required":
        converted = {"type": "any"}
    elif choice == "none":
        converted = {"type": "none"}
    elif isinstance(choice, Mapping) and isinstance(choice.get("function"), Mapping):
        converted = {"type": "tool", "name": str(choice["function"].get("name", ""))}
    else:
        converted = None
    if parallel is False:
        converted = {**(converted or {"type": "auto"}), "disable_parallel_tool_use": True}
    return converted


# Anthropic result -> OpenAI response


def chat_completion(message: Mapping[str, Any], *, created: int | None = None) -> dict[str, Any]:
    """An OpenAI `chat.completion` for an Anthropic `message` object."""
    texts: list[str] = []
    thinking: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in message.get("content") or ():
        kind = block.get("type")
        if kind == "text":
            texts.append(str(block.get("text", "")))
        elif kind == "thinking":
            thinking.append(str(block.get("thinking", "")))
        elif kind == "tool_use":
            calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": orjson.dumps(block.get("input")).decode()},
                }
            )
    reply: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        reply["tool_calls"] = calls
    if thinking:
        reply["reasoning_content"] = "".join(thinking)
    stop_reason = message.get("stop_reason")
    return {
        "id": str(message.get("id", "")),
        "object": "chat.completion",
        "created": created if created is not None else int(time.time()),
        "model": message.get("model"),
        "choices": [
            {
                "index": 0,
                "message": reply,
                "logprobs": None,
                "finish_reason": FINISH_REASONS.get(str(stop_reason), "stop"),
            }
        ],
        "usage": chat_usage(message.get("usage") or {}),
    }


def chat_usage(usage: Mapping[str, Any]) -> dict[str, Any]:
    """OpenAI usage: prompt_tokens counts every input token (cache reads and writes included, as OpenAI's
    do), and cached_tokens the cache reads; cache writes are kept as `cache_creation_input_tokens`."""
    fresh = int(usage.get("input_tokens") or 0)
    cache_read = int(usage.get("cache_read_input_tokens") or 0)
    cache_write = int(usage.get("cache_creation_input_tokens") or 0)
    completion = int(usage.get("output_tokens") or 0)
    prompt = fresh + cache_read + cache_write
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cache_read},
        "cache_read_input_tokens": cache_read,
        "cache_creation_input_tokens": cache_write,
    }


def error_status(error_type: str | None) -> tuple[int, str]:
    """(HTTP status, OpenAI error type) of an Anthropic error type."""
    return ERROR_TYPES.get(str(error_type), (500, "server_error"))


def chat_error(error: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
    """(status, OpenAI error body) for an Anthropic error object `{"type": "...", "message": "..."}`."""
    kind = error.get("type")
    status, openai_type = error_status(str(kind))
    body = error_body(str(error.get("message", "")), openai_type, code=None if kind is None else str(kind))
    return status, body
