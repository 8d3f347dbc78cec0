"""decide(): table-driven cases: each matcher, first match, defaults, clamps, lanes, streaming, shadow."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from proxy.policy.decide import decide
from proxy.policy.facts import LaneFacts, RequestFacts
from proxy.policy.model import PolicyConfig

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)  # a Monday; Paris is UTC+1 in November
LANES = LaneFacts(batch_turnaround=3600, supports_flex=True, flex_turnaround=900, safety_margin=600)
NO_FLEX = replace(LANES, supports_flex=False)
BASE = RequestFacts(caller_name="alice", team="web", model="gpt-4o-mini")


def policy(*rules: dict[str, Any], **top: Any) -> PolicyConfig:
    return PolicyConfig.model_validate({"rules": list(rules), **top})


def facts(**changes: Any) -> RequestFacts:
    return replace(BASE, **changes)


def deadline_in(**delta: float) -> datetime:
    return NOW + timedelta(**delta)


def hdr(value: str, **more: str) -> dict[str, str]:
    return {"x-batch-deadline": value, **more}


BATCH_RULE: dict[str, Any] = {"lane": "batch", "deadline": "8h"}

# (id, policy, facts, lanes, now, expected fields of the Decision)
CASES: list[tuple[str, PolicyConfig, RequestFacts, LaneFacts, datetime, dict[str, Any]]] = [
    (
        "no rule, no header: sync",
        policy(),
        BASE,
        LANES,
        NOW,
        {"deferred": False, "lane": "sync", "rule": "default", "deadline": None},
    ),
    (
        "header, no rule: batch with the header's deadline",
        policy(),
        facts(headers=hdr("4h")),
        LANES,
        NOW,
        {"deferred": True, "lane": "batch", "rule": "header", "deadline": deadline_in(hours=4)},
    ),
    (
        "header as compound duration",
        policy(),
        facts(headers=hdr("1h30m")),
        LANES,
        NOW,
        {"deferred": True, "lane": "batch", "deadline": deadline_in(minutes=90)},
    ),
    (
        "header as RFC 3339 with offset",
        policy(),
        facts(headers=hdr("2026-11-23T20:00:00+02:00")),
        LANES,
        NOW,
        {"deferred": True, "lane": "batch", "deadline": datetime(2026, 11, 23, 18, tzinfo=UTC)},
    ),
    (
        "header too short for batch, model has flex: flex, still deferred",
        policy(),
        facts(headers=hdr("30m")),
        LANES,
        NOW,
        {"deferred": True, "lane": "flex", "deadline": deadline_in(minutes=30)},
    ),
    (
        "header too short for batch, no flex: sync, still deferred",
        policy(),
        facts(headers=hdr("30m")),
        NO_FLEX,
        NOW,
        {"deferred": True, "lane": "sync", "deadline": deadline_in(minutes=30)},
    ),
    (
        "header too short even for flex: sync",
        policy(),
        facts(headers=hdr("20m")),
        LANES,
        NOW,
        {"deferred": True, "lane": "sync"},
    ),
    (
        "exactly turnaround + margin is enough for batch",
        policy(),
        facts(headers=hdr("70m")),
        LANES,
        NOW,
        {"deferred": True, "lane": "batch"},
    ),
    (
        "streaming with a header: sync, not deferred",
        policy(),
        facts(headers=hdr("4h"), stream=True),
        LANES,
        NOW,
        {"deferred": False, "lane": "sync", "deadline": None},
    ),
    (
        "streaming under a batch rule: sync, not deferred",
        policy({"name": "all", **BATCH_RULE}),
        facts(stream=True),
        LANES,
        NOW,
        {"deferred": False, "lane": "sync", "rule": "all"},
    ),
    (
        "key glob matches",
        policy({"name": "bots", "match": {"keys": ["bot-*"]}, **BATCH_RULE}),
        facts(caller_name="bot-7"),
        LANES,
        NOW,
        {"deferred": True, "lane": "batch", "rule": "bots", "deadline": deadline_in(hours=8)},
    ),
    (
        "key glob does not match",
        policy({"name": "bots", "match": {"keys": ["bot-*"]}, **BATCH_RULE}),
        facts(caller_name="robot"),
        LANES,
        NOW,
        {"deferred": False, "rule": "default"},
    ),
    (
        "team matches (list ORed)",
        policy({"name": "teams", "match": {"teams": ["ml", "research"]}, **BATCH_RULE}),
        facts(team="research"),
        LANES,
        NOW,
        {"deferred": True, "rule": "teams"},
    ),
    (
        "model glob matches",
        policy({"name": "big", "match": {"models": "gpt-4o*"}, **BATCH_RULE}),
        facts(model="gpt-4o-2024-08-06"),
        LANES,
        NOW,
        {"deferred": True, "rule": "big"},
    ),
    (
        "model glob is case-sensitive",
        policy({"name": "big", "match": {"models": ["gpt-4o*"]}, **BATCH_RULE}),
        facts(model="GPT-4o"),
        LANES,
        NOW,
        {"deferred": False},
    ),
    (
        "conditions are ANDed: team matches but model does not",
        policy({"name": "r", "match": {"teams": ["web"], "models": ["claude-*"]}, **BATCH_RULE}),
        BASE,
        LANES,
        NOW,
        {"deferred": False, "rule": "default"},
    ),
    (
        "header value glob (rule header names are case-insensitive)",
        policy({"name": "kind", "match": {"headers": {"X-Job-Kind": "nightly-*"}}, **BATCH_RULE}),
        facts(headers={"x-job-kind": "nightly-eval"}),
        LANES,
        NOW,
        {"deferred": True, "rule": "kind"},
    ),
    (
        "header presence",
        policy({"name": "p", "match": {"headers": {"x-defer": True}}, **BATCH_RULE}),
        facts(headers={"x-defer": ""}),
        LANES,
        NOW,
        {"deferred": True, "rule": "p"},
    ),
    (
        "header required absent but present",
        policy({"name": "p", "match": {"headers": {"x-urgent": False}}, **BATCH_RULE}),
        facts(headers={"x-urgent": "1"}),
        LANES,
        NOW,
        {"deferred": False},
    ),
    (
        "header required absent and absent",
        policy({"name": "p", "match": {"headers": {"x-urgent": False}}, **BATCH_RULE}),
        BASE,
        LANES,
        NOW,
        {"deferred": True, "rule": "p"},
    ),
    (
        "metadata glob",
        policy({"name": "evals", "match": {"metadata": {"purpose": ["eval*", "bench"]}}, **BATCH_RULE}),
        facts(metadata={"purpose": "bench"}),
        LANES,
        NOW,
        {"deferred": True, "rule": "evals"},
    ),
    (
        "metadata key missing",
        policy({"name": "evals", "match": {"metadata": {"purpose": "eval*"}}, **BATCH_RULE}),
        facts(metadata={"other": "eval"}),
        LANES,
        NOW,
        {"deferred": False},
    ),
    (
        "user glob",
        policy({"name": "u", "match": {"users": ["batch-*"]}, **BATCH_RULE}),
        facts(user="batch-42"),
        LANES,
        NOW,
        {"deferred": True, "rule": "u"},
    ),
    (
        "user glob with no user field",
        policy({"name": "u", "match": {"users": ["*"]}, **BATCH_RULE}),
        facts(user=None),
        LANES,
        NOW,
        {"deferred": False},
    ),
    (
        "prompt tokens at the inclusive minimum",
        policy({"name": "big", "match": {"prompt_tokens": {"min": 1000}}, **BATCH_RULE}),
        facts(prompt_tokens_estimate=1000),
        LANES,
        NOW,
        {"deferred": True},
    ),
    (
        "prompt tokens below the minimum",
        policy({"name": "big", "match": {"prompt_tokens": {"min": 1000}}, **BATCH_RULE}),
        facts(prompt_tokens_estimate=999),
        LANES,
        NOW,
        {"deferred": False},
    ),
    (
        "prompt tokens above the maximum",
        policy({"name": "small", "match": {"prompt_tokens": {"max": 10}}, **BATCH_RULE}),
        facts(prompt_tokens_estimate=11),
        LANES,
        NOW,
        {"deferred": False},
    ),
    (
        "first match wins",
        policy(
            {"name": "first", "match": {"teams": ["web"]}, "lane": "batch", "deadline": "2h"},
            {"name": "second", "match": {"teams": ["web"]}, "lane": "batch", "deadline": "9h"},
        ),
        BASE,
        LANES,
        NOW,
        {"rule": "first", "deadline": deadline_in(hours=2)},
    ),
    (
        "a later rule matches when earlier ones do not",
        policy(
            {"name": "first", "match": {"teams": ["ml"]}, **BATCH_RULE},
            {"name": "second", "match": {"teams": ["web"]}, "lane": "batch", "deadline": "3h"},
        ),
        BASE,
        LANES,
        NOW,
        {"rule": "second", "deadline": deadline_in(hours=3)},
    ),
    (
        "client deadline below min_deadline is raised",
        policy({"name": "r", "lane": "batch", "min_deadline": "2h"}),
        facts(headers=hdr("10m")),
        LANES,
        NOW,
        {"deferred": True, "lane": "batch", "deadline": deadline_in(hours=2)},
    ),
    (
        "client deadline above max_deadline is lowered",
        policy({"name": "r", "lane": "batch", "max_deadline": "24h"}),
        facts(headers=hdr("48h")),
        LANES,
        NOW,
        {"deadline": deadline_in(hours=24)},
    ),
    (
        "client deadline within the clamps is kept over the rule's deadline",
        policy({"name": "r", "lane": "batch", "deadline": "8h", "min_deadline": "1h", "max_deadline": "24h"}),
        facts(headers=hdr("3h")),
        LANES,
        NOW,
        {"deadline": deadline_in(hours=3)},
    ),
    (
        "rule without deadline uses default_deadline, clamped by the rule",
        policy({"name": "r", "lane": "batch", "max_deadline": "6h"}, default_deadline="24h"),
        BASE,
        LANES,
        NOW,
        {"deferred": True, "deadline": deadline_in(hours=6)},
    ),
    (
        "rule without deadline uses default_deadline",
        policy({"name": "r", "lane": "batch"}, default_deadline="12h"),
        BASE,
        LANES,
        NOW,
        {"deadline": deadline_in(hours=12)},
    ),
    (
        "rule lane sync overrides the client's header",
        policy({"name": "urgent", "match": {"teams": ["web"]}, "lane": "sync"}),
        facts(headers=hdr("4h")),
        LANES,
        NOW,
        {"deferred": False, "lane": "sync", "rule": "urgent"},
    ),
    (
        "rule without lane: the header decides (present)",
        policy({"name": "clamp", "max_deadline": "2h", "delivery": "hold"}),
        facts(headers=hdr("8h")),
        LANES,
        NOW,
        {
            "deferred": True,
            "lane": "batch",
            "rule": "clamp",
            "deadline": deadline_in(hours=2),
            "delivery": "hold",
        },
    ),
    (
        "rule without lane: the header decides (absent)",
        policy({"name": "clamp", "max_deadline": "2h"}),
        BASE,
        LANES,
        NOW,
        {"deferred": False, "lane": "sync", "rule": "clamp"},
    ),
    (
        "default action defers everything",
        policy(default={"lane": "batch", "deadline": "6h"}),
        BASE,
        LANES,
        NOW,
        {"deferred": True, "lane": "batch", "rule": "default", "deadline": deadline_in(hours=6)},
    ),
    (
        "default action sync ignores the header",
        policy(default={"lane": "sync"}),
        facts(headers=hdr("4h")),
        LANES,
        NOW,
        {"deferred": False, "rule": "default"},
    ),
    (
        "auto with room for batch",
        policy({"name": "a", "lane": "auto"}),
        facts(headers=hdr("4h")),
        LANES,
        NOW,
        {"deferred": True, "lane": "batch"},
    ),
    (
        "auto with minutes: flex",
        policy({"name": "a", "lane": "auto"}),
        facts(headers=hdr("40m")),
        LANES,
        NOW,
        {"deferred": True, "lane": "flex"},
    ),
    (
        "auto with minutes and no flex tier: sync",
        policy({"name": "a", "lane": "auto"}),
        facts(headers=hdr("40m")),
        NO_FLEX,
        NOW,
        {"deferred": True, "lane": "sync"},
    ),
    (
        "auto follows the current turnaround estimate",
        policy({"name": "a", "lane": "auto"}),
        facts(headers=hdr("4h")),
        replace(LANES, batch_turnaround=5 * 3600),
        NOW,
        {"lane": "flex"},
    ),
    (
        "flex requested and supported",
        policy({"name": "f", "lane": "flex", "deadline": "4h"}),
        BASE,
        LANES,
        NOW,
        {"deferred": True, "lane": "flex"},
    ),
    (
        "flex requested, no flex tier, room for batch: batch",
        policy({"name": "f", "lane": "flex", "deadline": "4h"}),
        BASE,
        NO_FLEX,
        NOW,
        {"deferred": True, "lane": "batch"},
    ),
    (
        "flex requested, too short for flex: sync",
        policy({"name": "f", "lane": "flex"}),
        facts(headers=hdr("10m")),
        LANES,
        NOW,
        {"deferred": True, "lane": "sync"},
    ),
    (
        "shadow: forwarded synchronously, would have used batch",
        policy({"name": "s", "lane": "batch", "deadline": "24h", "shadow": True}),
        BASE,
        LANES,
        NOW,
        {
            "deferred": False,
            "lane": "sync",
            "shadow": True,
            "shadow_lane": "batch",
            "deadline": deadline_in(hours=24),
        },
    ),
    (
        "shadow with a short deadline: would have used flex",
        policy({"name": "s", "lane": "auto", "shadow": True}),
        facts(headers=hdr("30m")),
        LANES,
        NOW,
        {"deferred": False, "lane": "sync", "shadow": True, "shadow_lane": "flex"},
    ),
    (
        "delivery, callback and batching knobs pass through",
        policy(
            {
                "name": "hooks",
                "lane": "batch",
                "deadline": "8h",
                "delivery": "webhook",
                "callback_url": "https://example.com/hook",
                "max_wait": "5m",
            }
        ),
        BASE,
        LANES,
        NOW,
        {
            "delivery": "webhook",
            "callback_url": "https://example.com/hook",
            "max_wait": 300.0,
        },
    ),
]

PARIS_NIGHTS = policy(
    {
        "name": "nights",
        "match": {"windows": [{"days": "mon-fri", "start": "22:00", "end": "06:00", "timezone": "Europe/Paris"}]},
        **BATCH_RULE,
    }
)
WINDOW_CASES = [
    ("monday 23:30 Paris (22:30 UTC)", datetime(2026, 11, 23, 22, 30, tzinfo=UTC), True),
    ("monday 22:00 Paris exactly (start inclusive)", datetime(2026, 11, 23, 21, 0, tzinfo=UTC), True),
    ("monday 21:59 Paris", datetime(2026, 11, 23, 20, 59, tzinfo=UTC), False),
    ("tuesday 05:59 Paris belongs to monday night", datetime(2026, 11, 24, 4, 59, tzinfo=UTC), True),
    ("tuesday 06:00 Paris (end exclusive)", datetime(2026, 11, 24, 5, 0, tzinfo=UTC), False),
    ("saturday 03:00 Paris belongs to friday night", datetime(2026, 11, 28, 2, 0, tzinfo=UTC), True),
    ("monday 03:00 Paris belongs to sunday night", datetime(2026, 11, 23, 2, 0, tzinfo=UTC), False),
    ("saturday 23:00 Paris", datetime(2026, 11, 28, 22, 0, tzinfo=UTC), False),
    ("noon", NOW, False),
    ("july 22:30 Paris is 20:30 UTC (summer time)", datetime(2026, 7, 6, 20, 30, tzinfo=UTC), True),
    ("july 21:30 UTC is 23:30 Paris", datetime(2026, 7, 6, 21, 30, tzinfo=UTC), True),
    ("july 21:30 Paris is 19:30 UTC", datetime(2026, 7, 6, 19, 30, tzinfo=UTC), False),
]

TWO_WINDOWS = policy(
    {
        "name": "quiet",
        "match": {
            "windows": [
                {"days": ["sat", "sun"], "timezone": "America/New_York"},
                {"days": "weekdays", "start": "01:00", "end": "05:00", "timezone": "America/New_York"},
            ]
        },
        **BATCH_RULE,
    }
)
TWO_WINDOW_CASES = [
    ("saturday noon New York", datetime(2026, 11, 28, 17, 0, tzinfo=UTC), True),
    ("saturday 00:30 New York", datetime(2026, 11, 28, 5, 30, tzinfo=UTC), True),
    ("friday 23:00 New York (saturday 04:00 UTC)", datetime(2026, 11, 28, 4, 0, tzinfo=UTC), False),
    ("tuesday 02:00 New York", datetime(2026, 11, 24, 7, 0, tzinfo=UTC), True),
    ("tuesday 06:00 New York", datetime(2026, 11, 24, 11, 0, tzinfo=UTC), False),
]


@pytest.mark.parametrize(
    ("config", "request_facts", "lanes", "now", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_decide(
    config: PolicyConfig,
    request_facts: RequestFacts,
    lanes: LaneFacts,
    now: datetime,
    expected: dict[str, Any],
) -> None:
    decision = decide(config, request_facts, lanes, now)
    actual = {name: getattr(decision, name) for name in expected}
    assert actual == expected, decision.reason


@pytest.mark.parametrize(("label", "now", "inside"), WINDOW_CASES, ids=[case[0] for case in WINDOW_CASES])
def test_window_across_midnight_in_paris(label: str, now: datetime, inside: bool) -> None:
    decision = decide(PARIS_NIGHTS, BASE, LANES, now)
    assert decision.deferred is inside
    assert decision.rule == ("nights" if inside else "default")


@pytest.mark.parametrize(("label", "now", "inside"), TWO_WINDOW_CASES, ids=[case[0] for case in TWO_WINDOW_CASES])
def test_windows_are_ored(label: str, now: datetime, inside: bool) -> None:
    assert decide(TWO_WINDOWS, BASE, LANES, now).deferred is inside


def test_window_with_unquoted_yaml_time() -> None:
    # YAML 1.1 reads 22:00 as the integer 1320; it is taken as minutes since midnight.
    config = policy({"name": "late", "match": {"windows": [{"start": 1320, "end": "23:00"}]}, **BATCH_RULE})
    assert decide(config, BASE, LANES, datetime(2026, 11, 23, 22, 30, tzinfo=UTC)).deferred
    assert not decide(config, BASE, LANES, datetime(2026, 11, 23, 21, 30, tzinfo=UTC)).deferred


@pytest.mark.parametrize(
    ("decision_facts", "lanes", "fragments"),
    [
        (
            facts(headers=hdr("4h")),
            LANES,
            ["deadline 4h leaves room for batch", "turnaround 1h", "margin 10m"],
        ),
        (facts(headers=hdr("30m")), LANES, ["too short for batch", "flex fits"]),
        (facts(headers=hdr("30m")), NO_FLEX, ["too short for batch", "no flex tier", "sync"]),
        (facts(headers=hdr("4h"), stream=True), LANES, ["streaming"]),
        (BASE, LANES, ["no rule matched", "X-Batch-Deadline"]),
    ],
)
def test_reason_says_why(decision_facts: RequestFacts, lanes: LaneFacts, fragments: list[str]) -> None:
    reason = decide(policy(), decision_facts, lanes, NOW).reason
    for fragment in fragments:
        assert fragment in reason


def test_clamp_is_explained() -> None:
    config = policy({"name": "r", "lane": "batch", "min_deadline": "2h"})
    reason = decide(config, facts(headers=hdr("10m")), LANES, NOW).reason
    assert "raised to min_deadline 2h" in reason


def test_shadow_reason_names_the_lane() -> None:
    config = policy({"name": "s", "lane": "batch", "shadow": True})
    assert decide(config, BASE, LANES, NOW).reason.startswith("shadow mode: would defer to batch")


@pytest.mark.parametrize(
    ("decision_kwargs", "rendered"),
    [
        (
            {
                "deferred": True,
                "lane": "batch",
                "rule": "nightly-evals",
                "deadline": datetime(2026, 11, 23, 6, tzinfo=UTC),
            },
            "lane=batch; rule=nightly-evals; deadline=2026-11-23T06:00:00Z",
        ),
        ({"deferred": False, "lane": "sync", "rule": "default"}, "lane=sync; rule=default"),
        (
            {
                "deferred": True,
                "lane": "sync",
                "rule": "header",
                "deadline": datetime(2026, 11, 23, 12, 5, tzinfo=UTC),
            },
            "lane=sync; rule=header; deferred=true; deadline=2026-11-23T12:05:00Z",
        ),
        (
            {
                "deferred": False,
                "lane": "sync",
                "rule": "rollout",
                "shadow": True,
                "shadow_lane": "batch",
                "deadline": datetime(2026, 11, 24, 12, tzinfo=UTC),
            },
            "lane=sync; rule=rollout; shadow=true; shadow_lane=batch; deadline=2026-11-24T12:00:00Z",
        ),
    ],
)
def test_header_value(decision_kwargs: dict[str, Any], rendered: str) -> None:
    from proxy.policy.decision import Decision

    assert Decision(reason="r", **decision_kwargs).header_value() == rendered


def test_header_value_from_decide_is_one_header_safe_line() -> None:
    value = decide(policy(), facts(headers=hdr("2026-11-23T20:00:00.123456+02:00")), LANES, NOW).header_value()
    assert value == "lane=batch; rule=header; deadline=2026-11-23T18:00:00Z"
    assert value.isascii()
    assert "\n" not in value


def test_a_field_the_batch_lane_cannot_carry_keeps_the_call_off_batch_and_says_which() -> None:
    field = "messages[0].content[1].image_url: an http:// image URL, which the sync lane fetches and sends inline"
    blocked = facts(headers=hdr("24h"), batch_blocker=field)
    on_flex = decide(policy(), blocked, LANES, NOW)
    assert (on_flex.deferred, on_flex.lane) == (True, "flex")
    on_sync = decide(policy(), blocked, NO_FLEX, NOW)
    assert (on_sync.deferred, on_sync.lane) == (True, "sync")
    for decision in (on_flex, on_sync):
        assert decision.no_batch == f"its batch lane cannot carry {field}"
        assert f'reason="its batch lane cannot carry {field}"' in decision.header_value()
    assert decide(policy(), facts(headers=hdr("24h")), NO_FLEX, NOW).lane == "batch"  # the same call, carried
