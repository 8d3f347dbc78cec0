"""Venues: the ways a deferred call can be answered, each with a price (a share of the list price) and a turnaround.
The policy's `auto` lane takes the cheapest venue that keeps the deadline at the configured confidence.

Built in: `batch` (the provider's batch API, at its learned turnaround), `flex` (where the model has the tier; a
share of flex calls is refused with 429 and then paid at list, which its expected price counts), `sync` (list
price, at once). Declared in config (`policy.venues`): a share of list or a price tier, a turnaround, fields added
to the body, and optionally off-peak hours (a provider whose price drops at known hours): the call is held until
the window opens, then sent synchronously. Pure: prices, turnarounds and the clock are passed in.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from datetime import datetime, time, timedelta
from decimal import Decimal
from typing import Any

from proxy.durations import human_duration
from proxy.policy.matchers import WindowSpec
from proxy.policy.model import VenueConfig
from proxy.policy.venue import Considered, Venue
from proxy.pricing import DEFAULT_BATCH_DISCOUNT, ModelPrices, TierPrices

__all__ = [
    "Considered", "Venue", "completion_budget", "configured_venue", "matches", "next_open", "pick", "price_rule",
    "tier_share",
]  # fmt: skip


def pick(venues: Sequence[Venue], remaining: float, margin: float) -> tuple[Venue, tuple[Considered, ...], str]:
    """The cheapest venue whose answer comes `margin` seconds before a deadline `remaining` seconds away (ties: the
    first listed: batch, flex, the declared venues, sync); every venue considered, cheapest first; and why the
    winner won. `sync` (need 0) is the fallback when no venue fits: it is answered at list price at once."""
    ranked = sorted(venues, key=lambda venue: venue.price)  # stable: equal prices keep their listed order
    considered: list[Considered] = []
    winner: Venue | None = None
    for venue in ranked:
        if venue.unavailable is not None:
            considered.append(Considered(venue, False, venue.unavailable))
            continue
        fits = venue.need == 0 or remaining >= venue.need + margin
        if fits:
            note = f"keeps the deadline (needs {human_duration(venue.need)}, deadline in {human_duration(remaining)})"
        else:
            needs = f"{human_duration(venue.need)} + margin {human_duration(margin)}"
            note = f"too slow: needs {needs}, deadline in {human_duration(remaining)}"
        considered.append(Considered(venue, fits, note))
        if fits and winner is None:
            winner = venue
    if winner is None:
        winner = Venue("sync", "sync", 1.0, 0.0, 0.0)
    cheaper = [item.venue.name for item in considered if item.venue.price < winner.price]
    why = f"venue {winner.name} ({_percent(winner.price)} of list) is the cheapest that keeps the deadline"
    if cheaper:
        why += f"; cheaper but excluded: {', '.join(cheaper)}"
    return winner, tuple(considered), why


def configured_venue(
    venue: VenueConfig, prices: ModelPrices | None, now: datetime, *, confidence: float, prompt: int, completion: int
) -> Venue:
    """A config-declared venue for one call: its expected price share, and its turnaround from now (a held call's
    wait for the off-peak window included)."""
    if venue.price_multiplier is not None:
        share = venue.price_multiplier
    else:
        share = tier_share(prices, venue.price_tier or "batch", prompt=prompt, completion=completion)
    price = (1 - venue.unavailable_rate) * share + venue.unavailable_rate
    hold = 0.0
    if venue.window is not None:
        hold = (next_open(venue.window.spec(), now) - now).total_seconds()
    p50, p99 = venue.turnaround.p50, venue.turnaround.p99
    at_confidence = p50 if confidence <= 0.5 else p50 + (p99 - p50) * min(1.0, (confidence - 0.5) / 0.49)
    return Venue(venue.name, "sync", price, hold + p50, hold + at_confidence, hold=hold, body=dict(venue.body))


def price_rule(venue: VenueConfig, at: datetime) -> str | None:
    """What a call sent on a declared venue at `at` is billed at (PriceBook.cost_at): its price tier (`batch`,
    `flex`) or its multiplier as a share of list ("0.25"); None (list) for an off-peak venue's call sent outside
    its window (a late send, a rescue), which the provider bills at list."""
    if venue.window is not None and not venue.window.spec().contains(at):
        return None
    if venue.price_multiplier is not None:
        return repr(venue.price_multiplier)
    return venue.price_tier


def declared(venues: Sequence[VenueConfig], name: str | None) -> VenueConfig | None:
    """The declared venue named `name` (None: none, or no longer configured)."""
    return next((venue for venue in venues if venue.name == name), None) if name else None


def matches(venue: VenueConfig, model: str, provider: str) -> bool:
    """Whether a declared venue serves `model` (a configured model_name) of `provider`."""
    if venue.providers and provider not in venue.providers:
        return False
    return any(fnmatch.fnmatchcase(model, pattern) for pattern in venue.models)


def tier_share(prices: ModelPrices | None, tier: str, *, prompt: int, completion: int) -> float:
    """What a call of `prompt` + `completion` tokens costs on `tier` (batch, flex) as a share of its list price;
    the default batch discount when the model's prices are unknown."""
    if prices is None:
        return float(1 - DEFAULT_BATCH_DISCOUNT)
    chosen: TierPrices = prices.flex if tier == "flex" else prices.batch
    prompt, completion = (prompt, completion) if prompt or completion else (1, 1)
    listed = prompt * prices.list.input + completion * prices.list.output
    if listed == 0:
        return 1.0
    return float((prompt * chosen.input + completion * chosen.output) / listed)


def completion_budget(body: Mapping[str, Any]) -> int:
    """The output tokens a chat body allows (`max_completion_tokens`, else `max_tokens`; 0 when unset)."""
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return 0


def next_open(spec: WindowSpec, now: datetime) -> datetime:
    """`now` when the window is open, else the next moment it opens."""
    if spec.contains(now):
        return now
    local = now.astimezone(spec.zone)
    start = time(spec.start // 3600, spec.start % 3600 // 60, spec.start % 60)
    for offset in range(8):
        day = local.date() + timedelta(days=offset)
        opening = datetime.combine(day, start, tzinfo=spec.zone)
        if day.weekday() in spec.days and opening > now:
            return opening.astimezone(now.tzinfo)
    return now  # unreachable for a valid window (it names at least one day)


def _percent(share: float) -> str:
    return f"{(Decimal(str(share)) * 100).quantize(Decimal('0.1')).normalize():f}%"
