"""Cache and batch discounts together: batch lines that share a long prompt prefix are marked for the provider's
prompt cache, so the cache discount stacks on the batch discount.

A call's prefix is every message before its last one (the system prompt, a document, earlier turns) with its
tools; its hash names it. When a batch is prepared (proxy/worker/submitter.py) its lines are ordered so that
lines sharing a prefix are adjacent (the first one writes the cache, the others read it), and each prefix shared
by two or more lines is marked:

- Anthropic: the prefix's last content block gets `cache_control: {"type": "ephemeral", "ttl": "1h"}` (a batch
  outlives the 5-minute default; a 1-hour write costs 2x the input price, a read 0.1x);
- OpenAI: the line gets `prompt_cache_key` = the prefix hash, so the lines reach the same cache.

A shared prefix below the provider's minimum cacheable size (Anthropic: 2,048 tokens on Haiku models, 1,024 on
the others; OpenAI 1,024) is not marked, and counted (`batchgate_prompt_cache_prefix_too_short_total`) with a
log line, so that a cache that cannot apply is visible; a batched call's own prefix below the minimum is reported in
its decision (`cache=too_short(812<1024)` in X-Batchgate-Decision, and in `POST /v1/policy/explain`).
Sizes are estimated at four bytes a token of the prefix's JSON (proxy/requests.py's routing estimate), which is
close for prose; a prefix just around the minimum may be judged either way. A provider with no explicit cache
marking is left alone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

BYTES_PER_TOKEN = 4
EPHEMERAL_1H: dict[str, str] = {"type": "ephemeral", "ttl": "1h"}
OPENAI_MINIMUM = 1024
ANTHROPIC_MINIMUM = 1024
ANTHROPIC_HAIKU_MINIMUM = 2048
CACHE_KEY_FIELD = "prompt_cache_key"


@dataclass(frozen=True, slots=True)
class Prefix:
    """A call's shared part: `digest` names it, `tokens` is its estimated size."""

    digest: str
    tokens: int


def prefix_of(body: Mapping[str, Any]) -> Prefix | None:
    """The prefix of a chat body (None: one message or fewer, nothing to share)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or len(messages) < 2:
        return None
    shared = orjson.dumps({"tools": body.get("tools"), "messages": messages[:-1]}, option=orjson.OPT_SORT_KEYS)
    digest = hashlib.sha256(shared).hexdigest()[:32]
    return Prefix(digest, len(shared) // BYTES_PER_TOKEN)


def minimum_tokens(provider: str, model: str) -> int | None:
    """The smallest prefix the provider caches for `model` (its upstream name); None: no explicit marking."""
    if provider == "anthropic":
        return ANTHROPIC_HAIKU_MINIMUM if "haiku" in model else ANTHROPIC_MINIMUM
    if provider == "openai":  # Azure caches prompts too, but not every API version takes `prompt_cache_key`
        return OPENAI_MINIMUM
    return None


@dataclass(frozen=True, slots=True)
class TooShort:
    """A call's prefix (`tokens`, estimated) below the provider's minimum cacheable size (`minimum`)."""

    tokens: int
    minimum: int


def too_short(body: Mapping[str, Any], model: str) -> TooShort | None:
    """Whether a chat body's prefix is too short to cache at the provider of `model` (a litellm model string,
    `provider/upstream`); None when it has no prefix, the prefix is large enough, or the provider has no
    explicit cache marking."""
    provider, _, upstream = model.partition("/")
    minimum = minimum_tokens(provider, upstream)
    prefix = prefix_of(body) if minimum is not None else None
    if prefix is None or minimum is None or prefix.tokens >= minimum:
        return None
    return TooShort(prefix.tokens, minimum)


@dataclass(frozen=True, slots=True)
class Plan:
    """How a batch's lines are sent: `order` (job ids, shared prefixes adjacent), the prefixes to mark, and the
    number of lines whose shared prefix is too short to cache."""

    order: list[str]
    marked: frozenset[str]
    too_short: int


def plan(lines: Sequence[tuple[str, Prefix | None]], minimum: int | None) -> Plan:
    """Order the (job id, prefix) lines of a batch, first-seen prefix first, and choose the prefixes to mark."""
    groups: dict[str, list[str]] = {}
    alone: list[str] = []
    sizes: dict[str, int] = {}
    for job_id, prefix in lines:
        if prefix is None:
            alone.append(job_id)
            continue
        groups.setdefault(prefix.digest, []).append(job_id)
        sizes[prefix.digest] = prefix.tokens
    shared = {digest for digest, ids in groups.items() if len(ids) > 1}
    marked = frozenset(d for d in shared if minimum is not None and sizes[d] >= minimum)
    too_short = sum(len(groups[d]) for d in shared - marked) if minimum is not None else 0
    order = [job_id for ids in groups.values() for job_id in ids] + alone
    return Plan(order, marked, too_short)


def mark(body: Mapping[str, Any], provider: str, prefix: Prefix) -> dict[str, Any]:
    """The body with its prefix marked for `provider`'s prompt cache."""
    if provider != "anthropic":
        return {**body, CACHE_KEY_FIELD: prefix.digest}
    messages = list(body["messages"])
    last = dict(messages[-2])
    content = last.get("content")
    if isinstance(content, str):
        blocks: list[Any] = [{"type": "text", "text": content}]
    elif isinstance(content, list) and content and isinstance(content[-1], Mapping):
        blocks = list(content)
    else:
        return dict(body)  # nothing to hang the mark on (a tool-call turn without text)
    blocks[-1] = {**blocks[-1], "cache_control": EPHEMERAL_1H}
    last["content"] = blocks
    messages[-2] = last
    return {**body, "messages": messages}
