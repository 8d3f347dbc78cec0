"""The savings ledger: exact list, paid and saved amounts of every finished request, in Redis, by the hour.

Amounts are integers of pico-dollars (1e-12 USD) added with HINCRBY, so totals are exact across processes and
restarts (Prometheus counters are floats and reset; they serve rates and dashboards, this serves reports).

Layout (Redis Cluster safe): a queue group's hourly bucket `bg:{<tag>}:acct:<hour>` is a hash whose fields are
`team␟model␟lane␟counter`; `bg:{<tag>}:acct:hours` indexes the hours that have data; `bg:{acct}:tags` lists
the groups. A job's "already recorded" marker `bg:{<tag>}:acct:done:<job id>` lives in the same slot as its
bucket, so recording is one atomic script and a second recording of the same job changes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import redis.asyncio

from proxy.pricing import Cost, Usage
from proxy.store import keys

PICO_PER_USD = 10**12
HOUR = 3600
SEPARATOR = "\x1f"
DEFAULT_RETENTION_SECONDS = 400 * 86400
DEFAULT_MARKER_TTL_SECONDS = 8 * 86400
MAX_REPORT_SECONDS = 400 * 86400

# KEYS: bucket, hours index[, job marker]. ARGV: hour, bucket ttl ms, marker ttl ms, oldest hour kept,
# then field/increment pairs. Returns 0 when the job was already recorded.
RECORD_SCRIPT = """
if #KEYS == 3 and not redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[3]) then
  return 0
end
for i = 5, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[4])
return 1
"""


def ledger_tags() -> str:
    """SET of the group tags that have ledger data."""
    return f"{keys.PREFIX}:{{acct}}:tags"


def ledger_bucket(tag: str, hour: int) -> str:
    """HASH of one group's counters for one hour (`hour` = epoch seconds // 3600)."""
    return f"{keys.PREFIX}:{{{tag}}}:acct:{hour}"


def ledger_hours(tag: str) -> str:
    """ZSET of the hours with data in a group's ledger."""
    return f"{keys.PREFIX}:{{{tag}}}:acct:hours"


def ledger_marker(job_id: str, *, shadow: bool = False) -> str:
    """Set when a job's cost is recorded; in the job's slot, so the job store can set it atomically."""
    suffix = ":shadow" if shadow else ""
    return f"{keys.PREFIX}:{{{keys.tag_of_job(job_id)}}}:acct:done:{job_id}{suffix}"


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
    list_pico: int = 0
    paid_pico: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)

    def add_counter(self, counter: str, amount: int) -> None:
        if counter.startswith("outcome:"):
            outcome = counter.removeprefix("outcome:")
            self.outcomes[outcome] = self.outcomes.get(outcome, 0) + amount
        elif counter in _COUNTERS:
            setattr(self, counter, getattr(self, counter) + amount)

    def merge(self, other: Totals) -> None:
        for counter in _COUNTERS:
            setattr(self, counter, getattr(self, counter) + getattr(other, counter))
        for outcome, amount in other.outcomes.items():
            self.outcomes[outcome] = self.outcomes.get(outcome, 0) + amount

    @property
    def list_usd(self) -> Decimal:
        return Decimal(self.list_pico).scaleb(-12)

    @property
    def paid_usd(self) -> Decimal:
        return Decimal(self.paid_pico).scaleb(-12)

    @property
    def saved_usd(self) -> Decimal:
        return Decimal(self.list_pico - self.paid_pico).scaleb(-12)

    @property
    def savings_percent(self) -> float | None:
        if self.list_pico <= 0:
            return None
        return round((self.list_pico - self.paid_pico) * 100 / self.list_pico, 2)

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "outcomes": dict(sorted(self.outcomes.items())),
            "unknown_cost_requests": self.unknown_cost_requests,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cached_tokens": self.cached_tokens,
            "list_usd": usd_text(self.list_pico),
            "paid_usd": usd_text(self.paid_pico),
            "saved_usd": usd_text(self.list_pico - self.paid_pico),
            "savings_percent": self.savings_percent,
        }


_COUNTERS = (
    "requests",
    "unknown_cost_requests",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "list_pico",
    "paid_pico",
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
        grouped: dict[str, Totals] = {}
        for key, totals in self.rows.items():
            grouped.setdefault(getattr(key, dimension), Totals()).merge(totals)
        return dict(sorted(grouped.items()))

    def to_json(self) -> dict[str, Any]:
        def dimension(name: str) -> list[dict[str, Any]]:
            return [{name: value, **totals.to_json()} for value, totals in self.by(name).items()]

        def rows(source: Mapping[RowKey, Totals]) -> list[dict[str, Any]]:
            ordered = sorted(source.items(), key=lambda item: (item[0].team, item[0].model, item[0].lane))
            return [{"team": k.team, "model": k.model, "lane": k.lane, **t.to_json()} for k, t in ordered]

        return {
            "object": "savings_report",
            "currency": "USD",
            "since": _instant(self.since),
            "until": _instant(self.until),
            "team": self.team,
            "totals": self.total().to_json(),
            "by_team": dimension("team"),
            "by_model": dimension("model"),
            "by_lane": dimension("lane"),
            "rows": rows(self.rows),
            "shadow": {"totals": self.total(shadow=True).to_json(), "rows": rows(self.shadow_rows)},
        }


def _sum(parts: Iterable[Totals]) -> Totals:
    total = Totals()
    for part in parts:
        total.merge(part)
    return total


def _instant(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class Accounting:
    """Records finished requests into the ledger and answers savings reports."""

    def __init__(
        self,
        redis_client: redis.asyncio.Redis,
        *,
        retention_seconds: float = DEFAULT_RETENTION_SECONDS,
        marker_ttl_seconds: float = DEFAULT_MARKER_TTL_SECONDS,
    ) -> None:
        self._redis = redis_client
        self._retention_ms = int(retention_seconds * 1000)
        self._marker_ttl_ms = int(marker_ttl_seconds * 1000)
        self._script = redis_client.register_script(RECORD_SCRIPT)
        self._known_tags: set[str] = set()

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
        self, bucket: tuple[str, int], counters: Mapping[str, int], *, job_id: str | None = None, shadow: bool = False
    ) -> bool:
        """Add counters (from `increments`, possibly summed over many requests) to one (group tag, hour) bucket."""
        tag, hour = bucket
        if tag not in self._known_tags:
            await self._redis.sadd(ledger_tags(), tag)
            self._known_tags.add(tag)
        script_keys = [ledger_bucket(tag, hour), ledger_hours(tag)]
        if job_id:
            script_keys.append(ledger_marker(job_id, shadow=shadow))
        oldest_hour = hour - self._retention_ms // (HOUR * 1000)
        args: list[str | int] = [hour, self._retention_ms, self._marker_ttl_ms, oldest_hour]
        for field_name, amount in counters.items():
            args += [field_name, amount]
        recorded = await self._script(keys=script_keys, args=args)
        return bool(recorded)

    async def report(self, since: datetime, until: datetime, team: str | None = None) -> SavingsReport:
        """Totals of the whole hours overlapping [since, until), optionally for one team."""
        first_hour = math.floor(since.timestamp() / HOUR)
        end_hour = math.ceil(until.timestamp() / HOUR)
        report = SavingsReport(
            since=datetime.fromtimestamp(first_hour * HOUR, UTC),
            until=datetime.fromtimestamp(end_hour * HOUR, UTC),
            team=team,
        )
        tags = sorted(_text(tag) for tag in await self._redis.smembers(ledger_tags()))
        async with self._redis.pipeline(transaction=False) as pipe:
            for tag in tags:
                pipe.zrangebyscore(ledger_hours(tag), first_hour, end_hour - 1)
            hours_per_tag: list[list[Any]] = await pipe.execute()
        async with self._redis.pipeline(transaction=False) as pipe:
            for tag, hours in zip(tags, hours_per_tag, strict=True):
                for hour in hours:
                    pipe.hgetall(ledger_bucket(tag, int(_text(hour))))
            buckets: list[dict[Any, Any]] = await pipe.execute()
        for bucket in buckets:
            _add_bucket(report, bucket, team)
        return report


def bucket_of(model: str, at: datetime, job_id: str | None) -> tuple[str, int]:
    """The (group tag, hour) a record lands in: the job's own slot, or its model's group."""
    tag = keys.tag_of_job(job_id) if job_id else keys.group_tag(model)
    return tag, math.floor(at.timestamp() / HOUR)


def increments(
    *, team: str, model: str, lane: str, outcome: str, cost: Cost, usage: Usage, shadow: bool
) -> dict[str, int]:
    """The ledger fields one request adds to (exact integers: amounts in pico-dollars)."""
    counters: dict[str, int] = {
        "requests": 1,
        f"outcome:{outcome}": 1,
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "cached_tokens": usage.cached_tokens,
    }
    if cost.known:
        counters["list_pico"] = to_pico(cost.list_usd)
        counters["paid_pico"] = to_pico(cost.paid_usd)
    else:
        counters["unknown_cost_requests"] = 1
    prefix = SEPARATOR.join(("shadow" if shadow else "real", team, model, lane, ""))
    return {prefix + counter: amount for counter, amount in counters.items() if amount}


def _add_bucket(report: SavingsReport, bucket: Mapping[Any, Any], team: str | None) -> None:
    for raw_field, raw_amount in bucket.items():
        parts = _text(raw_field).split(SEPARATOR)
        if len(parts) != 5:
            continue
        kind, row_team, model, lane, counter = parts
        if team is not None and row_team != team:
            continue
        rows = report.shadow_rows if kind == "shadow" else report.rows
        rows.setdefault(RowKey(row_team, model, lane), Totals()).add_counter(counter, int(_text(raw_amount)))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
