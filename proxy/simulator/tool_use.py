"""Deterministic tool calls, the same for every face (OpenAI `tools`/`tool_choice`, Anthropic `tools`/`tool_choice`).

The rule: a request that offers tools, does not forbid them (`none`), and whose last message is not a tool result
is answered with tool calls: the named tool when `tool_choice` names one, else every offered tool when parallel
calls are allowed (OpenAI `parallel_tool_calls`, default true; Anthropic `disable_parallel_tool_use`, default
false), else the first. A request whose last message carries tool results is answered with text as usual.
Arguments follow each tool's JSON schema: a string property gets the echo of the last user text (at most 32
characters), integers 1, numbers 1.5, booleans true, arrays [], objects {}, an enum its first value.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

ECHO_CHARS = 32
ID_BYTES = 12
SCALARS: Mapping[str, Any] = {"integer": 1, "number": 1.5, "boolean": True, "array": [], "object": {}}


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One call: `key` is a stable hex digest each face turns into its own id (`call_…`, `toolu_…`)."""

    key: str
    name: str
    arguments: Mapping[str, Any]

    @property
    def arguments_json(self) -> str:
        return orjson.dumps(self.arguments).decode()


def tool_calls_for(body: Mapping[str, Any]) -> tuple[ToolCall, ...]:
    """The tool calls that answer a chat body of either face (empty: answer with text)."""
    tools = _tools(body.get("tools"))
    if not tools or _ends_with_tool_results(body.get("messages")):
        return ()
    choice, named, parallel = _choice(body)
    if choice == "none":
        return ()
    chosen = [tool for tool in tools if tool[0] == named] if named else tools
    if not parallel:
        chosen = chosen[:1]
    echo = last_user_text(body.get("messages"))[:ECHO_CHARS]
    seed = orjson.dumps([body.get("model"), body.get("messages")], default=str)
    return tuple(
        ToolCall(_key(seed, index, name), name, _arguments(schema, echo)) for index, (name, schema) in enumerate(chosen)
    )


def _tools(raw: Any) -> list[tuple[str, Mapping[str, Any]]]:
    """(name, JSON schema) of each offered function tool, in either wire format."""
    found: list[tuple[str, Mapping[str, Any]]] = []
    for tool in raw if isinstance(raw, list) else ():
        if not isinstance(tool, Mapping):
            continue
        function = tool.get("function")
        if isinstance(function, Mapping):  # OpenAI: {"type": "function", "function": {"name", "parameters"}}
            name, schema = function.get("name"), function.get("parameters")
        else:  # Anthropic: {"name", "input_schema"}
            name, schema = tool.get("name"), tool.get("input_schema")
        if isinstance(name, str) and name:
            found.append((name, schema if isinstance(schema, Mapping) else {}))
    return found


def _choice(body: Mapping[str, Any]) -> tuple[str, str | None, bool]:
    """(auto | required | none, the named tool or None, parallel calls allowed)."""
    raw = body.get("tool_choice")
    parallel = body.get("parallel_tool_calls") is not False
    if isinstance(raw, str):
        return ("required" if raw == "required" else raw if raw in ("auto", "none") else "auto"), None, parallel
    if not isinstance(raw, Mapping):
        return "auto", None, parallel
    kind = raw.get("type")
    if raw.get("disable_parallel_tool_use") is True:
        parallel = False
    function = raw.get("function")
    if kind == "function" and isinstance(function, Mapping):
        return "required", str(function.get("name") or ""), parallel
    if kind == "tool":
        return "required", str(raw.get("name") or ""), parallel
    return {"any": "required", "none": "none"}.get(str(kind), "auto"), None, parallel


def _ends_with_tool_results(messages: Any) -> bool:
    if not isinstance(messages, list) or not messages or not isinstance(messages[-1], Mapping):
        return False
    last = messages[-1]
    if last.get("role") in ("tool", "function"):
        return True
    content = last.get("content")
    return isinstance(content, list) and any(
        isinstance(block, Mapping) and block.get("type") == "tool_result" for block in content
    )


def last_user_text(messages: Any) -> str:
    listed: list[Any] = messages if isinstance(messages, list) else []
    for message in reversed(listed):
        if isinstance(message, Mapping) and message.get("role") == "user":
            content: Any = message.get("content")
            if isinstance(content, str):
                return " ".join(content.split())
            if isinstance(content, Sequence):
                texts = [part.get("text") for part in content if isinstance(part, Mapping)]
                return " ".join(" ".join(text for text in texts if isinstance(text, str)).split())
    return ""


def _arguments(schema: Mapping[str, Any], echo: str) -> dict[str, Any]:
    properties = schema.get("properties")
    arguments: dict[str, Any] = {}
    for name, raw in properties.items() if isinstance(properties, Mapping) else ():
        spec: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
        enum = spec.get("enum")
        if isinstance(enum, list) and enum:
            arguments[name] = enum[0]
        else:
            arguments[name] = SCALARS.get(str(spec.get("type")), echo or "sim")
    return arguments


def _key(seed: bytes, index: int, name: str) -> str:
    return hashlib.blake2b(seed + f"|{index}|{name}".encode(), digest_size=ID_BYTES).hexdigest()
