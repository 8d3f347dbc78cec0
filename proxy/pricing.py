"""What a call costs: its list price (synchronous), what was paid in the lane that answered, and the saving.

Prices come from litellm's price map (read once, offline) with the config's per-model overrides on top,
resolved into a `PriceBook` at start so the hot path is a dict lookup and a few exact Decimal multiplications.

Conventions (docs/metrics.md):
- list = the synchronous price of the same call; paid = batch prices for `batch` lines, flex prices (batch
  prices where the map has none) for `flex`, list for `sync` (a rescued job is a `sync` line).
- A missing batch price is the list price less the provider's batch discount (`BATCH_DISCOUNTS`, with the
  config's `pricing.batch_discounts` on top; 50% for a provider in neither); a missing batch cache-read price is
  the cache-read price less the same discount.
- Cached prompt tokens are part of `prompt_tokens`; they are billed at the cache-read price (the input price
  when the model has none).
- A model with no known input or output price costs `Cost.unknown()`: counted, never guessed.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from proxy.endpoints import model_of
from proxy.settings import Config, LitellmParams

Lane = Literal["sync", "batch", "flex"]
LANES: tuple[Lane, ...] = ("sync", "batch", "flex")
ZERO = Decimal(0)
HALF = Decimal("0.5")

# What each provider takes off its list price in its batch API (a share of list), used where litellm's price map
# has no batch price for the model. Sources (re-check when a provider's pricing page changes):
#   openai    https://platform.openai.com/docs/guides/batch ("50% cost discount compared to synchronous APIs")
#   azure     https://learn.microsoft.com/azure/ai-foundry/openai/how-to/batch ("50% less cost than global standard")
#   anthropic https://docs.anthropic.com/en/docs/build-with-claude/batch-processing ("50% of standard API prices")
#   groq      https://console.groq.com/docs/batch ("25% cost discount compared to synchronous APIs")
#   mistral   https://docs.mistral.ai/capabilities/batch (batch requests are billed at 50% of the list price)
#   xai       https://docs.x.ai/developers/advanced-api-usage/batch-api ("50% off standard pricing")
#   bedrock   https://aws.amazon.com/bedrock/pricing/ (batch inference "at 50% of on-demand inference pricing")
#   vertex_ai https://cloud.google.com/vertex-ai/generative-ai/docs/multimodal/batch-prediction-gemini ("50%
#             discount" off the online price of Gemini models)
# A provider not listed gets DEFAULT_BATCH_DISCOUNT. The config's `pricing.batch_discounts` overrides entries.
BATCH_DISCOUNTS: Mapping[str, Decimal] = MappingProxyType(
    {
        "openai": HALF,
        "azure": HALF,
        "anthropic": HALF,
        "groq": Decimal("0.25"),
        "mistral": HALF,
        "xai": HALF,
        "vertex_ai": HALF,
        "bedrock": HALF,
        "bedrock_converse": HALF,  # litellm's map says bedrock_converse for Claude on Bedrock
    }
)
DEFAULT_BATCH_DISCOUNT = HALF
# What a prompt-cache write costs, as a multiple of the input price, where the provider charges a premium for it:
# batchgate marks prefixes with Anthropic's 1-hour TTL (batches outlive 5 minutes), billed at 2x the input price
# (https://docs.anthropic.com/en/docs/build-with-claude/prompt-caching#pricing). OpenAI charges no write premium.
CACHE_WRITE_FACTORS: Mapping[str, Decimal] = MappingProxyType({"anthropic": Decimal(2)})


def to_decimal(price: float | int | str) -> Decimal:
    """A price as the exact decimal it was written as (repr of a float is its shortest round-trip form)."""
    return Decimal(repr(price)) if isinstance(price, float) else Decimal(price)


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one answer. `cached_tokens` (cache reads) and `cache_write_tokens` (prompt tokens written to
    the provider's prompt cache: Anthropic's `cache_creation_input_tokens`) are parts of `prompt_tokens`."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0

    @classmethod
    def from_openai(cls, usage: Mapping[str, Any] | None) -> Usage:
        """Read an OpenAI `usage` object (chat completions, embeddings, or the Responses API's `input_tokens` /
        `output_tokens` / `input_tokens_details`); missing or malformed fields count as zero."""
        if not usage:
            return cls()
        if "input_tokens" in usage and "prompt_tokens" not in usage:  # a Response object's usage
            return cls._from_fields(usage, "input_tokens", "output_tokens", "input_tokens_details")
        return cls._from_fields(usage, "prompt_tokens", "completion_tokens", "prompt_tokens_details")

    @classmethod
    def _from_fields(cls, usage: Mapping[str, Any], prompt: str, completion: str, detail: str) -> Usage:
        details = usage.get(detail)
        cached = details.get("cached_tokens") if isinstance(details, Mapping) else 0
        return cls(
            prompt_tokens=_count(usage.get(prompt)),
            completion_tokens=_count(usage.get(completion)),
            cached_tokens=_count(cached),
            cache_write_tokens=_count(usage.get("cache_creation_input_tokens")),
        )

    @property
    def uncached_prompt_tokens(self) -> int:
        return max(self.prompt_tokens - self.cached_tokens - self.cache_write_tokens, 0)

    @property
    def billed_cache_write_tokens(self) -> int:
        return min(self.cache_write_tokens, max(self.prompt_tokens - self.billed_cached_tokens, 0))

    @property
    def billed_cached_tokens(self) -> int:
        return min(self.cached_tokens, self.prompt_tokens)


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


@dataclass(frozen=True, slots=True)
class Cost:
    list_usd: Decimal
    paid_usd: Decimal
    known: bool = True

    @property
    def saved_usd(self) -> Decimal:
        return self.list_usd - self.paid_usd

    @classmethod
    def unknown(cls) -> Cost:
        return cls(ZERO, ZERO, known=False)


@dataclass(frozen=True, slots=True)
class ModelPriceOverride:
    """Per-token prices from a deployment's `litellm_params` (fine-tunes, custom models); None = not set."""

    input_cost_per_token: Decimal | None = None
    output_cost_per_token: Decimal | None = None
    input_cost_per_token_batches: Decimal | None = None
    output_cost_per_token_batches: Decimal | None = None
    cache_read_input_token_cost: Decimal | None = None

    @classmethod
    def from_params(cls, params: LitellmParams) -> ModelPriceOverride:
        def read(value: float | None) -> Decimal | None:
            return None if value is None else to_decimal(value)

        return cls(
            input_cost_per_token=read(params.input_cost_per_token),
            output_cost_per_token=read(params.output_cost_per_token),
            input_cost_per_token_batches=read(params.input_cost_per_token_batches),
            output_cost_per_token_batches=read(params.output_cost_per_token_batches),
            cache_read_input_token_cost=read(params.cache_read_input_token_cost),
        )

    @property
    def empty(self) -> bool:
        return all(getattr(self, name) is None for name in self.__slots__)


@dataclass(frozen=True, slots=True)
class TierPrices:
    """Per-token USD prices of one tier (list, batch or flex)."""

    input: Decimal
    output: Decimal
    cache_read: Decimal
    cache_write: Decimal | None = None  # a prompt-cache write (None: the input price, no premium)

    def cost(self, usage: Usage) -> Decimal:
        return (
            usage.uncached_prompt_tokens * self.input
            + usage.billed_cached_tokens * self.cache_read
            + usage.billed_cache_write_tokens * self.write_price
            + usage.completion_tokens * self.output
        )

    @property
    def write_price(self) -> Decimal:
        return self.input if self.cache_write is None else self.cache_write

    def read_saving(self, usage: Usage) -> Decimal:
        """What cache reads cost below the input price on this tier."""
        return usage.billed_cached_tokens * (self.input - self.cache_read)

    def write_premium(self, usage: Usage) -> Decimal:
        """What cache writes cost above the input price on this tier."""
        return usage.billed_cache_write_tokens * (self.write_price - self.input)


@dataclass(frozen=True, slots=True)
class ModelPrices:
    """Fully resolved prices of one model per tier, fallbacks applied."""

    list: TierPrices
    batch: TierPrices
    flex: TierPrices

    @classmethod
    def resolve(
        cls,
        entry: Mapping[str, Any],
        override: ModelPriceOverride | None = None,
        *,
        batch_discount: Decimal = DEFAULT_BATCH_DISCOUNT,
        cache_write_factor: Decimal | None = None,
    ) -> ModelPrices | None:
        """Prices from a map entry (may be empty) with an override on top; None if list prices are unknown.

        An override's list price also replaces the map's batch, flex and cache prices for that direction
        unless the override sets them too: a map's batch price belongs to its list price, not to a custom one.
        A batch price that neither sets is the list price less `batch_discount` (a share of list, 0..1).
        `cache_write_factor`: a prompt-cache write costs this many times the input price (None: no premium).
        """
        o = override or ModelPriceOverride()
        batch_share = 1 - batch_discount
        list_in = _first(o.input_cost_per_token, _price(entry, "input_cost_per_token"))
        list_out = _first(o.output_cost_per_token, _price(entry, "output_cost_per_token"))
        if list_in is None or list_out is None:
            return None
        in_map = entry if o.input_cost_per_token is None else {}
        out_map = entry if o.output_cost_per_token is None else {}
        cache_map = in_map if o.cache_read_input_token_cost is None else {}
        list_cache = _pick(
            o.cache_read_input_token_cost, _price(in_map, "cache_read_input_token_cost"), fallback=list_in
        )
        batch = TierPrices(
            input=_pick(
                o.input_cost_per_token_batches,
                _price(in_map, "input_cost_per_token_batches"),
                fallback=list_in * batch_share,
            ),
            output=_pick(
                o.output_cost_per_token_batches,
                _price(out_map, "output_cost_per_token_batches"),
                fallback=list_out * batch_share,
            ),
            cache_read=_pick(
                _price(cache_map, "cache_read_input_token_cost_batches"), fallback=list_cache * batch_share
            ),
        )
        flex = TierPrices(
            input=_pick(_price(in_map, "input_cost_per_token_flex"), fallback=batch.input),
            output=_pick(_price(out_map, "output_cost_per_token_flex"), fallback=batch.output),
            cache_read=_pick(_price(cache_map, "cache_read_input_token_cost_flex"), fallback=batch.cache_read),
        )
        if cache_write_factor is not None:
            batch = dataclasses.replace(batch, cache_write=batch.input * cache_write_factor)
            flex = dataclasses.replace(flex, cache_write=flex.input * cache_write_factor)
        list_write = None if cache_write_factor is None else list_in * cache_write_factor
        return cls(list=TierPrices(list_in, list_out, list_cache, list_write), batch=batch, flex=flex)

    def tier(self, lane: Lane) -> TierPrices:
        return self.list if lane == "sync" else self.batch if lane == "batch" else self.flex

    def cost(self, usage: Usage, lane: Lane) -> Cost:
        list_usd = self.list.cost(usage)
        if lane == "sync":
            return Cost(list_usd, list_usd)
        paid = (self.batch if lane == "batch" else self.flex).cost(usage)
        return Cost(list_usd, paid)


def _price(entry: Mapping[str, Any], key: str) -> Decimal | None:
    value = entry.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return None
    return to_decimal(value)


def _first(*candidates: Decimal | None) -> Decimal | None:
    for candidate in candidates:
        if candidate is not None:
            return candidate
    return None


def _pick(*candidates: Decimal | None, fallback: Decimal) -> Decimal:
    """The first price that is set (zero is a price), else the fallback."""
    found = _first(*candidates)
    return fallback if found is None else found


class PriceBook:
    """Prices by model name: configured deployments first (overrides applied), then litellm's map.

    Batch prices the map lacks come from the provider's batch discount: a configured name's provider is its
    deployment's (`groq/openai/gpt-oss-20b` is billed by Groq), another name's is the map entry's
    `litellm_provider`, else its prefix."""

    def __init__(
        self,
        price_map: Mapping[str, Any],
        configured: Mapping[str, ModelPrices | None],
        *,
        batch_discounts: Mapping[str, Decimal] = BATCH_DISCOUNTS,
        upstream: Mapping[str, str] | None = None,
    ) -> None:
        self._map = price_map
        self._upstream = upstream or {}  # configured model name -> its upstream model
        self._resolved: dict[str, ModelPrices | None] = dict(configured)
        self._discounts = batch_discounts

    @classmethod
    def from_litellm(
        cls,
        overrides: Mapping[str, ModelPriceOverride] | None = None,
        *,
        aliases: Mapping[str, str] | None = None,
        batch_discounts: Mapping[str, Decimal] | None = None,
    ) -> PriceBook:
        """Build from litellm's local price map. `overrides` are keyed by model name (configured or upstream);
        `aliases` maps a configured model name to its upstream model (`openai/gpt-4o-mini`); `batch_discounts`
        (provider -> share of list taken off, 0..1) replace entries of `BATCH_DISCOUNTS`."""
        return cls.from_price_map(load_litellm_price_map(), overrides, aliases=aliases, batch_discounts=batch_discounts)

    @classmethod
    def from_config(cls, config: Config) -> PriceBook:
        overrides, aliases = config_overrides(config)
        return cls.from_litellm(overrides, aliases=aliases, batch_discounts=config_batch_discounts(config))

    @classmethod
    def from_price_map(
        cls,
        price_map: Mapping[str, Any],
        overrides: Mapping[str, ModelPriceOverride] | None = None,
        *,
        aliases: Mapping[str, str] | None = None,
        batch_discounts: Mapping[str, Decimal] | None = None,
    ) -> PriceBook:
        overrides = overrides or {}
        aliases = aliases or {}
        discounts = MappingProxyType({**BATCH_DISCOUNTS, **(batch_discounts or {})})
        configured: dict[str, ModelPrices | None] = {}
        for name in {*overrides, *aliases}:
            upstream = aliases.get(name, name)
            entry = _map_entry(price_map, upstream)
            provider = upstream.split("/", 1)[0] if name in aliases else _provider(upstream, entry)
            configured[name] = ModelPrices.resolve(
                entry,
                overrides.get(name) or overrides.get(upstream),
                batch_discount=discounts.get(provider, DEFAULT_BATCH_DISCOUNT),
                cache_write_factor=CACHE_WRITE_FACTORS.get(provider),
            )
        return cls(price_map, configured, batch_discounts=discounts, upstream=aliases)

    def prices(self, model: str) -> ModelPrices | None:
        """The prices of a configured model (or of its queue group, `proxy/endpoints.py`)."""
        model = model_of(model)
        if model in self._resolved:
            return self._resolved[model]
        entry = _map_entry(self._map, model)
        if not entry:
            return None  # not cached: arbitrary unknown names must not grow the book
        provider = _provider(model, entry)
        discount = self._discounts.get(provider, DEFAULT_BATCH_DISCOUNT)
        prices = self._resolved[model] = ModelPrices.resolve(
            entry, batch_discount=discount, cache_write_factor=CACHE_WRITE_FACTORS.get(provider)
        )
        return prices

    def cost(self, model: str, usage: Usage, lane: Lane) -> Cost:
        prices = self.prices(model)
        return prices.cost(usage, lane) if prices else Cost.unknown()

    def cost_at(self, model: str, usage: Usage, price: str) -> Cost:
        """The cost on a declared venue's price rule (proxy/venues.py, `price_rule`): `batch` or `flex` (that
        tier's prices), else a share of the list price (a decimal string, "0.25")."""
        if price in ("batch", "flex"):
            return self.cost(model, usage, "batch" if price == "batch" else "flex")
        listed = self.cost(model, usage, "sync")
        if not listed.known:
            return listed
        return Cost(listed.list_usd, listed.list_usd * Decimal(price))

    def cache_saving(self, model: str, usage: Usage, lane: Lane) -> tuple[Decimal, Decimal] | None:
        """What the prompt cache saved this answer in `lane` (reads below the input price) and what its writes cost
        above it; None: no known price."""
        prices = self.prices(model)
        if prices is None:
            return None
        tier = prices.tier(lane)
        return tier.read_saving(usage), tier.write_premium(usage)

    def max_output_tokens(self, model: str) -> int | None:
        """The most output tokens the model's price map entry says one call can produce (None: not known)."""
        model = model_of(model)
        entry = _map_entry(self._map, self._upstream.get(model, model))
        value = entry.get("max_output_tokens") or entry.get("max_tokens")
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None

    def known(self, models: Iterable[str]) -> dict[str, bool]:
        return {model: self.prices(model) is not None for model in models}


def _provider(model: str, entry: Mapping[str, Any]) -> str:
    """Who bills a model the map knows: the entry's `litellm_provider`, else the name's prefix."""
    provider = entry.get("litellm_provider")
    if isinstance(provider, str) and provider:
        return provider
    return model.split("/", 1)[0] if "/" in model else ""


def _map_entry(price_map: Mapping[str, Any], model: str) -> Mapping[str, Any]:
    """The map entry for a model name, with the provider prefix and without it."""
    for candidate in (model, model.split("/", 1)[1] if "/" in model else None):
        if candidate is None:
            continue
        entry = price_map.get(candidate)
        if isinstance(entry, Mapping):
            return entry
    return {}


def config_overrides(config: Config) -> tuple[dict[str, ModelPriceOverride], dict[str, str]]:
    """Overrides keyed by configured model name, and each configured name's upstream model."""
    overrides: dict[str, ModelPriceOverride] = {}
    aliases: dict[str, str] = {}
    for deployment in config.model_list:
        aliases[deployment.model_name] = deployment.litellm_params.model
        override = ModelPriceOverride.from_params(deployment.litellm_params)
        if not override.empty:
            overrides[deployment.model_name] = override
    return overrides, aliases


def config_batch_discounts(config: Config) -> dict[str, Decimal]:
    """The config's `pricing.batch_discounts` (provider -> share of list taken off) as exact decimals."""
    return {provider: to_decimal(share) for provider, share in config.pricing.batch_discounts.items()}


def batch_discount_of(config: Config, model_name: str) -> Decimal:
    """The share of list price (0..1) the batch of a configured model (or queue group) takes off: its provider's
    entry of the config's `pricing.batch_discounts`, else of `BATCH_DISCOUNTS`, else DEFAULT_BATCH_DISCOUNT (also
    for a name no deployment serves)."""
    deployment = config.deployment(model_name)
    provider = deployment.litellm_params.provider if deployment is not None else ""
    discounts = {**BATCH_DISCOUNTS, **config_batch_discounts(config)}
    return discounts.get(provider, DEFAULT_BATCH_DISCOUNT)


LITELLM_PRICE_FILE = "model_prices_and_context_window_backup.json"  # the price map litellm ships and loads


def load_litellm_price_map() -> Mapping[str, Any]:
    """litellm's bundled price map, never fetched from the network: `litellm.model_cost` once litellm is imported,
    else read from the file litellm loads it from (importing litellm takes seconds of CPU; a worker that only
    batches never needs it otherwise)."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    bundled = None if "litellm" in sys.modules else bundled_price_map()
    if bundled is not None:
        return bundled
    import litellm  # noqa: PLC0415 - heavy import, done once at start

    price_map: Mapping[str, Any] = litellm.model_cost
    return price_map


def bundled_price_map() -> dict[str, Any] | None:
    """The price map file litellm ships, as litellm loads it (without its `fallback_generalizations` entry), read
    without importing litellm; None when the file is not where this litellm keeps it."""
    spec = importlib.util.find_spec("litellm")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    path = Path(locations[0]) / LITELLM_PRICE_FILE if locations else None
    if path is None or not path.is_file():
        return None
    price_map: dict[str, Any] = json.loads(path.read_bytes())
    price_map.pop("fallback_generalizations", None)
    return price_map
