"""Every file in policies/examples validates and decides what its comment says."""

from __future__ import annotations

import io
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from proxy.policy.cli import check
from proxy.policy.decide import decide
from proxy.policy.decision import Decision
from proxy.policy.facts import RequestFacts
from proxy.policy.lanes import lane_facts
from proxy.settings import load_config

EXAMPLES = Path(__file__).resolve().parents[2] / "policies" / "examples"
MONDAY_NOON = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def decision_for(example: str, now: datetime = MONDAY_NOON, **facts: Any) -> Decision:
    config = load_config(EXAMPLES / example)
    request = replace(RequestFacts(caller_name="someone", team="default", model="gpt-4o-mini"), **facts)
    return decide(config.policy, request, lane_facts(config, request.model), now)


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda path: path.name)
def test_example_is_valid_and_has_no_warnings(path: Path) -> None:
    out = io.StringIO()
    assert check(path, out) == 0, out.getvalue()
    assert out.getvalue().startswith("OK:")
    assert "warning" not in out.getvalue()


def test_there_are_examples() -> None:
    assert len(list(EXAMPLES.glob("*.yaml"))) >= 5


def test_nightly_evals_by_metadata_and_by_header() -> None:
    by_metadata = decision_for("nightly-evals.yaml", metadata={"purpose": "eval-nightly"})
    assert (by_metadata.deferred, by_metadata.lane, by_metadata.rule) == (
        True,
        "batch",
        "nightly-evals-metadata",
    )
    assert by_metadata.deadline == MONDAY_NOON + timedelta(hours=8)
    by_header = decision_for("nightly-evals.yaml", headers={"x-job-kind": "nightly-eval"})
    assert (by_header.deferred, by_header.rule) == (True, "nightly-evals-header")
    untouched = decision_for("nightly-evals.yaml", metadata={"purpose": "chat"})
    assert (untouched.deferred, untouched.lane) == (False, "sync")


def test_team_deferred_by_default_with_hold() -> None:
    research = decision_for("team-deferred.yaml", caller_name="research-bot", team="research")
    assert (research.deferred, research.lane, research.delivery) == (True, "batch", "hold")
    assert research.deadline == MONDAY_NOON + timedelta(hours=4)
    short = decision_for(
        "team-deferred.yaml", caller_name="research-bot", team="research", headers={"x-batch-deadline": "5m"}
    )
    assert (short.deferred, short.lane, short.deadline) == (True, "sync", MONDAY_NOON + timedelta(minutes=30))
    support = decision_for("team-deferred.yaml", caller_name="support-app", team="support")
    assert not support.deferred


def test_shadow_rollout_forwards_synchronously_and_records_the_lane() -> None:
    shadowed = decision_for("shadow-rollout.yaml", caller_name="dashboards", team="analytics", model="gpt-4o")
    assert (shadowed.deferred, shadowed.lane, shadowed.shadow, shadowed.shadow_lane) == (
        False,
        "sync",
        True,
        "batch",
    )
    assert "shadow=true" in shadowed.header_value()
    other_team = decision_for("shadow-rollout.yaml", team="web", model="gpt-4o")
    assert not other_team.shadow


@pytest.mark.parametrize(
    ("now", "tokens", "deferred", "rule"),
    [
        (datetime(2026, 11, 23, 22, 0, tzinfo=UTC), 10, True, "off-hours"),  # monday 23:00 Paris
        (datetime(2026, 11, 24, 4, 30, tzinfo=UTC), 10, True, "off-hours"),  # tuesday 05:30 Paris
        (datetime(2026, 11, 28, 12, 0, tzinfo=UTC), 10, True, "off-hours"),  # saturday noon
        (MONDAY_NOON, 10, False, "default"),
        (MONDAY_NOON, 5000, True, "large-prompts"),
    ],
)
def test_off_hours(now: datetime, tokens: int, deferred: bool, rule: str) -> None:
    decision = decision_for("off-hours.yaml", now=now, prompt_tokens_estimate=tokens)
    assert (decision.deferred, decision.rule) == (deferred, rule)
    if deferred:
        assert (decision.lane, decision.delivery) == ("batch", "hold")


@pytest.mark.parametrize(
    ("deadline", "lane"),
    [("4h", "batch"), ("30m", "flex"), ("5m", "sync")],
)
def test_auto_lane(deadline: str, lane: str) -> None:
    decision = decision_for("auto-lane.yaml", headers={"x-batch-deadline": deadline})
    assert (decision.deferred, decision.lane, decision.rule) == (True, lane, "tagged-auto")


def test_auto_lane_untagged_is_sync() -> None:
    assert not decision_for("auto-lane.yaml").deferred


def test_gemini_calls_of_a_team_go_to_gemini_batches() -> None:
    evals = decision_for("gemini.yaml", caller_name="evals-bot", team="evals", model="gemini-2.5-flash")
    assert (evals.deferred, evals.lane, evals.rule) == (True, "batch", "evals-to-gemini-batch")
    assert evals.deadline == MONDAY_NOON + timedelta(hours=12)
    web = decision_for("gemini.yaml", caller_name="web-app", team="web", model="gemini-2.5-flash")
    assert (web.deferred, web.lane) == (False, "sync")


def test_vertex_calls_of_a_team_go_to_vertex_batch_jobs() -> None:
    evals = decision_for("vertex.yaml", caller_name="evals-bot", team="evals", model="gemini-2.5-flash")
    assert (evals.deferred, evals.lane, evals.rule) == (True, "batch", "evals-to-vertex-batch")
    assert evals.deadline == MONDAY_NOON + timedelta(hours=24)
    web = decision_for("vertex.yaml", caller_name="web-app", team="web", model="gemini-2.5-flash")
    assert (web.deferred, web.lane) == (False, "sync")
