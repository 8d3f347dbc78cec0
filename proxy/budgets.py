"""Spending budgets: a limit per UTC day and per UTC month for a team (`auth.team_budgets`) and for a caller key
(`auth.keys[].budget`), both applying to a key's calls.

A call (sync or deferred) reserves its worst-case cost when it is accepted: its prompt tokens as estimated by
proxy/token_estimate.py plus its `max_completion_tokens` / `max_tokens` (the model's maximum output when absent),
times `n`, at the price of the lane it was given (an embeddings call: its input alone, as an embedding has no
output tokens; a Responses call's cap is its `max_output_tokens`). A call that does not fit every budget it counts
against is refused (`BudgetExceeded`, HTTP 429). When the call is answered its reservation is settled at the real cost
(released when it failed or was cancelled) by whichever process answered it: the API for sync calls, the worker
(through telemetry) for deferred jobs, whose reservation is named by the job id. A reservation never settled (a
process killed in between) is kept until its period ends, so a budget errs on the side of spending less.

Amounts are integer pico-dollars (proxy/accounting.py). A model with no known price reserves nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

from proxy.accounting import to_pico, usd_text
from proxy.auth import Caller
from proxy.durations import format_instant
from proxy.endpoints import Endpoint, endpoint_of
from proxy.errors import ApiError
from proxy.pricing import Cost, Lane, PriceBook, Usage
from proxy.settings import Budget, Config
from proxy.store.budgets import BudgetStore, Counter, Refusal
from proxy.token_estimate import estimate_tokens

PERIOD_GRACE = 86_400.0  # a counter and its holds outlive their period by this much (late settlements land)
DEFAULT_MAX_OUTPUT = 4096  # worst-case completion tokens of a model whose maximum output is unknown


class BudgetExceeded(ApiError):
    """A call that would take a budget over its limit: OpenAI's quota error shape, our own code."""

    status = 429
    error_type = "insufficient_quota"
    default_code = "budget_exceeded"


@dataclass(frozen=True, slots=True)
class Window:
    """One budget period: `period` day|month, `id` as in the store (d2026-12-01, m2026-12), when it resets."""

    period: str
    id: str
    resets_at: datetime

    def ttl(self, now: datetime) -> float:
        return (self.resets_at - now).total_seconds() + PERIOD_GRACE


def windows(now: datetime) -> dict[str, Window]:
    """The UTC day and month containing `now`."""
    now = now.astimezone(UTC)
    day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    next_day = datetime.fromtimestamp(day_start.timestamp() + 86_400, UTC)
    next_month = day_start.replace(day=1, year=now.year + (now.month == 12), month=now.month % 12 + 1)
    return {
        "day": Window("day", f"d{now:%Y-%m-%d}", next_day),
        "month": Window("month", f"m{now:%Y-%m}", next_month),
    }


@dataclass(frozen=True, slots=True)
class Limit:
    """One configured limit: `scope` team|key, the team's or key's `name`, `period` day|month, `usd`."""

    scope: str
    name: str
    period: str
    usd: Decimal

    def label(self) -> str:
        return f"{self.scope} {self.name!r} {'daily' if self.period == 'day' else 'monthly'} budget"


def limits_for(config: Config, caller: Caller) -> list[Limit]:
    """The limits a caller's calls count against: its team's, then its key's."""
    found: list[Limit] = []
    key_budget = next((declared.budget for declared in config.auth.keys if declared.name == caller.name), None)
    for scope, name, budget in (
        ("team", caller.team, config.auth.team_budgets.get(caller.team)),
        ("key", caller.name, None if caller.is_master else key_budget),
    ):
        found += _limits(scope, name, budget)
    return found


def all_limits(config: Config) -> list[Limit]:
    """Every configured limit (for the headroom gauges)."""
    found: list[Limit] = []
    for team, budget in sorted(config.auth.team_budgets.items()):
        found += _limits("team", team, budget)
    for declared in config.auth.keys:
        found += _limits("key", declared.name, declared.budget)
    return found


def _limits(scope: str, name: str, budget: Budget | None) -> list[Limit]:
    if budget is None:
        return []
    pairs = (("day", budget.daily_usd), ("month", budget.monthly_usd))
    return [Limit(scope, name, period, Decimal(repr(usd))) for period, usd in pairs if usd is not None]


def worst_case_tokens(
    body: Mapping[str, Any], max_output: int | None, endpoint: Endpoint = Endpoint.CHAT_COMPLETIONS
) -> Usage:
    """The most a call can be billed for: its estimated prompt tokens and its output cap (per choice, times `n`;
    none for an embeddings call)."""
    prompt = estimate_tokens(orjson.dumps(body))
    if endpoint is Endpoint.EMBEDDINGS:
        return Usage(prompt_tokens=prompt, completion_tokens=0)
    cap = body.get("max_completion_tokens") or body.get("max_tokens") or body.get("max_output_tokens")
    output = cap if isinstance(cap, int) and cap > 0 else (max_output or DEFAULT_MAX_OUTPUT)
    choices = body.get("n")
    output *= choices if isinstance(choices, int) and choices > 1 else 1
    return Usage(prompt_tokens=prompt, completion_tokens=output)


def worst_case_cost(
    prices: PriceBook, model: str, lane: Lane, body: Mapping[str, Any], price: str | None = None
) -> Cost:
    """The worst case of a call to `model` (a model or a queue group, `proxy/endpoints.py`) on `lane`, or at a
    declared venue's `price` rule (PriceBook.cost_at)."""
    tokens = worst_case_tokens(body, prices.max_output_tokens(model), endpoint_of(model))
    return prices.cost(model, tokens, lane) if price is None else prices.cost_at(model, tokens, price)


class Budgets:
    """Reserves, settles and reports the budgets of the config in force (`config()` is read on every call)."""

    def __init__(
        self,
        store: BudgetStore,
        config: Callable[[], Config],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._config = config
        self._clock = clock

    def active(self) -> bool:
        """Whether any budget is configured (else nothing is reserved or settled)."""
        auth = self._config().auth
        return bool(auth.team_budgets) or any(declared.budget is not None for declared in auth.keys)

    async def reserve(
        self,
        hold_id: str,
        config: Config,
        prices: PriceBook,
        *,
        caller: Caller,
        model: str,
        lane: Lane,
        body: Mapping[str, Any],
        price: str | None = None,
    ) -> bool:
        """Reserve the call's worst-case cost under `hold_id` against every budget of `caller` (at its declared
        venue's `price` rule, when it has one); True when a hold was made (settle or release it), False when none
        applies. Raises BudgetExceeded."""
        limits = limits_for(config, caller)
        if not limits:
            return False
        cost = worst_case_cost(prices, model, lane, body, price)
        if not cost.known:
            return False
        now = datetime.fromtimestamp(self._clock(), UTC)
        counters = _counters(limits, windows(now), now)
        amount = to_pico(cost.paid_usd)
        refusal = await self._store.reserve(hold_id, counters, amount)
        if refusal is not None:
            raise _exceeded(limits[counters.index(refusal.counter)], refusal, amount, windows(now), now)
        return True

    async def settle(self, hold_id: str, cost: Cost) -> bool:
        """Settle a hold at the real cost (an unknown cost keeps the reserved amount); False when no hold."""
        return await self._store.settle(hold_id, to_pico(cost.paid_usd) if cost.known else None)

    async def release(self, hold_id: str) -> bool:
        """Give a hold's amount back (the call was not answered, or was cancelled)."""
        return await self._store.settle(hold_id, 0)

    async def headroom(self, config: Config) -> list[tuple[Limit, Decimal]]:
        """Every configured limit with what is left of it this period (USD; negative when overspent)."""
        limits = all_limits(config)
        now = datetime.fromtimestamp(self._clock(), UTC)
        spent = await self._store.spent(_counters(limits, windows(now), now))
        return [(limit, limit.usd - Decimal(used).scaleb(-12)) for limit, used in zip(limits, spent, strict=True)]


def _counters(limits: list[Limit], current: Mapping[str, Window], now: datetime) -> list[Counter]:
    return [
        Counter(
            limit.scope,
            limit.name,
            current[limit.period].id,
            to_pico(limit.usd),
            current[limit.period].ttl(now),
        )
        for limit in limits
    ]


def _exceeded(
    limit: Limit, refusal: Refusal, amount: int, current: Mapping[str, Window], now: datetime
) -> BudgetExceeded:
    resets_at = current[limit.period].resets_at
    message = (
        f"This call would exceed the {limit.label()} of ${limit.usd:f}: ${usd_text(refusal.spent)} is spent or "
        f"reserved this period and the call may cost up to ${usd_text(amount)}. The budget resets at "
        f"{format_instant(resets_at)}."
    )
    return BudgetExceeded(message, headers={"retry-after": str(max(1, int((resets_at - now).total_seconds())))})
