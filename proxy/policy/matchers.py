"""The compiled conditions of a rule. Each one is built once from the config and tested on every request.

`holds()` is the hot path (a precompiled regular expression or a few comparisons); `describe_miss()` is only
used by `batchgate policy explain` to say why a rule did not match.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from zoneinfo import ZoneInfo

from proxy.endpoints import Endpoint
from proxy.policy.facts import RequestFacts

_DAY_LABELS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class Condition(Protocol):
    def holds(self, facts: RequestFacts, now: datetime) -> bool: ...

    def describe_miss(self, facts: RequestFacts, now: datetime) -> str: ...


def compile_globs(patterns: Sequence[str]) -> re.Pattern[str]:
    """One regular expression matching any of the fnmatch globs (case-sensitive, whole string)."""
    return re.compile("|".join(fnmatch.translate(pattern) for pattern in patterns))


def _field(facts: RequestFacts, label: str) -> str | None:
    if label == "key":
        return facts.caller_name
    if label == "team":
        return facts.team
    if label == "model":
        return facts.model
    return facts.user


class GlobCondition:
    """The caller key name, team, model or user matches one of the globs."""

    __slots__ = ("label", "patterns", "regex")

    def __init__(self, label: str, patterns: Sequence[str]) -> None:
        self.label = label
        self.patterns = tuple(patterns)
        self.regex = compile_globs(patterns)

    def holds(self, facts: RequestFacts, now: datetime) -> bool:
        value = _field(facts, self.label)
        return value is not None and self.regex.match(value) is not None

    def describe_miss(self, facts: RequestFacts, now: datetime) -> str:
        value = _field(facts, self.label)
        return f"{self.label} {value!r} matches none of {list(self.patterns)}"


class _Expectation:
    """One entry of a `headers:` or `metadata:` condition: present (true), absent (false), or a glob match."""

    __slots__ = ("name", "patterns", "present", "regex")

    def __init__(self, name: str, expected: bool | Sequence[str]) -> None:
        self.name = name
        self.present: bool = expected if isinstance(expected, bool) else True
        self.patterns: tuple[str, ...] = () if isinstance(expected, bool) else tuple(expected)
        self.regex: re.Pattern[str] | None = compile_globs(self.patterns) if self.patterns else None

    def holds(self, values: Mapping[str, str]) -> bool:
        value = values.get(self.name)
        if value is None:
            return not self.present
        if not self.present:
            return False
        return self.regex is None or self.regex.match(value) is not None

    def describe(self, label: str, values: Mapping[str, str]) -> str:
        value = values.get(self.name)
        if not self.present:
            return f"{label} {self.name!r} is present (the rule requires it absent)"
        if value is None:
            return f"{label} {self.name!r} is absent"
        return f"{label} {self.name!r} = {value!r} matches none of {list(self.patterns)}"


class MappingCondition:
    """Every listed request header (or OpenAI `metadata` key) is present, absent or matches, as configured."""

    __slots__ = ("expectations", "label")

    def __init__(self, label: str, expected: Mapping[str, bool | Sequence[str]]) -> None:
        self.label = label
        self.expectations = tuple(_Expectation(name, value) for name, value in expected.items())

    def _values(self, facts: RequestFacts) -> Mapping[str, str]:
        return facts.headers if self.label == "header" else facts.metadata

    def holds(self, facts: RequestFacts, now: datetime) -> bool:
        values = self._values(facts)
        return all(expectation.holds(values) for expectation in self.expectations)

    def describe_miss(self, facts: RequestFacts, now: datetime) -> str:
        values = self._values(facts)
        for expectation in self.expectations:
            if not expectation.holds(values):
                return expectation.describe(self.label, values)
        return f"every {self.label} matches"


class TokenCondition:
    """The estimated prompt tokens lie within [minimum, maximum]."""

    __slots__ = ("maximum", "minimum")

    def __init__(self, minimum: int | None, maximum: int | None) -> None:
        self.minimum = minimum
        self.maximum = maximum

    def holds(self, facts: RequestFacts, now: datetime) -> bool:
        tokens = facts.prompt_tokens_estimate
        return (self.minimum is None or tokens >= self.minimum) and (self.maximum is None or tokens <= self.maximum)

    def describe_miss(self, facts: RequestFacts, now: datetime) -> str:
        low = "" if self.minimum is None else str(self.minimum)
        high = "" if self.maximum is None else str(self.maximum)
        return f"prompt tokens ~{facts.prompt_tokens_estimate} outside [{low}..{high}]"


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """Days (0 = Monday) and seconds since local midnight; start > end crosses midnight."""

    days: frozenset[int]
    start: int
    end: int
    zone: ZoneInfo
    zone_name: str

    def contains(self, now: datetime) -> bool:
        local = now.astimezone(self.zone)
        second = local.hour * 3600 + local.minute * 60 + local.second
        weekday = local.weekday()
        if self.start < self.end:
            return self.start <= second < self.end and weekday in self.days
        if self.start == self.end:  # 00:00-00:00: the whole day
            return weekday in self.days
        if second >= self.start:
            return weekday in self.days
        # After midnight: this part of the window belongs to the day it started on.
        return second < self.end and (weekday - 1) % 7 in self.days

    def describe(self) -> str:
        days = ",".join(_DAY_LABELS[day] for day in sorted(self.days))
        return f"{days} {_clock_text(self.start)}-{_clock_text(self.end)} {self.zone_name}"


def _clock_text(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours:02d}:{minutes:02d}" + (f":{secs:02d}" if secs else "")


class WindowCondition:
    """`now` falls inside any of the time windows."""

    __slots__ = ("windows",)

    def __init__(self, windows: Sequence[WindowSpec]) -> None:
        self.windows = tuple(windows)

    def holds(self, facts: RequestFacts, now: datetime) -> bool:
        return any(window.contains(now) for window in self.windows)

    def describe_miss(self, facts: RequestFacts, now: datetime) -> str:
        first = self.windows[0]
        local = now.astimezone(first.zone)
        spans = "; ".join(window.describe() for window in self.windows)
        stamp = local.strftime("%a %H:%M") + " " + first.zone_name
        return f"time {stamp} is outside the windows ({spans})"


class EndpointCondition:
    """The call's endpoint is one of those listed; a rule that lists none matches chat completions only, so a
    rule written for chat never defers another endpoint's calls by surprise."""

    __slots__ = ("endpoints", "stated")

    def __init__(self, endpoints: Sequence[Endpoint], *, stated: bool) -> None:
        self.endpoints = frozenset(endpoints) if stated else frozenset({Endpoint.CHAT_COMPLETIONS})
        self.stated = stated

    def holds(self, facts: RequestFacts, now: datetime) -> bool:
        return facts.endpoint in self.endpoints

    def describe_miss(self, facts: RequestFacts, now: datetime) -> str:
        listed = sorted(endpoint.value for endpoint in self.endpoints)
        unstated = "" if self.stated else " (a rule without `endpoints` matches chat_completions only)"
        return f"endpoint {facts.endpoint.value!r} is not one of {listed}{unstated}"
