"""Quotes: what a set of chat calls would cost at list price, on each venue, and on the cheapest venue that keeps
each call's deadline, at the current turnarounds. No provider is called (`POST /v1/quote`, `batchgate quote`).

A call is a chat body, or a batch-file line (`{"custom_id", "body", ...}`); either may carry `"deadline"` (a
duration such as 4h, or an RFC 3339 time), else the quote's default, else the policy's `default_deadline`. Its
tokens are counted as the router counts them: the prompt about four bytes a token, the output its
`max_completion_tokens` / `max_tokens` (0 when unset; an upper bound, as for budgets).
Or the calls are the last N hours of shadow-mode traffic (`shadow_calls`): each as kept when it was answered
(proxy/store/shadow_calls.py: its model, the tokens the provider counted, its deadline), quoted as if made now.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson

from proxy.durations import human_duration
from proxy.endpoints import Endpoint, endpoint_of
from proxy.errors import InvalidRequest
from proxy.policy.decide import parse_client_deadline
from proxy.policy.lanes import VenueInputs, lane_facts, venue_list
from proxy.policy.venue import Venue
from proxy.pricing import PriceBook
from proxy.settings import Config
from proxy.store.shadow_calls import ShadowCall
from proxy.venues import completion_budget, pick

PICO = Decimal("1e-12")
MAX_CALLS = 50_000


@dataclass(frozen=True, slots=True)
class QuoteCall:
    """One call to quote: its model, token counts and deadline (as written, and as an instant)."""

    model: str
    prompt_tokens: int
    completion_tokens: int
    deadline_text: str
    deadline: datetime


@dataclass(frozen=True, slots=True)
class Turnarounds:
    """A group's batch turnaround now (seconds): at the configured confidence and median; learned or the prior."""

    need: float
    median: float
    learned: bool


@dataclass(slots=True)
class _Tally:
    calls: int = 0
    list_usd: Decimal = Decimal(0)
    expected_usd: Decimal = Decimal(0)
    eta: list[float] = field(default_factory=list)
    need: list[float] = field(default_factory=list)

    def json(self) -> dict[str, Any]:
        return {
            "list_usd": _usd(self.list_usd),
            "expected_usd": _usd(self.expected_usd),
            "saved_usd": _usd(self.list_usd - self.expected_usd),
        }


def parse_calls(
    items: Sequence[Any], config: Config, now: datetime, *, default_deadline: str | None = None
) -> list[QuoteCall]:
    """The calls of a quote from decoded JSON items. Raises InvalidRequest naming the item (1-based) that is not a
    chat body of a configured model, or whose deadline is not a duration or a future time."""
    if len(items) > MAX_CALLS:
        raise InvalidRequest(f"a quote takes at most {MAX_CALLS} calls; got {len(items)}", code="too_many_calls")
    fallback = default_deadline or f"{int(config.policy.default_deadline)}s"
    calls: list[QuoteCall] = []
    for index, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            raise InvalidRequest(f"call {index} is not a JSON object", code="invalid_quote")
        inner = item.get("body")
        body: dict[str, Any] = inner if isinstance(inner, dict) else item
        deadline_text = item.get("deadline", body.get("deadline", fallback))
        body = {name: value for name, value in body.items() if name != "deadline"}
        model = body.get("model")
        if not isinstance(model, str) or config.deployment(model) is None:
            raise InvalidRequest(f"call {index}: model {model!r} is not a configured model", code="invalid_quote")
        try:
            deadline = parse_client_deadline(str(deadline_text), now)
        except InvalidRequest as exc:
            raise InvalidRequest(f"call {index}: {exc.message}", code="invalid_quote") from None
        size = len(orjson.dumps(body))
        calls.append(QuoteCall(model, size // 4, completion_budget(body), str(deadline_text), deadline))
    return calls


def shadow_calls(kept: Sequence[ShadowCall], config: Config, now: datetime) -> list[QuoteCall]:
    """Kept shadow-mode calls as calls to quote, each with its own deadline (the policy's default_deadline when it
    had none) counted from `now`; calls of models no longer configured, or of endpoints other than chat, are left
    out."""
    calls: list[QuoteCall] = []
    for call in kept[-MAX_CALLS:]:
        if endpoint_of(call.model) is not Endpoint.CHAT_COMPLETIONS or config.deployment(call.model) is None:
            continue
        seconds = round(call.deadline) if call.deadline is not None else int(config.policy.default_deadline)
        seconds = max(seconds, 0)
        text, deadline = human_duration(seconds), now + timedelta(seconds=seconds)
        calls.append(QuoteCall(call.model, call.prompt_tokens, call.completion_tokens, text, deadline))
    return calls


def parse_text(text: str) -> list[Any]:
    """A quote's input: a JSON array of calls, or JSONL (one call a line; blank lines skipped). InvalidRequest
    naming the line that is not JSON."""
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            loaded = orjson.loads(stripped)
        except orjson.JSONDecodeError:
            raise InvalidRequest("the quote body is not a JSON array of calls", code="invalid_quote") from None
        if not isinstance(loaded, list):
            raise InvalidRequest("the quote body is not a JSON array of calls", code="invalid_quote")
        return loaded
    items: list[Any] = []
    for number, line in enumerate(stripped.splitlines(), start=1):
        if line.strip():
            try:
                items.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                raise InvalidRequest(f"line {number} is not JSON", code="invalid_quote") from None
    return items


def quote(
    config: Config,
    prices: PriceBook,
    turnarounds: Callable[[str], Turnarounds],
    calls: Sequence[QuoteCall],
    now: datetime,
    *,
    source: str = "the calls given",
) -> dict[str, Any]:
    """The quote document (`POST /v1/quote`): totals at list price and on the cheapest venue that keeps each
    call's deadline ("auto"), per venue (every call that venue can take sent there, the others at list), and per
    deadline the share of calls a venue cheaper than list can take. Shape: `{"object": "batchgate.quote", "calls",
    "unknown_price_calls", "list_usd", "expected_usd", "saved_usd", "venues_picked": {venue: calls}, "venues":
    [{"venue", "calls", "share", "list_usd", "expected_usd", "saved_usd", "eta_seconds", "need_seconds"}],
    "deadlines": [{"deadline", "calls", "deferrable", "deferrable_share"}], "turnarounds": {model:
    {"at_confidence_seconds", "median_seconds", "learned"}}, "confidence", "source"}`; amounts are USD as decimal
    strings (calls of models with unknown prices are counted in `calls` and left out of them), shares 0..1."""
    margin = config.worker.safety_margin
    auto, venues, deadlines = _Tally(), dict[str, _Tally](), dict[str, list[int]]()
    unknown = 0
    picked: dict[str, int] = {}
    groups: dict[str, Turnarounds] = {}
    for call in calls:
        model_prices = prices.prices(call.model)
        deadline_row = deadlines.setdefault(call.deadline_text, [0, 0])
        deadline_row[0] += 1
        seen = groups.setdefault(call.model, turnarounds(call.model))
        inputs = VenueInputs(model_prices, now, call.prompt_tokens, call.completion_tokens, seen.median)
        lanes = lane_facts(config, call.model, batch_turnaround=seen.need)
        options = venue_list(config, call.model, lanes, inputs)
        remaining = (call.deadline - now).total_seconds()
        winner, considered, _ = pick(options, remaining, margin)
        picked[winner.name] = picked.get(winner.name, 0) + 1
        if winner.price < 1:
            deadline_row[1] += 1
        if model_prices is None:
            unknown += 1
            continue
        listed = call.prompt_tokens * model_prices.list.input + call.completion_tokens * model_prices.list.output
        auto.calls += 1
        auto.list_usd += listed
        auto.expected_usd += _at(listed, winner)
        for item in considered:
            tally = venues.setdefault(item.venue.name, _Tally())
            tally.list_usd += listed
            tally.expected_usd += _at(listed, item.venue) if item.fits else listed
            tally.calls += item.fits
            tally.eta.append(item.venue.eta)
            tally.need.append(item.venue.need)
    return {
        "object": "batchgate.quote",
        "calls": len(calls),
        "unknown_price_calls": unknown,
        **auto.json(),
        "venues_picked": dict(sorted(picked.items())),
        "venues": [_venue_row(name, tally, len(calls) - unknown) for name, tally in venues.items()],
        "deadlines": [
            {"deadline": text, "calls": total, "deferrable": cheaper, "deferrable_share": round(cheaper / total, 4)}
            for text, (total, cheaper) in deadlines.items()
        ],
        "turnarounds": {
            model: {"at_confidence_seconds": seen.need, "median_seconds": seen.median, "learned": seen.learned}
            for model, seen in groups.items()
        },
        "confidence": config.worker.turnaround_confidence,
        "source": source,
    }


def prior_turnarounds(config: Config) -> Callable[[str], Turnarounds]:
    """Turnarounds from the config alone (no store): every group at its `turnaround_estimate`."""

    def of(group: str) -> Turnarounds:
        estimate = config.batch_knobs(group).turnaround_estimate
        return Turnarounds(estimate, estimate, learned=False)

    return of


def render(document: Mapping[str, Any]) -> str:
    """The quote as `batchgate quote` prints it."""
    lines = [
        f"{document['calls']} calls: list ${_shown(document['list_usd'])}, expected ${_shown(document['expected_usd'])}"
        f" on the cheapest venue that keeps each deadline, saved ${_shown(document['saved_usd'])}",
        "venues (each call it can take sent there, the others at list):",
    ]
    for row in document["venues"]:
        lines.append(
            f"  {row['venue']:<12} takes {row['calls']:>5} ({row['share']:.0%})"
            f"  expected ${_shown(row['expected_usd'])}  saved ${_shown(row['saved_usd'])}"
            f"  eta {human_duration(row['eta_seconds'])}"
            f" (at confidence {human_duration(row['need_seconds'])})"
        )
    lines.append("deadlines (share of calls a venue cheaper than list can take):")
    for row in document["deadlines"]:
        lines.append(f"  {row['deadline']:<24} {row['deferrable']}/{row['calls']} ({row['deferrable_share']:.0%})")
    if document["unknown_price_calls"]:
        lines.append(f"{document['unknown_price_calls']} calls of models with unknown prices are not costed")
    lines.append(f"source: {document['source']}")
    return "\n".join(lines)


def _shown(usd: str) -> str:
    """A ledger amount without its trailing zeros (0.000126600000 -> 0.0001266)."""
    return f"{Decimal(usd).normalize():f}"


def _venue_row(name: str, tally: _Tally, priced: int) -> dict[str, Any]:
    return {
        "venue": name,
        "calls": tally.calls,
        "share": round(tally.calls / priced, 4) if priced else 0.0,
        **tally.json(),
        "eta_seconds": max(tally.eta, default=0.0),
        "need_seconds": max(tally.need, default=0.0),
    }


def _at(listed: Decimal, venue: Venue) -> Decimal:
    return (listed * Decimal(repr(venue.price))).quantize(PICO)


def _usd(value: Decimal) -> str:
    return f"{value.quantize(PICO):f}"
