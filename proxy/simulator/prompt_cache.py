"""The simulated providers' prompt caches, billed as the providers bill them.

Anthropic: the prompt up to the last content block marked `cache_control` is the cached prefix. If it is shorter
than the model's minimum (2,048 tokens on Haiku models, 1,024 on the others) nothing is cached; else the first
request with it writes it (`cache_creation_input_tokens`: billed at 2x the input price, the 1-hour TTL) and later
ones read it (`cache_read_input_tokens`: billed at the cache-read price). Within a batch, lines are taken in order.
OpenAI: a request with `prompt_cache_key` whose messages before the last one reach 1,024 tokens reads them from the
cache (`prompt_tokens_details.cached_tokens`, cache-read price) when a request with the same key and prefix came
before; the first one pays the input price (OpenAI charges no write premium).

Prefix tokens are counted like prompt tokens (answers.py): 3 per message, plus its role and the text of its blocks
up to the mark, plus the tools. Entries never expire (a simulated run is far shorter than an hour).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping
from typing import Any

import orjson

from proxy.simulator.answers import MESSAGE_OVERHEAD_TOKENS, Answer, content_text, count_tokens

ANTHROPIC_MINIMUM = 1024
ANTHROPIC_HAIKU_MINIMUM = 2048
OPENAI_MINIMUM = 1024


class PromptCache:
    """Prefixes seen so far (thread-safe: batches are parsed off the event loop)."""

    def __init__(self) -> None:
        self._seen: set[bytes] = set()
        self._lock = threading.Lock()

    def reset(self) -> None:
        with self._lock:
            self._seen.clear()

    def _first_use(self, key: bytes) -> bool:
        with self._lock:
            if key in self._seen:
                return False
            self._seen.add(key)
            return True

    def anthropic(self, params: Mapping[str, Any], answer: Answer) -> Answer:
        """The answer with Anthropic's cache reads or writes for the marked prefix of `params`."""
        prefix = _marked_prefix(params)
        if prefix is None:
            return answer
        tokens = _tokens(prefix) + _tools_tokens(params)
        model = str(params.get("model", ""))
        minimum = ANTHROPIC_HAIKU_MINIMUM if "haiku" in model else ANTHROPIC_MINIMUM
        if tokens < minimum or tokens > answer.prompt_tokens:
            return answer
        key = orjson.dumps(["anthropic", model, prefix, params.get("tools")], option=orjson.OPT_SORT_KEYS)
        if self._first_use(key):
            return dataclasses.replace(answer, cache_write_tokens=tokens)
        return dataclasses.replace(answer, cache_read_tokens=tokens)

    def openai(self, body: Mapping[str, Any], answer: Answer) -> Answer:
        """The answer with OpenAI's cached tokens when `body` carries a `prompt_cache_key` seen with its prefix."""
        cache_key = body.get("prompt_cache_key")
        messages = body.get("messages")
        if not isinstance(cache_key, str) or not isinstance(messages, list) or len(messages) < 2:
            return answer
        prefix = [
            (str(m.get("role", "")), content_text(m.get("content"))) for m in messages[:-1] if isinstance(m, Mapping)
        ]
        tokens = _tokens(prefix) + _tools_tokens(body)
        if tokens < OPENAI_MINIMUM or tokens > answer.prompt_tokens:
            return answer
        key = orjson.dumps(["openai", body.get("model"), cache_key, prefix, body.get("tools")])
        return answer if self._first_use(key) else dataclasses.replace(answer, cache_read_tokens=tokens)


def _tokens(prefix: list[tuple[str, str]]) -> int:
    return sum(MESSAGE_OVERHEAD_TOKENS + count_tokens(role) + count_tokens(text) for role, text in prefix)


def _tools_tokens(body: Mapping[str, Any]) -> int:
    tools = body.get("tools")
    return count_tokens(orjson.dumps([tools], option=orjson.OPT_SORT_KEYS).decode()) if tools else 0


def _marked_prefix(params: Mapping[str, Any]) -> list[tuple[str, str]] | None:
    """(role, text) of the messages up to the last `cache_control` block (that message cut after the block)."""
    turns: list[tuple[str, Any]] = []
    system = params.get("system")
    if system:
        turns.append(("system", system))
    turns += [
        (str(m.get("role", "")), m.get("content")) for m in params.get("messages") or () if isinstance(m, Mapping)
    ]
    cut: tuple[int, int] | None = None
    for index, (_, content) in enumerate(turns):
        if isinstance(content, list):
            for block_index, block in enumerate(content):
                if isinstance(block, Mapping) and block.get("cache_control"):
                    cut = (index, block_index)
    if cut is None:
        return None
    index, block_index = cut
    prefix = [(role, content_text(content)) for role, content in turns[:index]]
    role, content = turns[index]
    prefix.append((role, content_text(content[: block_index + 1])))
    return prefix
