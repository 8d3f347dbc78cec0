"""Prompt-cache marks of a batch: shared prefixes adjacent and marked per provider, short ones counted; and the
price of cache reads and writes."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from proxy.pricing import PriceBook, Usage
from proxy.prompt_cache import EPHEMERAL_1H, Prefix, mark, minimum_tokens, plan, prefix_of

LONG = "x" * 8000  # about 2,000 tokens at four bytes a token


def chat(system: str, question: str) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "system", "content": system}, {"role": "user", "content": question}]}


def test_the_prefix_is_every_message_but_the_last() -> None:
    first, second = prefix_of(chat(LONG, "a")), prefix_of(chat(LONG, "b"))
    assert first is not None
    assert first == second
    assert first.tokens >= 2000
    assert prefix_of(chat("other", "a")) != first
    assert prefix_of({"messages": [{"role": "user", "content": "alone"}]}) is None


def test_shared_prefixes_go_adjacent_and_only_long_shared_ones_are_marked() -> None:
    long, short, single = Prefix("long", 1500), Prefix("short", 40), Prefix("single", 5000)
    lines = [("a", long), ("b", short), ("c", None), ("d", long), ("e", short), ("f", single), ("g", long)]
    result = plan(lines, minimum=1024)
    assert result.order == ["a", "d", "g", "b", "e", "f", "c"]
    assert result.marked == {"long"}  # `single` is long but nobody else reads it: a write would be wasted
    assert result.too_short == 2
    assert plan(lines, minimum=2048).marked == frozenset()
    assert plan(lines, minimum=2048).too_short == 5


def test_minimums_follow_the_provider_and_model() -> None:
    assert minimum_tokens("anthropic", "claude-haiku-4-5") == 2048
    assert minimum_tokens("anthropic", "claude-sonnet-4-5") == 1024
    assert minimum_tokens("openai", "gpt-4o-mini") == 1024
    assert minimum_tokens("groq", "llama") is None


def test_marks_are_the_providers_own() -> None:
    body = chat(LONG, "q")
    prefix = prefix_of(body)
    assert prefix is not None
    marked = mark(body, "anthropic", prefix)
    assert marked["messages"][0]["content"] == [{"type": "text", "text": LONG, "cache_control": EPHEMERAL_1H}]
    assert marked["messages"][1] == body["messages"][1]
    assert body["messages"][0]["content"] == LONG  # the stored body is not changed
    assert mark(body, "openai", prefix) == {**body, "prompt_cache_key": prefix.digest}


def test_cache_reads_and_one_hour_writes_are_priced_and_their_saving_is_apart() -> None:
    book = PriceBook.from_price_map(
        {
            "claude-x": {
                "litellm_provider": "anthropic",
                "input_cost_per_token": 3e-6,
                "output_cost_per_token": 1.5e-5,
                "cache_read_input_token_cost": 3e-7,
            }
        }
    )
    usage = Usage(prompt_tokens=3000, completion_tokens=10, cached_tokens=1000, cache_write_tokens=1500)
    batch_in, batch_read = Decimal("1.5e-6"), Decimal("1.5e-7")
    paid = 500 * batch_in + 1000 * batch_read + 1500 * 2 * batch_in + 10 * Decimal("7.5e-6")
    assert book.cost("claude-x", usage, "batch").paid_usd == paid
    assert book.cache_saving("claude-x", usage, "batch") == (1000 * (batch_in - batch_read), 1500 * batch_in)
