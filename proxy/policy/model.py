"""The `policy:` section of the config file: rules (match + action) and a default action.

Everything a decision needs at request time is compiled here, once, when the config is validated
(globs into regular expressions, time zones into ZoneInfo objects), so `decide()` does no parsing per call.
"""

from __future__ import annotations

import re
from datetime import datetime
from functools import cached_property
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from proxy.durations import parse_duration
from proxy.endpoints import Endpoint
from proxy.policy.facts import RequestFacts
from proxy.policy.matchers import (
    Condition,
    EndpointCondition,
    GlobCondition,
    MappingCondition,
    TokenCondition,
    WindowCondition,
    WindowSpec,
)

Lane = Literal["sync", "batch", "flex", "auto"]
Delivery = Literal["hold", "async", "webhook"]

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
SECONDS_PER_DAY = 86_400
_FULL_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_DAY_INDEX = {name: index for names in (DAY_NAMES, _FULL_DAY_NAMES) for index, name in enumerate(names)}
_DAY_ALIASES = {"weekdays": "mon-fri", "weekend": "sat-sun", "weekends": "sat-sun", "all": "mon-sun"}
RULE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _as_list(value: Any) -> Any:
    """Let a single glob be written without brackets: `models: gpt-4o*`."""
    return [value] if isinstance(value, str) else value


def _clock(value: Any) -> int:
    """Seconds since midnight from 'HH:MM[:SS]'. YAML 1.1 reads an unquoted 22:00 as 1320 (base 60)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if 0 <= value < 24 * 60:
            return value * 60
        raise ValueError(f"expected a time of day such as '22:00' (quote it), got {value!r}")
    if not isinstance(value, str):
        raise ValueError(f"expected a time of day such as '22:00', got {value!r}")
    match = re.fullmatch(r"(\d{1,2}):(\d{2})(?::(\d{2}))?", value.strip())
    if not match:
        raise ValueError(f"expected a time of day such as '22:00', got {value!r}")
    hours, minutes, seconds = int(match[1]), int(match[2]), int(match[3] or 0)
    if hours == 24 and minutes == 0 and seconds == 0:
        return 0
    if hours > 23 or minutes > 59 or seconds > 59:
        raise ValueError(f"expected a time of day between 00:00 and 23:59, got {value!r}")
    return hours * 3600 + minutes * 60 + seconds


def _days(value: Any) -> Any:
    """Day names (mon..sun), ranges such as mon-fri (fri-mon wraps), or 'weekdays' / 'weekend'."""
    items = _as_list(value)
    if not isinstance(items, list):
        return items
    days: list[int] = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"expected day names such as mon or mon-fri, got {item!r}")
        days.extend(_day_range(item.strip().lower()))
    return sorted(set(days))


def _day_range(text: str) -> list[int]:
    text = _DAY_ALIASES.get(text, text)
    first, _, last = text.partition("-")
    if first not in _DAY_INDEX or (last and last not in _DAY_INDEX):
        raise ValueError(f"expected day names (mon..sun), a range such as mon-fri, or weekdays; got {text!r}")
    start = _DAY_INDEX[first]
    end = _DAY_INDEX[last] if last else start
    return [(start + offset) % 7 for offset in range((end - start) % 7 + 1)]


Seconds = Annotated[float, BeforeValidator(parse_duration)]
Globs = Annotated[list[str], BeforeValidator(_as_list)]
ValueMatch = bool | Globs
Clock = Annotated[int, BeforeValidator(_clock)]
Days = Annotated[list[int], BeforeValidator(_days)]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TokenRange(StrictModel):
    """Estimated prompt tokens, both bounds inclusive."""

    min: int | None = Field(default=None, ge=0)
    max: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> TokenRange:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) must not exceed max ({self.max})")
        return self


class TimeWindow(StrictModel):
    """Days of week and a start/end time in a time zone. start > end crosses midnight; the part after
    midnight belongs to the day the window started (fri 22:00-06:00 covers Saturday 03:00)."""

    days: Days = Field(default_factory=lambda: list(range(7)))
    start: Clock = 0
    end: Clock = 0
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"expected an IANA time zone such as Europe/Paris, got {value!r}") from exc
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> TimeWindow:
        if self.start == self.end and self.start != 0:
            raise ValueError("start and end are equal: the window is empty (use 00:00-00:00 for whole days)")
        if not self.days:
            raise ValueError("days must name at least one day")
        return self

    def spec(self) -> WindowSpec:
        return WindowSpec(frozenset(self.days), self.start, self.end, ZoneInfo(self.timezone), self.timezone)


class RuleMatch(StrictModel):
    """All conditions present must hold (AND); the alternatives listed inside one condition are ORed."""

    keys: Globs = Field(default_factory=list)
    teams: Globs = Field(default_factory=list)
    models: Globs = Field(default_factory=list)
    headers: dict[str, ValueMatch] = Field(default_factory=dict)
    metadata: dict[str, ValueMatch] = Field(default_factory=dict)
    users: Globs = Field(default_factory=list)
    prompt_tokens: TokenRange | None = None
    windows: list[TimeWindow] = Field(default_factory=list)
    endpoints: list[Endpoint] = Field(
        default_factory=list, description="chat_completions, embeddings, responses; unset = chat_completions only"
    )

    @field_validator("headers")
    @classmethod
    def _lower_case_names(cls, value: dict[str, ValueMatch]) -> dict[str, ValueMatch]:
        return {name.lower(): expected for name, expected in value.items()}

    @cached_property
    def conditions(self) -> tuple[Condition, ...]:
        """Compiled once (PolicyConfig's validation touches it); cached in the instance dict, read fast."""
        conditions: list[Condition] = []
        for label, patterns in (("key", self.keys), ("team", self.teams), ("model", self.models)):
            if patterns:
                conditions.append(GlobCondition(label, patterns))
        if self.users:
            conditions.append(GlobCondition("user", self.users))
        if self.headers:
            conditions.append(MappingCondition("header", self.headers))
        if self.metadata:
            conditions.append(MappingCondition("metadata", self.metadata))
        if self.prompt_tokens is not None:
            conditions.append(TokenCondition(self.prompt_tokens.min, self.prompt_tokens.max))
        if self.windows:
            conditions.append(WindowCondition(tuple(window.spec() for window in self.windows)))
        conditions.append(EndpointCondition(tuple(self.endpoints), stated=bool(self.endpoints)))
        return tuple(conditions)


class Action(StrictModel):
    """What to do with a call: the `default:` section and every rule carry these fields."""

    lane: Lane | None = Field(
        default=None,
        description="sync, batch, flex or auto; unset = deferred only when the client sends X-Batch-Deadline",
    )
    deadline: Seconds | None = Field(default=None, gt=0)
    min_deadline: Seconds | None = Field(default=None, gt=0)
    max_deadline: Seconds | None = Field(default=None, gt=0)
    delivery: Delivery | None = None
    callback_url: str | None = None
    shadow: bool = False
    max_wait: Seconds | None = Field(
        default=None, gt=0, description="this rule's jobs are due for a batch after this long (else the queue's)"
    )

    @model_validator(mode="before")
    @classmethod
    def _no_batch_size(cls, data: Any) -> Any:
        # A batch holds one model's queue, shared by every rule's jobs: a size per rule could not hold.
        if isinstance(data, dict) and "max_requests" in data:
            raise ValueError(
                "max_requests is not a rule setting: a model's jobs share one queue and its batches; "
                "set model_list[].batch.max_requests (or batching.max_requests) instead"
            )
        return data

    @field_validator("callback_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s/]+", value):
            raise ValueError(f"expected an http(s) URL, got {value!r}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Action:
        low, high = self.min_deadline, self.max_deadline
        if low is not None and high is not None and low > high:
            raise ValueError("min_deadline must not exceed max_deadline")
        if self.deadline is not None and (
            (low is not None and self.deadline < low) or (high is not None and self.deadline > high)
        ):
            raise ValueError("deadline must lie between min_deadline and max_deadline")
        if self.callback_url is not None and self.delivery not in (None, "webhook"):
            raise ValueError("callback_url is only used with delivery: webhook")
        return self


class Rule(Action):
    name: str
    match: RuleMatch = Field(default_factory=RuleMatch)

    @field_validator("name")
    @classmethod
    def _header_safe(cls, value: str) -> str:
        if not RULE_NAME.match(value) or value in ("default", "header"):
            raise ValueError(
                "expected a name of letters, digits, '.', '_' or '-' (at most 64, not 'default' or 'header')"
            )
        return value

    def matches(self, facts: RequestFacts, now: datetime) -> bool:
        return all(condition.holds(facts, now) for condition in self.match.conditions)

    def miss(self, facts: RequestFacts, now: datetime) -> str | None:
        """Why this rule does not match (the first condition that fails), or None when it matches."""
        for condition in self.match.conditions:
            if not condition.holds(facts, now):
                return condition.describe_miss(facts, now)
        return None


BUILTIN_VENUES = ("batch", "flex", "sync")


class VenueTurnaround(StrictModel):
    """How long a call on a declared venue takes once sent (seconds): its median and its 99th percentile."""

    p50: Seconds = Field(ge=0)
    p99: Seconds = Field(ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> VenueTurnaround:
        if self.p50 > self.p99:
            raise ValueError("p50 must not exceed p99")
        return self


class VenueConfig(StrictModel):
    """A venue declared in config (docs/configuration.md, "Venues"): a way to send a deferred call synchronously,
    at a price below list, that the `auto` lane may pick (proxy/venues.py)."""

    name: str
    models: Globs = Field(default_factory=lambda: ["*"], description="model_name globs it serves")
    providers: list[str] = Field(default_factory=list, description="provider names it serves; empty = any")
    price_multiplier: float | None = Field(default=None, ge=0, description="share of the list price paid, 0..")
    price_tier: Literal["batch", "flex"] | None = Field(
        default=None, description="or: the price map's tier of the model (input_cost_per_token_flex, ...)"
    )
    turnaround: VenueTurnaround = Field(default_factory=lambda: VenueTurnaround(p50=0.0, p99=0.0))
    window: TimeWindow | None = Field(
        default=None, description="off-peak hours: calls are held until the window opens, then sent"
    )
    body: dict[str, Any] = Field(default_factory=dict, description="fields added to the request body")
    unavailable_rate: float = Field(default=0.0, ge=0, le=1, description="share refused (429), then paid at list")

    @field_validator("name")
    @classmethod
    def _venue_name(cls, value: str) -> str:
        if not RULE_NAME.match(value) or value in (*BUILTIN_VENUES, "auto"):
            raise ValueError("expected a name of letters, digits, '.', '_' or '-' (not batch, flex, sync or auto)")
        return value

    @model_validator(mode="after")
    def _one_price(self) -> VenueConfig:
        if (self.price_multiplier is None) == (self.price_tier is None):
            raise ValueError("set exactly one of price_multiplier and price_tier")
        if "model" in self.body or "stream" in self.body:
            raise ValueError("body must not set model or stream")
        return self


class PolicyConfig(StrictModel):
    """Rules are tried in order and the first match wins; `default` applies when none matches."""

    default: Action = Field(default_factory=Action)
    rules: list[Rule] = Field(default_factory=list)
    default_deadline: Seconds = Field(default=86_400.0, gt=0)
    venues: list[VenueConfig] = Field(default_factory=list, description="venues the auto lane may pick")
    flex_unavailable_rate: float = Field(
        default=0.0, ge=0, le=1, description="expected share of flex calls refused (429) and paid at list"
    )

    @model_validator(mode="after")
    def _unique_rule_names(self) -> PolicyConfig:
        names = [rule.name for rule in self.rules]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"rule names must be unique; repeated: {', '.join(repeated)}")
        venues = [venue.name for venue in self.venues]
        if len(set(venues)) != len(venues):
            raise ValueError("venue names must be unique")
        _ = self.compiled  # compile every matcher now, not on the first request
        return self

    @cached_property
    def venue_names(self) -> frozenset[str]:
        """The names of the declared venues."""
        return frozenset(venue.name for venue in self.venues)

    @cached_property
    def has_auto(self) -> bool:
        """Whether any action sets `lane: auto` (the venues are priced per call only then)."""
        return self.default.lane == "auto" or any(rule.lane == "auto" for rule in self.rules)

    @cached_property
    def compiled(self) -> tuple[tuple[Rule, tuple[Condition, ...]], ...]:
        return tuple((rule, rule.match.conditions) for rule in self.rules)

    def first_match(self, facts: RequestFacts, now: datetime) -> Rule | None:
        for rule, conditions in self.compiled:
            if all(condition.holds(facts, now) for condition in conditions):
                return rule
        return None
