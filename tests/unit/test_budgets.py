"""Budgets against a real Redis: the reservation at accept, the settlement at the real cost, the refusal's shape,
UTC day rollover (an injected clock), keys kept apart, and the headroom gauges."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest
import redis.asyncio
from prometheus_client import CollectorRegistry

from proxy.auth import Caller
from proxy.budgets import PERIOD_GRACE, BudgetExceeded, Budgets, worst_case_cost, worst_case_tokens
from proxy.budgets_metrics import BudgetGauges
from proxy.pricing import Cost, PriceBook, Usage
from proxy.settings import Config
from proxy.store import keys
from proxy.store.budgets import BudgetStore
from proxy.token_estimate import estimate_tokens

MODEL = "priced-model"
PRICES = PriceBook.from_price_map(
    {MODEL: {"input_cost_per_token": 1e-6, "output_cost_per_token": 4e-6, "max_output_tokens": 500}}
)
BODY: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 100}
ALICE = Caller("alice", "research")
BOB = Caller("bob", "research")


def config(*, alice: dict[str, float] | None = None, team: dict[str, float] | None = None) -> Config:
    return Config.model_validate(
        {
            "model_list": [{"model_name": MODEL, "litellm_params": {"model": f"openai/{MODEL}"}}],
            "auth": {
                "keys": [
                    {"name": "alice", "key": "sk-a", "team": "research", "budget": alice},
                    {"name": "bob", "key": "sk-b", "team": "research"},
                ],
                "team_budgets": {"research": team} if team else {},
            },
        }
    )


class Clock:
    def __init__(self, moment: datetime) -> None:
        self.now = moment.timestamp()

    def __call__(self) -> float:
        return self.now


def worst_usd() -> Decimal:
    return worst_case_cost(PRICES, MODEL, "batch", BODY).paid_usd


def budgets_for(client: redis.asyncio.Redis, cfg: Config, clock: Clock) -> Budgets:
    return Budgets(BudgetStore(client), lambda: cfg, clock=clock)


async def reserve(budgets: Budgets, cfg: Config, hold: str, caller: Caller = ALICE) -> bool:
    return await budgets.reserve(hold, cfg, PRICES, caller=caller, model=MODEL, lane="batch", body=BODY)


def test_the_worst_case_is_the_estimated_prompt_and_the_output_cap_or_the_models_maximum() -> None:
    prompt = estimate_tokens(orjson.dumps(BODY))
    assert worst_case_tokens(BODY, 500) == Usage(prompt_tokens=prompt, completion_tokens=100)
    uncapped = {**BODY, "max_tokens": None, "n": 3}
    assert worst_case_tokens(uncapped, 500).completion_tokens == 1500
    assert worst_case_cost(PRICES, MODEL, "sync", BODY).paid_usd == Decimal("1e-6") * prompt + Decimal("4e-6") * 100


async def test_reserve_then_settle_leaves_exactly_the_real_cost(redis_client: redis.asyncio.Redis) -> None:
    cfg = config(alice={"daily_usd": 1.0})
    budgets = budgets_for(redis_client, cfg, Clock(datetime(2026, 12, 1, 12, tzinfo=UTC)))
    assert await reserve(budgets, cfg, "h1")
    [(_, left)] = await budgets.headroom(cfg)
    assert left == Decimal(1) - worst_usd()
    real = Cost(Decimal("0.000123456789"), Decimal("0.000061728394"))  # whole pico-dollars: kept exactly
    assert await budgets.settle("h1", real)
    assert not await budgets.settle("h1", real)  # once only: a second answer changes nothing
    [(_, left)] = await budgets.headroom(cfg)
    assert left == Decimal(1) - real.paid_usd
    assert await reserve(budgets, cfg, "h2")
    assert await budgets.release("h2")
    [(_, left)] = await budgets.headroom(cfg)
    assert left == Decimal(1) - real.paid_usd


async def test_a_call_past_the_limit_is_refused_with_a_429_naming_the_budget_and_its_reset(
    redis_client: redis.asyncio.Redis,
) -> None:
    limit = worst_usd() * 3
    cfg = config(alice={"daily_usd": float(limit)})
    budgets = budgets_for(redis_client, cfg, Clock(datetime(2026, 12, 1, 18, 30, tzinfo=UTC)))
    for hold in ("a", "b", "c"):  # exactly at the limit: still allowed
        assert await reserve(budgets, cfg, hold)
    with pytest.raises(BudgetExceeded) as refused:
        await reserve(budgets, cfg, "d")
    error = refused.value
    assert error.status == 429
    assert error.body()["error"]["type"] == "insufficient_quota"
    assert error.body()["error"]["code"] == "budget_exceeded"
    assert "key 'alice' daily budget" in error.message
    assert "resets at 2026-12-02T00:00:00Z" in error.message
    assert error.headers["retry-after"] == str(5 * 3600 + 30 * 60)
    [(_, left)] = await budgets.headroom(cfg)
    assert left == 0  # the refused call reserved nothing


async def test_the_day_rolls_over_at_utc_midnight_and_the_month_keeps_counting(
    redis_client: redis.asyncio.Redis,
) -> None:
    worst = worst_usd()
    cfg = config(alice={"daily_usd": float(worst * 2), "monthly_usd": float(worst * 3)})
    clock = Clock(datetime(2026, 12, 30, 23, 59, 59, tzinfo=UTC))
    budgets = budgets_for(redis_client, cfg, clock)
    assert await reserve(budgets, cfg, "d1")
    assert await reserve(budgets, cfg, "d2")
    with pytest.raises(BudgetExceeded, match=r"daily budget .* resets at 2026-12-31T00:00:00Z"):
        await reserve(budgets, cfg, "d3")
    clock.now += 1  # 2026-12-31T00:00:00Z: a new day, the same month
    assert await reserve(budgets, cfg, "d4")
    with pytest.raises(BudgetExceeded, match=r"monthly budget .* resets at 2027-01-01T00:00:00Z"):
        await reserve(budgets, cfg, "d5")
    clock.now += 86_400  # 2027-01-01: a new day and a new month
    assert await reserve(budgets, cfg, "d6")


async def test_a_reservation_nobody_settles_expires_with_its_period(redis_client: redis.asyncio.Redis) -> None:
    cfg = config(alice={"daily_usd": 1.0, "monthly_usd": 10.0})
    clock = Clock(datetime(2026, 12, 31, 18, tzinfo=UTC))  # 6 h to the day's and the month's end
    assert await reserve(budgets_for(redis_client, cfg, clock), cfg, "orphan")  # then the process is killed
    day = await redis_client.ttl(keys.budget_spent("key", "alice", "d2026-12-31"))
    month = await redis_client.ttl(keys.budget_spent("key", "alice", "m2026-12"))
    hold = await redis_client.ttl(keys.budget_hold("orphan"))
    assert 6 * 3600 < day <= 6 * 3600 + PERIOD_GRACE
    assert 6 * 3600 < month <= 6 * 3600 + PERIOD_GRACE
    assert abs(hold - month) <= 1  # the hold lives as long as its longest counter


async def test_two_keys_of_one_team_are_kept_apart_and_both_count_against_the_team(
    redis_client: redis.asyncio.Redis,
) -> None:
    worst = worst_usd()
    cfg = config(alice={"daily_usd": float(worst)}, team={"daily_usd": float(worst * 3)})
    budgets = budgets_for(redis_client, cfg, Clock(datetime(2026, 12, 1, tzinfo=UTC)))
    assert await reserve(budgets, cfg, "a1", ALICE)
    with pytest.raises(BudgetExceeded, match="key 'alice'"):
        await reserve(budgets, cfg, "a2", ALICE)
    assert await reserve(budgets, cfg, "b1", BOB)  # bob has no key budget: alice's spending is not his
    assert await reserve(budgets, cfg, "b2", BOB)
    with pytest.raises(BudgetExceeded, match="team 'research'"):
        await reserve(budgets, cfg, "b3", BOB)
    assert not await reserve(budgets, cfg, "m1", Caller("master", "master", is_master=True))  # no budget applies


async def test_headroom_gauges_show_each_budget_and_period(redis_client: redis.asyncio.Redis) -> None:
    cfg = config(alice={"daily_usd": 2.0, "monthly_usd": 10.0}, team={"monthly_usd": 50.0})
    budgets = budgets_for(redis_client, cfg, Clock(datetime(2026, 12, 1, tzinfo=UTC)))
    assert await reserve(budgets, cfg, "g1")
    registry = CollectorRegistry()
    await BudgetGauges(registry).refresh(budgets, cfg)
    worst = float(worst_usd())

    def gauge(name: str, scope: str, who: str, period: str) -> float | None:
        return registry.get_sample_value(name, {"scope": scope, "name": who, "period": period})

    assert gauge("batchgate_budget_headroom_usd", "key", "alice", "day") == pytest.approx(2.0 - worst)
    assert gauge("batchgate_budget_headroom_usd", "key", "alice", "month") == pytest.approx(10.0 - worst)
    assert gauge("batchgate_budget_headroom_usd", "team", "research", "month") == pytest.approx(50.0 - worst)
    assert gauge("batchgate_budget_limit_usd", "team", "research", "month") == 50.0
    assert gauge("batchgate_budget_headroom_usd", "team", "research", "day") is None
