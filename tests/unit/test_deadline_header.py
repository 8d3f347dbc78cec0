"""X-Batch-Deadline: durations and RFC 3339 times accepted; garbage, the past and the absurd refused with 400."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from proxy.errors import InvalidRequest
from proxy.policy.decide import decide, parse_client_deadline
from proxy.policy.facts import LaneFacts, RequestFacts
from proxy.policy.model import PolicyConfig

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("90m", NOW + timedelta(minutes=90)),
        ("4h", NOW + timedelta(hours=4)),
        ("24h", NOW + timedelta(hours=24)),
        ("1h30m", NOW + timedelta(minutes=90)),
        (" 2h ", NOW + timedelta(hours=2)),
        ("3600", NOW + timedelta(hours=1)),
        ("2026-11-23T18:00:00Z", datetime(2026, 11, 23, 18, tzinfo=UTC)),
        ("2026-11-23T19:00:00+01:00", datetime(2026, 11, 23, 18, tzinfo=UTC)),
    ],
)
def test_accepted(value: str, expected: datetime) -> None:
    assert parse_client_deadline(value, NOW) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("tomorrow", "must be a duration"),
        ("", "must be a duration"),
        ("4 hours", "must be a duration"),
        ("2026-11-23T18:00:00", "must be a duration"),  # no offset: ambiguous
        ("-5m", "must be a duration"),
        ("0s", "not in the future"),
        ("2026-11-23T11:59:59Z", "not in the future"),
        ("2020-01-01T00:00:00Z", "not in the future"),
        ("99999999999d", "more than 366 days"),
        ("1e400", "more than 366 days"),
        ("2100-01-01T00:00:00Z", "more than 366 days"),
    ],
)
def test_refused(value: str, message: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_client_deadline(value, NOW)
    assert caught.value.status == 400
    assert caught.value.param == "X-Batch-Deadline"
    assert message in caught.value.message


def test_long_garbage_is_not_echoed_whole() -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_client_deadline("x" * 5000, NOW)
    assert len(caught.value.message) < 300


def test_refused_even_when_a_rule_forces_sync() -> None:
    config = PolicyConfig.model_validate({"default": {"lane": "sync"}})
    facts = RequestFacts(caller_name="a", team="t", model="m", headers={"x-batch-deadline": "soon"})
    lanes = LaneFacts(batch_turnaround=3600, supports_flex=False, flex_turnaround=900, safety_margin=600)
    with pytest.raises(InvalidRequest):
        decide(config, facts, lanes, NOW)
