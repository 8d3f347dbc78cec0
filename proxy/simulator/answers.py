"""Deterministic answers and token counts, the same for every face (OpenAI chat, Anthropic messages).

The answer to a request is `[sim <digest>] <echo>`: a 12-hex-digit digest of the canonical
(model, messages) and a readable echo of the last user message (whitespace collapsed, cut at 64 characters
with an ellipsis).
Two requests with different messages or models get different answers; the same request always gets the same.

Tokens (documented so that tests and the ledger can be checked by hand):
- a text costs ceil(utf-8 bytes / 4) tokens;
- prompt_tokens = 3 (reply priming) + for each message (3 + tokens(role) + tokens(text)) + tokens(tools JSON)
  + tokens(response_format JSON), where a message's text is its string content or its text parts joined by
  newlines (non-text parts count as their canonical JSON);
- completion_tokens = tokens(answer) per choice; when max_tokens (or max_completion_tokens) is smaller,
  the answer is cut to max_tokens * 4 bytes and finish_reason is "length".

A request that offers tools is answered with tool calls instead (tool_use.py says when and which):
no text, finish_reason "tool_calls", completion_tokens = tokens(canonical JSON of [[name, arguments], ...]).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from proxy.simulator.tool_use import ToolCall, tool_calls_for

BYTES_PER_TOKEN = 4
MESSAGE_OVERHEAD_TOKENS = 3
REPLY_PRIMING_TOKENS = 3
ECHO_CHARS = 64
DIGEST_BYTES = 6


def count_tokens(text: str) -> int:
    return -(-len(text.encode()) // BYTES_PER_TOKEN)


def content_text(content: Any) -> str:
    """The text of a message's content: a string, or a list of parts (`{"type": "text", "text": ...}`)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        pieces = []
        for part in content:
            if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                pieces.append(part["text"])
            else:
                pieces.append(orjson.dumps(part, option=orjson.OPT_SORT_KEYS).decode())
        return "\n".join(pieces)
    return orjson.dumps(content, option=orjson.OPT_SORT_KEYS).decode()


@dataclass(frozen=True, slots=True)
class Prompt:
    """What an answer depends on, whatever the wire format it came in."""

    model: str
    messages: tuple[tuple[str, str], ...]  # (role, text)
    extra: str = ""  # canonical JSON of tools / response_format: counted, not echoed
    max_tokens: int | None = None
    choices: int = 1


@dataclass(frozen=True, slots=True)
class EmbeddingSpec:
    """What an embeddings answer's vectors are made from: one digest per input (in order), their dimension and
    the encoding asked for ("float" or "base64")."""

    digests: tuple[str, ...]
    dimensions: int
    encoding: str = "float"


@dataclass(frozen=True, slots=True)
class Answer:
    content: str
    prompt_tokens: int
    completion_tokens: int  # over all choices
    finish_reason: str  # "stop" | "length" | "tool_calls"
    choices: int = 1
    tool_calls: tuple[ToolCall, ...] = ()
    embedding: EmbeddingSpec | None = None  # an embeddings answer: what its vectors are made from
    response: bool = False  # a Responses API answer (written as a Response object, proxy/simulator/responses.py)
    cache_read_tokens: int = 0  # parts of prompt_tokens read from / written to a prompt cache (prompt_cache.py)
    cache_write_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def prompt_from_body(body: Mapping[str, Any]) -> Prompt:
    """A Prompt from a chat body (OpenAI `messages`; Anthropic's top-level `system` is read too).

    The body is assumed valid (each face validates its own wire format first).
    """
    messages: list[tuple[str, str]] = []
    system = body.get("system")
    if system:
        messages.append(("system", content_text(system)))
    for message in body.get("messages") or ():
        if isinstance(message, Mapping):
            messages.append((str(message.get("role", "")), content_text(message.get("content"))))
    extras = [body[key] for key in ("tools", "response_format") if body.get(key) is not None]
    extra = orjson.dumps(extras, option=orjson.OPT_SORT_KEYS).decode() if extras else ""
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    choices = body.get("n") or 1
    return Prompt(
        model=str(body.get("model", "")),
        messages=tuple(messages),
        extra=extra,
        max_tokens=max_tokens if isinstance(max_tokens, int) else None,
        choices=choices if isinstance(choices, int) else 1,
    )


def prompt_tokens(prompt: Prompt) -> int:
    total = REPLY_PRIMING_TOKENS + count_tokens(prompt.extra)
    for role, text in prompt.messages:
        total += MESSAGE_OVERHEAD_TOKENS + count_tokens(role) + count_tokens(text)
    return total


def full_content(prompt: Prompt) -> str:
    canonical = orjson.dumps([prompt.model, prompt.messages])
    digest = hashlib.blake2b(canonical, digest_size=DIGEST_BYTES).hexdigest()
    last_user = next((text for role, text in reversed(prompt.messages) if role == "user"), "")
    echo = " ".join(last_user.split())
    if len(echo) > ECHO_CHARS:
        echo = echo[:ECHO_CHARS] + "…"
    return f"[sim {digest}] {echo}".rstrip()


def answer(prompt: Prompt) -> Answer:
    content = full_content(prompt)
    finish_reason = "stop"
    if prompt.max_tokens is not None and count_tokens(content) > prompt.max_tokens:
        content = content.encode()[: prompt.max_tokens * BYTES_PER_TOKEN].decode(errors="ignore")
        finish_reason = "length"
    return Answer(
        content=content,
        prompt_tokens=prompt_tokens(prompt),
        completion_tokens=count_tokens(content) * prompt.choices,
        finish_reason=finish_reason,
        choices=prompt.choices,
    )


def answer_for(body: Mapping[str, Any]) -> Answer:
    prompt = prompt_from_body(body)
    calls = tool_calls_for(body)
    if not calls:
        return answer(prompt)
    called = orjson.dumps([[call.name, call.arguments] for call in calls]).decode()
    return Answer(
        content="",
        prompt_tokens=prompt_tokens(prompt),
        completion_tokens=count_tokens(called) * prompt.choices,
        finish_reason="tool_calls",
        choices=prompt.choices,
        tool_calls=calls,
    )
