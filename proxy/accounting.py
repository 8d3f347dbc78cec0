"""The savings ledger: exact list, paid, waste and saved amounts of every billed answer, in Redis, by the hour.

paid: what the answers jobs took cost; waste: billed answers no job took (by reason); saved = list - paid -
waste; forfeited: what rescues paid above the lane they left (by rescue reason). docs/metrics.md defines them.

Amounts are integers of pico-dollars (1e-12 USD) added with HINCRBY, so totals are exact across processes and
restarts (Prometheus counters are floats and reset; they serve rates and dashboards, this serves reports).

The store keeps the counters (`proxy/store/ledger.py`: one bucket per queue group and hour, one "already
recorded" marker per job); this module names them (`real|shadow␟team␟model␟lane␟counter`), computes them from a
request's cost and usage, and turns buckets into reports.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import orjson

from proxy.endpoints import endpoint_of, model_of
from proxy.pricing import Cost, Usage
from proxy.store.ledger import HOUR, Bucket, LedgerStore, bucket_of

PICO_PER_USD = 10**12
SEPARATOR = "\x1f"
MAX_REPORT_SECONDS = 400 * 86400


def to_pico(usd: Decimal) -> int:
    """USD as integer pico-dollars: exact for prices that are multiples of 1e-12, else rounded half-even."""
    return int(usd.scaleb(12).to_integral_value(rounding=ROUND_HALF_EVEN))


def usd_text(pico: int) -> str:
    return f"{Decimal(pico).scaleb(-12):f}"


@dataclass(slots=True)
class Totals:
    requests: int = 0
    unknown_cost_requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    cache_saved_pico: int = 0  # what the prompt cache saved (reads below input price, less the write premium)
    list_pico: int = 0
    paid_pico: int = 0
    waste_requests: int = 0
    waste_prompt_tokens: int = 0
    waste_completion_tokens: int = 0
    waste_pico: int = 0
    forfeited_requests: int = 0
    forfeited_pico: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    waste_by_reason: dict[str, int] = field(default_factory=dict)  # pico-dollars
    forfeited_by_reason: dict[str, int] = field(default_factory=dict)  # pico-dollars

    def add_counter(self, counter: str, amount: int) -> None:
        kind, _, name = counter.partition(":")
        tally = {"outcome": self.outcomes, "waste": self.waste_by_reason, "forfeited": self.forfeited_by_reason}
        if name and kind in tally:
            tally[kind][name] = tally[kind].get(name, 0) + amount
        elif counter in _COUNTERS:
            setattr(self, counter, getattr(self, counter) + amount)

    def merge(self, other: Totals) -> None:
        for counter in _COUNTERS:
            setattr(self, counter, getattr(self, counter) + getattr(other, counter))
        for mine, theirs in (
            (self.outcomes, other.outcomes),
            (self.waste_by_reason, other.waste_by_reason),
            (self.forfeited_by_reason, other.forfeited_by_reason),
        ):
            for name, amount in theirs.items():
                mine[name] = mine.get(name, 0) + amount

    @property
    def list_usd(self) -> Decimal:
        return Decimal(self.list_pico).scaleb(-12)

    @property
    def paid_usd(self) -> Decimal:
        return Decimal(self.paid_pico).scaleb(-12)

    @property
    def saved_pico(self) -> int:
        """list - paid - waste: what the answers would have cost at list, less everything billed."""
        return self.list_pico - self.paid_pico - self.waste_pico

    @property
    def saved_usd(self) -> Decimal:
        return Decimal(self.saved_pico).scaleb(-12)

    @property
    def waste_usd(self) -> Decimal:
        return Decimal(self.waste_pico).scaleb(-12)

    @property
    def savings_percent(self) -> float | None:
        if self.list_pico <= 0:
            return None
        return round(self.saved_pico * 100 / self.list_pico, 2)

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "outcomes": dict(sorted(self.outcomes.items())),
            "unknown_cost_requests": self.unknown_cost_requests,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cached_tokens": self.cached_tokens,
            "prompt_cache": {
                "read_tokens": self.cached_tokens,
                "write_tokens": self.cache_write_tokens,
                "saved_usd": usd_text(self.cache_saved_pico),
            },
            "list_usd": usd_text(self.list_pico),
            "paid_usd": usd_text(self.paid_pico),
            "waste_usd": usd_text(self.waste_pico),
            "saved_usd": usd_text(self.saved_pico),
            "savings_percent": self.savings_percent,
            "waste": {
                "lines": self.waste_requests,
                "prompt_tokens": self.waste_prompt_tokens,
                "completion_tokens": self.waste_completion_tokens,
                "by_reason": {reason: usd_text(pico) for reason, pico in sorted(self.waste_by_reason.items())},
            },
            "forfeited_usd": usd_text(self.forfeited_pico),
            "forfeited": {
                "requests": self.forfeited_requests,
                "by_reason": {reason: usd_text(pico) for reason, pico in sorted(self.forfeited_by_reason.items())},
            },
        }


_COUNTERS = (
    "requests",
    "unknown_cost_requests",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "cache_saved_pico",
    "list_pico",
    "paid_pico",
    "waste_requests",
    "waste_prompt_tokens",
    "waste_completion_tokens",
    "waste_pico",
    "forfeited_requests",
    "forfeited_pico",
)


@dataclass(frozen=True, slots=True)
class RowKey:
    team: str
    model: str
    lane: str


@dataclass(slots=True)
class SavingsReport:
    since: datetime
    until: datetime
    team: str | None
    rows: dict[RowKey, Totals] = field(default_factory=dict)
    shadow_rows: dict[RowKey, Totals] = field(default_factory=dict)

    def total(self, *, shadow: bool = False) -> Totals:
        return _sum(self.shadow_rows.values() if shadow else self.rows.values())

    def by(self, dimension: str) -> dict[str, Totals]:
        """Totals per team, model, endpoint or lane (a row's `model` is its queue group: proxy/endpoints.py)."""
        grouped: dict[str, Totals] = {}
        for key, totals in self.rows.items():
            grouped.setdefault(_dimension(key, dimension), Totals()).merge(totals)
        return dict(sorted(grouped.items()))

    def to_json(self) -> dict[str, Any]:
        def dimension(name: str) -> list[dict[str, Any]]:
            return [{name: value, **totals.to_json()} for value, totals in self.by(name).items()]

        def rows(source: Mapping[RowKey, Totals]) -> list[dict[str, Any]]:
            ordered = sorted(source.items(), key=lambda item: (item[0].team, item[0].model, item[0].lane))
            return [
                {"team": k.team, "model": model_of(k.model), "endpoint": endpoint_of(k.model).value, "lane": k.lane,
                 **t.to_json()}
                for k, t in ordered
            ]  # fmt: skip

        return {
            "object": "savings_report",
            "currency": "USD",
            "since": _instant(self.since),
            "until": _instant(self.until),
            "team": self.team,
            "totals": self.total().to_json(),
            "by_team": dimension("team"),
            "by_model": dimension("model"),
            "by_endpoint": dimension("endpoint"),
            "by_lane": dimension("lane"),
            "rows": rows(self.rows),
            "shadow": {"totals": self.total(shadow=True).to_json(), "rows": rows(self.shadow_rows)},
        }


def _dimension(key: RowKey, name: str) -> str:
    if name == "model":
        return model_of(key.model)
    if name == "endpoint":
        return endpoint_of(key.model).value
    value: str = getattr(key, name)
    return value


def _sum(parts: Iterable[Totals]) -> Totals:
    total = Totals()
    for part in parts:
        total.merge(part)
    return total


def _instant(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class Accounting:
    """Records finished requests into the ledger and answers savings reports."""

    def __init__(self, ledger: LedgerStore) -> None:
        self._ledger = ledger

    async def record(
        self,
        *,
        team: str,
        model: str,
        lane: str,
        outcome: str,
        cost: Cost,
        usage: Usage,
        at: datetime,
        shadow: bool = False,
        job_id: str | None = None,
    ) -> bool:
        """Add one finished request to its hour. With a job id, a second call for the same job is a no-op
        (returns False). A shadow record is what the request would have cost in `lane`; report it separately.
        `model` is the configured model name; `lane` is the lane that answered (a rescued job is `sync`)."""
        counters = increments(team=team, model=model, lane=lane, outcome=outcome, cost=cost, usage=usage, shadow=shadow)
        return await self.add(bucket_of(model, at, job_id), counters, job_id=job_id, shadow=shadow)

    async def add(
        self,
        bucket: Bucket,
        counters: Mapping[str, int],
        *,
        job_id: str | None = None,
        shadow: bool = False,
        waste: str | None = None,
    ) -> bool:
        """Add counters (from `increments`, possibly summed over many requests) to one (group tag, hour) bucket;
        `waste`: the source of a wasted line of `job_id` (recorded once per source)."""
        return await self._ledger.add(bucket, counters, job_id=job_id, shadow=shadow, waste=waste)

    async def last_reconciliations(self) -> dict[str, dict[str, Any]]:
        """{"last": ..., "last_mismatch": ...}: the reconciliations kept (either may be missing)."""
        found: dict[str, dict[str, Any]] = {}
        for name, raw in (await self._ledger.reconciliations()).items():
            try:
                parsed = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            if isinstance(parsed, dict):
                found[name] = parsed
        return found

    async def report(self, since: datetime, until: datetime, team: str | None = None) -> SavingsReport:
        """Totals of the whole hours overlapping [since, until), optionally for one team."""
        first_hour = math.floor(since.timestamp() / HOUR)
        end_hour = math.ceil(until.timestamp() / HOUR)
        report = SavingsReport(
            since=datetime.fromtimestamp(first_hour * HOUR, UTC),
            until=datetime.fromtimestamp(end_hour * HOUR, UTC),
            team=team,
        )
        for bucket in await self._ledger.buckets(first_hour, end_hour):
            _add_bucket(report, bucket, team)
        return report


@dataclass(frozen=True, slots=True)
class Forfeit:
    """A rescue that paid more than the lane it left: `usd` = paid - what the left lane would have cost."""

    reason: str
    usd: Decimal


def increments(
    *,
    team: str,
    model: str,
    lane: str,
    outcome: str,
    cost: Cost,
    usage: Usage,
    shadow: bool,
    waste_reason: str | None = None,
    forfeit: Forfeit | None = None,
    cache_saved: Decimal | None = None,
) -> dict[str, int]:
    """The ledger fields one request adds to (exact integers: amounts in pico-dollars). A wasted line
    (`waste_reason`) adds to the waste counters only: it answered no request."""
    if waste_reason is not None:
        counters = _waste_increments(waste_reason, cost, usage)
    else:
        counters = {
            "requests": 1,
            f"outcome:{outcome}": 1,
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "cached_tokens": usage.cached_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
        }
        if cache_saved is not None:
            counters["cache_saved_pico"] = to_pico(cache_saved)
        if cost.known:
            counters["list_pico"] = to_pico(cost.list_usd)
            counters["paid_pico"] = to_pico(cost.paid_usd)
        else:
            counters["unknown_cost_requests"] = 1
        if forfeit is not None:
            counters["forfeited_requests"] = 1
            counters["forfeited_pico"] = to_pico(forfeit.usd)
            counters[f"forfeited:{forfeit.reason}"] = to_pico(forfeit.usd)
    prefix = SEPARATOR.join(("shadow" if shadow else "real", team, model, lane, ""))
    return {prefix + counter: amount for counter, amount in counters.items() if amount}


def _waste_increments(reason: str, cost: Cost, usage: Usage) -> dict[str, int]:
    counters = {
        "waste_requests": 1,
        "waste_prompt_tokens": usage.prompt_tokens,
        "waste_completion_tokens": usage.completion_tokens,
    }
    if cost.known:
        counters["waste_pico"] = counters[f"waste:{reason}"] = to_pico(cost.paid_usd)
    else:
        counters["unknown_cost_requests"] = 1
    return counters


def _add_bucket(report: SavingsReport, bucket: Mapping[str, int], team: str | None) -> None:
    for name, amount in bucket.items():
        parts = name.split(SEPARATOR)
        if len(parts) != 5:
            continue
        kind, row_team, model, lane, counter = parts
        if team is not None and row_team != team:
            continue
        rows = report.shadow_rows if kind == "shadow" else report.rows
        rows.setdefault(RowKey(row_team, model, lane), Totals()).add_counter(counter, amount)
