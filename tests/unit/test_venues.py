"""Venues and the `auto` lane: the cheapest venue that keeps the deadline wins, a deadline excludes a slow venue,
an off-peak venue holds the call until its window opens (the clock is the decision's `now`), a declared venue's
body fields travel with the decision, and `policy explain` lists the venues considered."""

from __future__ import annotations

import io
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from proxy.policy import cli
from proxy.policy.decide import decide
from proxy.policy.facts import LaneFacts, RequestFacts
from proxy.policy.lanes import VenueInputs, lane_facts, venue_list
from proxy.policy.model import PolicyConfig
from proxy.pricing import ModelPrices, PriceBook, TierPrices, Usage, to_decimal
from proxy.quote import shadow_calls
from proxy.settings import Config, load_config
from proxy.simulator.engine import in_window
from proxy.store.shadow_calls import ShadowCall
from proxy.venues import declared, price_rule
from tests.support.stack import config_document

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
MODEL = "gpt-4o-mini"
FLEX_MODEL = "gpt-5-mini"
CHEAP = {"name": "cheap", "models": [MODEL], "price_multiplier": 0.3, "turnaround": {"p50": "10m", "p99": "30m"}}
OFF_PEAK = {
    "name": "off-peak",
    "models": ["gpt-*"],
    "price_multiplier": 0.25,
    "window": {"start": "16:30", "end": "00:30"},
    "turnaround": {"p50": "1m", "p99": "5m"},
}
PRIORITY = {"name": "priority", "models": [MODEL], "price_multiplier": 0.4, "body": {"service_tier": "priority"}}


def tier(input_price: str, output_price: str) -> TierPrices:
    return TierPrices(to_decimal(input_price), to_decimal(output_price), to_decimal(input_price))


PRICES = ModelPrices(list=tier("1e-6", "2e-6"), batch=tier("5e-7", "1e-6"), flex=tier("5e-7", "1e-6"))


def config(*venues: dict[str, Any], **policy: Any) -> Config:
    document = config_document(
        "http://127.0.0.1:1",
        batching={"turnaround_estimate": "1h"},
        worker={"safety_margin": 60, "flex_turnaround": "15m"},
        policy={"default": {"lane": "auto"}, "venues": list(venues), **policy},
    )
    return Config.model_validate(document)


def lanes_for(conf: Config, model: str, now: datetime = NOW) -> LaneFacts:
    deployment = conf.deployment(model)
    assert deployment is not None
    base = LaneFacts(
        batch_turnaround=3600,
        supports_flex=deployment.supports_flex,
        flex_turnaround=900,
        safety_margin=60,
    )
    return replace(base, venues=venue_list(conf, model, base, VenueInputs(PRICES, now, 100, 100)))


def decide_in(conf: Config, deadline: str, *, model: str = MODEL, now: datetime = NOW) -> Any:
    facts = RequestFacts(caller_name="alice", team="web", model=model, headers={"x-batch-deadline": deadline})
    return decide(conf.policy, facts, lanes_for(conf, model, now), now)


def test_the_cheapest_venue_that_keeps_the_deadline_wins() -> None:
    decision = decide_in(config(CHEAP), "8h")
    assert (decision.deferred, decision.lane, decision.venue) == (True, "sync", "cheap")
    assert "venue=cheap" in decision.header_value()
    assert [item.venue.name for item in decision.considered] == ["cheap", "batch", "sync"]
    assert decision.rescue_reason is None  # a chosen venue, not a rescue
    assert decision.eta == NOW.timestamp() + 600
    assert decision.eta_p90 is not None
    assert NOW.timestamp() + 600 < decision.eta_p90 <= NOW.timestamp() + 1800


def test_a_deadline_excludes_a_venue_too_slow_for_it() -> None:
    decision = decide_in(config(CHEAP), "20m")  # cheap needs 30m at 99%; batch 1h: only sync is left
    assert (decision.lane, decision.venue) == ("sync", "sync")
    verdicts = {item.venue.name: item.fits for item in decision.considered}
    assert verdicts == {"cheap": False, "batch": False, "sync": True}
    assert "cheaper but excluded: cheap, batch" in decision.reason
    flexible = decide_in(config(CHEAP), "20m", model=FLEX_MODEL)  # no `cheap` for this model; flex fits (15m)
    assert (flexible.lane, flexible.venue) == ("flex", "flex")
    assert [item.venue.name for item in flexible.considered] == ["batch", "flex", "sync"]


def test_auto_keeps_batch_first_when_flex_costs_the_same() -> None:
    decision = decide_in(config(), "8h", model=FLEX_MODEL)
    assert (decision.lane, decision.venue) == ("batch", "batch")
    assert decision.header_value().startswith("lane=batch; rule=default; deadline=")  # no venue= for a lane's own


def test_flex_refusals_raise_its_expected_price_above_batch() -> None:
    decision = decide_in(config(flex_unavailable_rate=0.2), "2h", model=FLEX_MODEL)
    flex = next(item.venue for item in decision.considered if item.venue.name == "flex")
    assert abs(flex.price - (0.8 * 0.5 + 0.2)) < 1e-9


def test_an_off_peak_venue_holds_the_call_until_its_window_then_sends_at_once() -> None:
    conf = config(OFF_PEAK)
    held = decide_in(conf, "8h")  # 12:00 UTC: the window opens at 16:30
    assert (held.lane, held.venue) == ("sync", "off-peak")
    assert held.hold_until == NOW.replace(hour=16, minute=30)
    assert "hold_until=2026-11-23T16:30:00Z" in held.header_value()
    assert held.eta == held.hold_until.timestamp() + 60
    too_soon = decide_in(conf, "3h")  # the window opens too late for this deadline: batch (1h) keeps it
    assert (too_soon.lane, too_soon.venue) == ("batch", "batch")
    inside = decide_in(conf, "2h", now=NOW.replace(hour=23))  # inside the window: sent at once
    assert (inside.venue, inside.hold_until) == ("off-peak", None)
    after_midnight = decide_in(conf, "1h", now=NOW.replace(hour=0, minute=10) + timedelta(days=1))
    assert (after_midnight.venue, after_midnight.hold_until) == ("off-peak", None)


def test_a_declared_venue_sends_its_body_fields() -> None:
    decision = decide_in(config(PRIORITY), "4h")
    assert decision.venue == "priority"
    assert decision.venue_body == {"service_tier": "priority"}
    other = decide_in(config(PRIORITY), "4h", model=FLEX_MODEL)  # the venue serves gpt-4o-mini only
    assert other.venue == "batch"


def test_a_venue_needs_one_price_and_a_free_name() -> None:
    for bad in (
        {"name": "x"},
        {"name": "x", "price_multiplier": 0.5, "price_tier": "flex"},
        {"name": "batch", "price_multiplier": 0.5},
    ):
        try:
            PolicyConfig.model_validate({"venues": [bad]})
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad}")


def test_policy_explain_lists_the_venues_considered(tmp_path: Path) -> None:
    path = tmp_path / "batchgate.yaml"
    document = config_document(
        "http://127.0.0.1:1",
        batching={"turnaround_estimate": "1h"},
        worker={"safety_margin": 60},
        policy={"default": {"lane": "auto"}, "venues": [CHEAP]},
    )
    document["model_list"][0]["litellm_params"].update(input_cost_per_token=1e-6, output_cost_per_token=2e-6)
    path.write_text(yaml.safe_dump(document))
    out = io.StringIO()
    code = cli.explain(
        path,
        key=None,
        team=None,
        model=MODEL,
        headers=["X-Batch-Deadline: 45m"],
        metadata=[],
        user=None,
        prompt_tokens=100,
        now=NOW,
        out=out,
    )
    assert code == 0
    text = out.getvalue()
    assert "lane=sync; rule=default; deferred=true; venue=cheap" in text
    assert "venues (cheapest first" in text
    table = text.split("venues (cheapest first", 1)[1].splitlines()[1:4]
    lines = {line.lstrip(" *").split()[0]: line for line in table}
    assert lines["cheap"].startswith(" * cheap")
    assert "30.0% of list" in lines["cheap"]
    assert "50.0% of list" in lines["batch"]
    assert "too slow" in lines["batch"]
    assert "100.0% of list" in lines["sync"]


def test_the_off_peak_example_holds_until_its_window() -> None:
    example = load_config(Path(__file__).resolve().parents[2] / "policies" / "examples" / "off-peak-venue.yaml")
    cases = [(NOW, "8h", "deepseek-off-peak", NOW.replace(hour=16, minute=30)), (NOW, "2h", "sync", None)]
    cases.append((NOW.replace(hour=20), "1h", "deepseek-off-peak", None))
    for now, deadline, venue, hold_until in cases:
        facts = RequestFacts(caller_name="a", team="t", model="deepseek-chat", headers={"x-batch-deadline": deadline})
        lanes = lane_facts(example, "deepseek-chat", venues=VenueInputs(None, now))
        decision = decide(example.policy, facts, lanes, now)
        assert (decision.venue, decision.hold_until) == (venue, hold_until), (now, deadline)
        assert decision.deferred


def test_a_venue_call_is_priced_by_its_rule_when_it_is_sent() -> None:
    conf = config(OFF_PEAK, PRIORITY, {"name": "tiered", "price_tier": "flex"})
    off_peak, priority, tiered = (declared(conf.policy.venues, name) for name in ("off-peak", "priority", "tiered"))
    assert off_peak is not None
    assert priority is not None
    assert tiered is not None
    assert declared(conf.policy.venues, "gone") is None
    assert price_rule(off_peak, NOW.replace(hour=23)) == "0.25"
    assert price_rule(off_peak, NOW.replace(hour=0, minute=20)) == "0.25"  # the window wraps midnight
    assert price_rule(off_peak, NOW) is None  # sent outside its window (a rescue): billed at list
    assert (price_rule(priority, NOW), price_rule(tiered, NOW)) == ("0.4", "flex")
    book = PriceBook.from_price_map({MODEL: {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}})
    usage = Usage(prompt_tokens=1000, completion_tokens=100)
    listed = to_decimal("0.0012")
    assert book.cost_at(MODEL, usage, "0.25").paid_usd == listed / 4
    assert book.cost_at(MODEL, usage, "0.25").list_usd == listed
    assert book.cost_at(MODEL, usage, "flex") == book.cost(MODEL, usage, "flex")
    assert not book.cost_at("unknown-model", usage, "0.25").known


def test_the_simulators_off_peak_window_is_read_on_its_clock() -> None:
    at = NOW.replace(hour=16, minute=30).timestamp()
    assert in_window("16:30-00:30", at)
    assert in_window("16:30-00:30", at + 8 * 3600 - 1)  # 00:29:59
    assert not in_window("16:30-00:30", at + 8 * 3600)  # 00:30
    assert not in_window("16:30-00:30", at - 1)
    assert in_window("09:00-12:00", NOW.replace(hour=11).timestamp())
    assert not in_window("09:00-12:00", NOW.timestamp())


def test_kept_shadow_calls_are_quoted_from_now_with_their_own_or_the_policys_deadline() -> None:
    conf = config(default_deadline="6h")
    kept = [
        ShadowCall(1.0, MODEL, 100, 20, 1799.6),
        ShadowCall(2.0, MODEL, 50, 0, None),
        ShadowCall(3.0, "no-longer-configured", 10, 10, 60.0),
        ShadowCall(4.0, f"{MODEL}#embeddings", 10, 0, 60.0),
    ]
    calls = shadow_calls(kept, conf, NOW)
    assert [(call.prompt_tokens, call.deadline_text, call.deadline) for call in calls] == [
        (100, "30m", NOW + timedelta(minutes=30)),
        (50, "6h", NOW + timedelta(hours=6)),
    ]
