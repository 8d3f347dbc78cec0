"""Pricing: exact Decimal list/paid/saved per lane from litellm's map, fallbacks and config overrides."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from proxy.pricing import Cost, ModelPriceOverride, PriceBook, Usage, bundled_price_map, config_overrides
from proxy.settings import Config

D = Decimal

# A hand-written map keeps the arithmetic checkable; one test below pins the real map's gpt-4o-mini prices.
PRICE_MAP: dict[str, Any] = {
    "full": {
        "input_cost_per_token": 2.5e-06,
        "output_cost_per_token": 1e-05,
        "input_cost_per_token_batches": 1.25e-06,
        "output_cost_per_token_batches": 5e-06,
        "cache_read_input_token_cost": 1.25e-06,
        "cache_read_input_token_cost_batches": 6e-07,
        "input_cost_per_token_flex": 1.2e-06,
        "output_cost_per_token_flex": 4e-06,
    },
    "bare": {"input_cost_per_token": 3e-07, "output_cost_per_token": 1.5e-06},
    "cache-no-batch": {
        "input_cost_per_token": 1e-06,
        "output_cost_per_token": 2e-06,
        "cache_read_input_token_cost": 2.5e-07,
    },
    "openai/prefixed": {"input_cost_per_token": 1e-06, "output_cost_per_token": 3e-06},
    "no-output": {"input_cost_per_token": 1e-06},
}


@pytest.fixture
def book() -> PriceBook:
    return PriceBook.from_price_map(PRICE_MAP)


def test_sync_costs_list_price_and_saves_nothing(book: PriceBook) -> None:
    cost = book.cost("full", Usage(prompt_tokens=1000, completion_tokens=200), "sync")
    assert cost == Cost(D("0.0045"), D("0.0045"))
    assert cost.saved_usd == 0


def test_batch_uses_batch_prices(book: PriceBook) -> None:
    cost = book.cost("full", Usage(prompt_tokens=1000, completion_tokens=200), "batch")
    assert cost.list_usd == D("0.0045")
    assert cost.paid_usd == D("0.00225")
    assert cost.saved_usd == D("0.00225")


def test_flex_uses_flex_prices_when_the_map_has_them(book: PriceBook) -> None:
    cost = book.cost("full", Usage(prompt_tokens=1000, completion_tokens=200), "flex")
    assert cost.paid_usd == D("0.0012") + D("0.0008")


def test_flex_falls_back_to_batch_rates(book: PriceBook) -> None:
    usage = Usage(prompt_tokens=1000, completion_tokens=200)
    assert book.cost("bare", usage, "flex") == book.cost("bare", usage, "batch")


def test_missing_batch_price_is_half_the_list_price(book: PriceBook) -> None:
    cost = book.cost("bare", Usage(prompt_tokens=3, completion_tokens=7), "batch")
    assert cost.list_usd == D("0.0000114")  # 3 * 0.0000003 + 7 * 0.0000015
    assert cost.paid_usd == D("0.0000057")


def test_cached_tokens_at_cache_read_prices(book: PriceBook) -> None:
    usage = Usage(prompt_tokens=1000, completion_tokens=0, cached_tokens=400)
    sync = book.cost("full", usage, "sync")
    assert sync.list_usd == 600 * D("2.5e-6") + 400 * D("1.25e-6")
    batch = book.cost("full", usage, "batch")
    assert batch.paid_usd == 600 * D("1.25e-6") + 400 * D("6e-7")


def test_cached_batch_price_missing_is_half_the_cache_read_price(book: PriceBook) -> None:
    usage = Usage(prompt_tokens=100, completion_tokens=10, cached_tokens=60)
    cost = book.cost("cache-no-batch", usage, "batch")
    assert cost.list_usd == 40 * D("1e-6") + 60 * D("2.5e-7") + 10 * D("2e-6")
    assert cost.paid_usd == 40 * D("5e-7") + 60 * D("1.25e-7") + 10 * D("1e-6")


def test_cached_tokens_without_cache_price_bill_as_input(book: PriceBook) -> None:
    with_cache = book.cost("bare", Usage(prompt_tokens=100, cached_tokens=60), "sync")
    without = book.cost("bare", Usage(prompt_tokens=100), "sync")
    assert with_cache == without


def test_lookup_with_and_without_provider_prefix(book: PriceBook) -> None:
    usage = Usage(prompt_tokens=10, completion_tokens=10)
    assert book.cost("openai/bare", usage, "sync") == book.cost("bare", usage, "sync")
    assert book.cost("openai/prefixed", usage, "sync").list_usd == D("0.00004")


def test_unknown_models_are_unknown_never_guessed(book: PriceBook) -> None:
    usage = Usage(prompt_tokens=10, completion_tokens=10)
    for model in ("nope", "openai/nope", "no-output"):
        cost = book.cost(model, usage, "batch")
        assert cost == Cost.unknown()
        assert not cost.known


def test_override_for_a_fine_tune_with_half_price_batch_fallback() -> None:
    override = ModelPriceOverride(input_cost_per_token=D("3e-6"), output_cost_per_token=D("1.2e-5"))
    book = PriceBook.from_price_map(PRICE_MAP, {"my-ft": override}, aliases={"my-ft": "openai/ft:gpt:acme"})
    cost = book.cost("my-ft", Usage(prompt_tokens=100, completion_tokens=50), "batch")
    assert cost.list_usd == D("0.0009")
    assert cost.paid_usd == D("0.00045")


def test_override_list_price_drops_the_maps_batch_price_but_explicit_batch_wins() -> None:
    overrides = {
        "custom": ModelPriceOverride(input_cost_per_token=D("4e-6")),
        "explicit": ModelPriceOverride(input_cost_per_token=D("4e-6"), input_cost_per_token_batches=D("1e-6")),
    }
    book = PriceBook.from_price_map(PRICE_MAP, overrides, aliases={"custom": "full", "explicit": "full"})
    usage = Usage(prompt_tokens=1000)
    assert book.cost("custom", usage, "batch").paid_usd == D("0.002")  # half of the overridden 4e-6
    assert book.cost("explicit", usage, "batch").paid_usd == D("0.001")
    assert book.cost("custom", Usage(completion_tokens=10), "batch").paid_usd == D("0.00005")  # map's output


def test_configured_name_resolves_to_its_upstream_model() -> None:
    book = PriceBook.from_price_map(PRICE_MAP, aliases={"cheap": "openai/bare"})
    usage = Usage(prompt_tokens=5, completion_tokens=5)
    assert book.cost("cheap", usage, "batch") == book.cost("bare", usage, "batch")


def test_overrides_read_from_the_config_file() -> None:
    config = Config.model_validate(
        {
            "model_list": [
                {
                    "model_name": "ft",
                    "litellm_params": {
                        "model": "openai/ft:gpt-4o-mini:acme::1",
                        "input_cost_per_token": 0.0000003,
                        "output_cost_per_token": 0.0000012,
                        "output_cost_per_token_batches": 0.0000005,
                    },
                },
                {"model_name": "mini", "litellm_params": {"model": "openai/gpt-4o-mini"}},
            ]
        }
    )
    overrides, aliases = config_overrides(config)
    assert set(overrides) == {"ft"}
    assert overrides["ft"].input_cost_per_token == D("3E-7")
    assert aliases == {"ft": "openai/ft:gpt-4o-mini:acme::1", "mini": "openai/gpt-4o-mini"}
    book = PriceBook.from_price_map(PRICE_MAP, overrides, aliases=aliases)
    cost = book.cost("ft", Usage(prompt_tokens=10, completion_tokens=10), "batch")
    assert cost.paid_usd == D("0.0000015") + D("0.000005")


def test_usage_from_an_openai_response() -> None:
    usage = Usage.from_openai(
        {"prompt_tokens": 120, "completion_tokens": 30, "prompt_tokens_details": {"cached_tokens": 64}}
    )
    assert usage == Usage(prompt_tokens=120, completion_tokens=30, cached_tokens=64)
    assert Usage.from_openai(None) == Usage()
    assert Usage.from_openai({"prompt_tokens": "x", "completion_tokens": -1}) == Usage()


def test_exact_to_the_last_digit_over_many_calls(book: PriceBook) -> None:
    total = sum(
        (book.cost("full", Usage(prompt_tokens=7, completion_tokens=3), "batch").paid_usd for _ in range(1000)),
        D(0),
    )
    assert total == D("0.02375")  # float arithmetic would drift here


def test_real_litellm_map_prices_gpt_4o_mini() -> None:
    book = PriceBook.from_litellm({}, aliases={"mini": "openai/gpt-4o-mini"})
    usage = Usage(prompt_tokens=1_000_000, completion_tokens=1_000_000)
    assert book.cost("mini", usage, "sync").list_usd == D("0.75")
    assert book.cost("mini", usage, "batch").paid_usd == D("0.375")
    assert book.cost("openai/gpt-4o-mini", usage, "flex").paid_usd == D("0.375")
    assert not book.cost("openai/not-a-model-anywhere", usage, "sync").known


GROQ_MAP: dict[str, Any] = {
    "groq/llama-x": {"input_cost_per_token": 4e-07, "output_cost_per_token": 8e-07, "litellm_provider": "groq"},
    "groq/with-batch": {
        "input_cost_per_token": 4e-07,
        "output_cost_per_token": 8e-07,
        "input_cost_per_token_batches": 1e-07,
        "output_cost_per_token_batches": 2e-07,
        "litellm_provider": "groq",
    },
    "llama-x": {"input_cost_per_token": 4e-07, "output_cost_per_token": 8e-07, "litellm_provider": "together_ai"},
}


def test_a_missing_batch_price_takes_the_providers_own_discount() -> None:
    book = PriceBook.from_price_map(GROQ_MAP, aliases={"fast": "groq/llama-x", "mapped": "groq/with-batch"})
    usage = Usage(prompt_tokens=1000, completion_tokens=1000)
    assert book.cost("fast", usage, "batch") == Cost(D("0.0012"), D("0.0009"))  # Groq: 25% off, not 50%
    assert book.cost("groq/llama-x", usage, "batch").paid_usd == D("0.0009")  # the map entry's provider
    assert book.cost("mapped", usage, "batch").paid_usd == D("0.0003")  # the map's batch price wins
    assert book.cost("llama-x", usage, "batch").paid_usd == D("0.0006")  # not in the table: half


def test_a_deployments_provider_decides_its_discount() -> None:
    """The same model name served by Groq is billed at Groq's discount (the map entry is another provider's)."""
    book = PriceBook.from_price_map(GROQ_MAP, aliases={"on-groq": "groq/llama-x", "elsewhere": "openai/llama-x"})
    usage = Usage(prompt_tokens=1000)
    assert book.cost("on-groq", usage, "batch").paid_usd == D("0.0003")
    assert book.cost("elsewhere", usage, "batch").paid_usd == D("0.0002")


def test_the_config_overrides_a_providers_batch_discount() -> None:
    config = Config.model_validate(
        {
            "model_list": [
                {"model_name": "fast", "litellm_params": {"model": "groq/openai/gpt-oss-20b"}},
                {"model_name": "mini", "litellm_params": {"model": "openai/gpt-4o-mini"}},
            ],
            "pricing": {"batch_discounts": {"groq": 0.4}},
        }
    )
    book = PriceBook.from_config(config)
    usage = Usage(prompt_tokens=1_000_000, completion_tokens=1_000_000)
    listed = book.cost("fast", usage, "sync").list_usd
    assert listed == D("0.375")  # 7.5e-08 + 3e-07 per token in the real map
    assert book.cost("fast", usage, "batch").paid_usd == listed * D("0.6")
    assert book.cost("mini", usage, "batch").paid_usd == D("0.375")  # the map's own batch price is untouched
    default = PriceBook.from_config(config.model_copy(update={"pricing": type(config.pricing)()}))
    assert default.cost("fast", usage, "batch").paid_usd == listed * D("0.75")


def test_a_discount_outside_zero_to_one_is_refused() -> None:
    for share in (-0.1, 1.5):
        with pytest.raises(ValueError, match="batch_discounts"):
            Config.model_validate(
                {
                    "model_list": [{"model_name": "m", "litellm_params": {"model": "groq/x"}}],
                    "pricing": {"batch_discounts": {"groq": share}},
                }
            )


def test_the_price_file_read_without_litellm_is_litellms_price_map() -> None:
    """A worker reads prices from the file litellm ships instead of importing litellm (seconds of CPU per start):
    the same map."""
    import litellm

    assert bundled_price_map() == litellm.model_cost
