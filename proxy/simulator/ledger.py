"""What the simulated provider billed: tokens per (model, tier), priced exactly from litellm's price map.

A model is billed under the name the price map knows it by at the provider simulated: in the groq flavour,
`openai/gpt-oss-20b` is billed as `groq/openai/gpt-oss-20b` (`billed_name`). A batch price the map lacks is the
list price less the provider's batch discount, as that provider bills it (`BATCH_SHARE`: Groq 75% of list,
https://console.groq.com/docs/batch; everyone else here 50%).

Tokens are counted as integers when work is billed; cost is computed when the ledger is read, as
Decimal(price) * tokens, so totals are exact. Prices are the shortest decimal form of litellm's floats
(1.5e-07 -> 0.00000015). Costs are rendered as plain, normalised decimal strings ("0.000015").
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any

PriceMap = Mapping[str, Mapping[str, Any]]
HALF = Decimal("0.5")
BATCH_SHARE: Mapping[str, Decimal] = {"groq": Decimal("0.75")}  # share of list billed for a batch line
# A prompt-cache write as a multiple of the input price: Anthropic's 1-hour TTL (prompt_cache.py); none elsewhere.
CACHE_WRITE_FACTOR: Mapping[str, Decimal] = {"anthropic": Decimal(2)}


PREFIXED_FLAVORS = frozenset({"groq", "mistral", "xai"})  # providers the price map names `<provider>/<model>`


def billed_name(model: str, flavor: str) -> str:
    """The price-map name of `model` at the simulated provider (`groq/<model>` in the groq flavour, the same for
    the Mistral and xAI faces)."""
    prefixed = flavor in PREFIXED_FLAVORS and not model.startswith(f"{flavor}/")
    return f"{flavor}/{model}" if prefixed else model


class Tier(StrEnum):
    SYNC = "sync"
    FLEX = "flex"
    BATCH = "batch"


@dataclass(slots=True)
class Usage:
    """`input_tokens` counts every prompt token; `cache_read_tokens` and `cache_write_tokens` are parts of it."""

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0


@dataclass(frozen=True, slots=True)
class TokenPrice:
    input: Decimal
    output: Decimal
    cache_read: Decimal | None = None  # None: the input price
    cache_write: Decimal | None = None

    def cost(self, usage: Usage) -> Decimal:
        plain = usage.input_tokens - usage.cache_read_tokens - usage.cache_write_tokens
        read = self.input if self.cache_read is None else self.cache_read
        write = self.input if self.cache_write is None else self.cache_write
        return (
            self.input * plain
            + read * usage.cache_read_tokens
            + write * usage.cache_write_tokens
            + self.output * usage.output_tokens
        )


ONE = Decimal(1)


class Ledger:
    """Tokens per (model, tier, share of the tier's price: 1 but for venue tiers and off-peak hours)."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, Tier, Decimal], Usage] = {}

    def bill(
        self,
        model: str,
        tier: Tier,
        *,
        input_tokens: int,
        output_tokens: int,
        requests: int = 1,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
        share: Decimal | None = None,
    ) -> None:
        usage = self._rows.setdefault((model, tier, ONE if share is None else share), Usage())
        usage.requests += requests
        usage.input_tokens += input_tokens
        usage.output_tokens += output_tokens
        usage.cache_read_tokens += cache_read_tokens
        usage.cache_write_tokens += cache_write_tokens

    def reset(self) -> None:
        self._rows.clear()

    def rows(self) -> dict[tuple[str, Tier], Usage]:
        """Usage per (model, tier), every share together."""
        found: dict[tuple[str, Tier], Usage] = {}
        for (model, tier, _), usage in self._rows.items():
            _add(found.setdefault((model, tier), Usage()), usage)
        return found

    def shared_rows(self) -> dict[tuple[str, Tier, Decimal], Usage]:
        """Usage per (model, tier, share of the tier's price)."""
        return {
            key: Usage(u.requests, u.input_tokens, u.output_tokens, u.cache_read_tokens, u.cache_write_tokens)
            for key, u in self._rows.items()
        }


def litellm_price_map() -> PriceMap:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm  # noqa: PLC0415 - takes seconds to import: only when a price is first needed

    cost_map: PriceMap = litellm.model_cost
    return cost_map


def _decimal(value: Any) -> Decimal | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return Decimal(repr(value))
    return None


class PriceBook:
    """Per-token prices by tier; the price map is loaded on first use (call `load` off the event loop)."""

    def __init__(self, loader: Callable[[], PriceMap] = litellm_price_map) -> None:
        self._loader = loader
        self._map: PriceMap | None = None
        self._lock = threading.Lock()

    def load(self) -> None:
        with self._lock:
            if self._map is None:
                self._map = self._loader()

    def _entry(self, model: str) -> Mapping[str, Any] | None:
        self.load()
        assert self._map is not None
        if model in self._map:
            return self._map[model]
        _, _, bare = model.partition("/")
        return self._map.get(bare) if bare else None

    def price(self, model: str, tier: Tier) -> TokenPrice | None:
        entry = self._entry(model)
        if entry is None:
            return None
        list_in = _decimal(entry.get("input_cost_per_token"))
        list_out = _decimal(entry.get("output_cost_per_token"))
        if list_in is None or list_out is None:
            return None
        provider = str(entry.get("litellm_provider"))
        write_factor = CACHE_WRITE_FACTOR.get(provider)
        list_read = _decimal(entry.get("cache_read_input_token_cost"))
        if list_read is None:
            list_read = list_in
        if tier is Tier.SYNC:
            return TokenPrice(list_in, list_out, list_read, None if write_factor is None else list_in * write_factor)
        share = BATCH_SHARE.get(provider, HALF)
        batch_in = _decimal(entry.get("input_cost_per_token_batches")) or list_in * share
        batch_out = _decimal(entry.get("output_cost_per_token_batches")) or list_out * share
        batch_read = _decimal(entry.get("cache_read_input_token_cost_batches"))
        if batch_read is None:
            batch_read = list_read * share
        if tier is Tier.FLEX:
            flex_in = _decimal(entry.get("input_cost_per_token_flex")) or batch_in
            flex_read = _decimal(entry.get("cache_read_input_token_cost_flex"))
            return TokenPrice(
                flex_in,
                _decimal(entry.get("output_cost_per_token_flex")) or batch_out,
                batch_read if flex_read is None else flex_read,
                None if write_factor is None else flex_in * write_factor,
            )
        return TokenPrice(batch_in, batch_out, batch_read, None if write_factor is None else batch_in * write_factor)


def format_usd(amount: Decimal) -> str:
    return format(amount.normalize(), "f") if amount else "0"


def _usage_json(usage: Usage, cost: Decimal | None) -> dict[str, Any]:
    return {
        "requests": usage.requests,
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_read_tokens": usage.cache_read_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
        "cost_usd": None if cost is None else format_usd(cost),
    }


def _add(total: Usage, usage: Usage) -> None:
    total.requests += usage.requests
    total.input_tokens += usage.input_tokens
    total.output_tokens += usage.output_tokens
    total.cache_read_tokens += usage.cache_read_tokens
    total.cache_write_tokens += usage.cache_write_tokens


def ledger_report(ledger: Ledger, prices: PriceBook) -> dict[str, Any]:
    """The ledger as JSON: per model and tier, per tier, in total. Blocking on first use (price map)."""
    shared = ledger.shared_rows()
    rows = ledger.rows()
    models: dict[str, dict[str, Any]] = {}
    tier_usage = {tier: Usage() for tier in Tier}
    tier_cost = {tier: Decimal(0) for tier in Tier}
    total, total_cost = Usage(), Decimal(0)
    unpriced: set[str] = set()
    for model in sorted({model for model, _ in rows}):
        per_tier: dict[str, Any] = {}
        for tier in Tier:
            usage = rows.get((model, tier), Usage())
            price = prices.price(model, tier)
            cost = None
            if price is not None:
                cost = sum(
                    (price.cost(part) * share for (name, billed, share), part in shared.items()
                     if (name, billed) == (model, tier)),
                    Decimal(0),
                )  # fmt: skip
            if cost is None and usage.requests:
                unpriced.add(model)
            per_tier[tier.value] = _usage_json(usage, cost)
            _add(tier_usage[tier], usage)
            _add(total, usage)
            tier_cost[tier] += cost or 0
            total_cost += cost or 0
        models[model] = per_tier
    return {
        "currency": "USD",
        "models": models,
        "tiers": {tier.value: _usage_json(tier_usage[tier], tier_cost[tier]) for tier in Tier},
        "totals": _usage_json(total, total_cost),
        "unpriced_models": sorted(unpriced),
        "notes": [
            "cost_usd is an exact decimal string; tiers and totals sum priced models only",
            "models missing from litellm's price map are billed tokens with cost_usd null",
        ],
    }
