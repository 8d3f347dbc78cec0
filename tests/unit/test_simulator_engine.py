"""The simulator's engine on a hand-driven clock: batch lifecycle, billing, answers and prices."""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

import pytest

from proxy.simulator.answers import answer_for, count_tokens
from proxy.simulator.batches import LineRequest, Status, ValidationIssue, finish_offsets
from proxy.simulator.engine import BatchNotCancellable, Engine, TokenLimitExceeded, expected_content
from proxy.simulator.ledger import Ledger, PriceBook, Tier, ledger_report
from proxy.simulator.options import SimulatorOptions

PRICES: dict[str, dict[str, Any]] = {
    "listed": {
        "input_cost_per_token": 1e-06,
        "output_cost_per_token": 4e-06,
        "input_cost_per_token_batches": 4e-07,
        "output_cost_per_token_batches": 1.6e-06,
    },
    "list-only": {"input_cost_per_token": 3e-07, "output_cost_per_token": 1.5e-06},
}


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def engine(clock: Clock, **knobs: Any) -> Engine:
    options = SimulatorOptions(
        seed=1, turnaround_s=10.0, validating_s=1.0, finalizing_s=1.0, cancel_delay_s=0.5, **knobs
    )
    return Engine(options, clock=clock, prices=PriceBook(lambda: PRICES))


def requests(count: int, model: str = "listed") -> list[LineRequest]:
    return [
        LineRequest.from_body(f"c{i}", {"model": model, "messages": [{"role": "user", "content": f"q{i}"}]})
        for i in range(count)
    ]


def test_lines_finish_evenly_over_the_processing_span_then_the_batch_completes() -> None:
    clock = Clock()
    sim = engine(clock)
    batch_id = sim.create_batch("b1", requests(8), [], {}).id
    assert sim.batch(batch_id).status is Status.VALIDATING
    clock.now += 1.0
    assert sim.batch(batch_id).status is Status.IN_PROGRESS
    clock.now += 4.0  # half of the 8 s processing span
    assert sim.batch(batch_id).counts == (8, 4, 0)
    clock.now += 4.0
    assert sim.batch(batch_id).status is Status.FINALIZING
    assert sim.ledger.rows() == {}  # billed when the batch ends
    clock.now += 1.0
    current = sim.batch(batch_id)
    assert current.status is Status.COMPLETED
    assert [line.index for line in current.finished] != list(range(8))
    billed = sim.ledger.rows()[("listed", Tier.BATCH)]
    assert billed.requests == 8
    assert (billed.input_tokens, billed.output_tokens) == current.tokens
    sim.batch(batch_id)
    assert sim.ledger.rows()[("listed", Tier.BATCH)].requests == 8  # billed once


def test_enqueued_tokens_are_held_until_a_batch_ends_and_limit_new_batches_per_model() -> None:
    clock = Clock()
    per_batch = sum(request.answer.prompt_tokens for request in requests(4) if request.answer)
    sim = engine(clock, enqueued_token_limit=2 * per_batch, enqueued_token_limits={"list-only": per_batch})
    first = sim.create_batch("b1", requests(4), [], {}, token_limit="fail")
    assert sim.enqueued_tokens("listed") == per_batch
    sim.create_batch("b2", requests(4), [], {}, token_limit="fail")
    refused = sim.create_batch("b3", requests(1), [], {}, token_limit="fail")
    assert [issue.code for issue in refused.issues] == ["token_limit_exceeded"]
    assert refused.issues[0].line is None
    assert "Enqueued token limit reached for listed" in refused.issues[0].message
    assert sim.enqueued_tokens("listed") == 2 * per_batch  # a refused batch holds nothing
    assert not sim.create_batch("o1", requests(4, "list-only"), [], {}, token_limit="fail").issues  # per model
    with pytest.raises(TokenLimitExceeded):
        sim.create_batch("b4", requests(1), [], {}, token_limit="refuse")
    assert "b4" not in {current.record.id for current in sim.batches_newest_first()}
    assert not sim.create_batch("free", requests(1, "list-only"), [], {}).issues  # no limit asked (Anthropic face)

    sim.cancel_batch(first.id)
    clock.now += 0.5  # cancelled: its tokens are free again
    assert not sim.create_batch("b5", requests(4), [], {}, token_limit="fail").issues
    clock.now += 100
    assert sim.enqueued_tokens("listed") == 0


def test_a_batch_that_never_expires_completes_past_its_expiry() -> None:
    clock = Clock()
    sim = engine(clock, expiry_s=2.0)
    batch_id = sim.create_batch("b1", requests(4), [], {}, expires=False).id
    clock.now += 100
    current = sim.batch(batch_id)
    assert current.status is Status.COMPLETED
    assert current.record.expires_at == float("inf")


def test_expiry_keeps_exactly_the_lines_finished_in_time() -> None:
    clock = Clock()
    sim = engine(clock, expiry_s=5.0)  # lines start at +1 s; 8 lines spaced 1 s apart -> 4 finish
    batch_id = sim.create_batch("b1", requests(8), [], {}).id
    clock.now += 100
    current = sim.batch(batch_id)
    assert current.status is Status.EXPIRED
    assert len(current.finished) == 4
    assert len(current.unfinished) == 4
    assert sim.ledger.rows()[("listed", Tier.BATCH)].requests == 4


def test_cancel_freezes_progress_and_cannot_be_repeated_after_the_end() -> None:
    clock = Clock()
    sim = engine(clock, finish_fraction=0.0)
    batch_id = sim.create_batch("b1", requests(4), [], {}).id
    clock.now += 3
    assert sim.batch(batch_id).counts == (4, 0, 0)  # stalled
    assert sim.cancel_batch(batch_id).status is Status.CANCELLING
    clock.now += 0.5
    assert sim.batch(batch_id).status is Status.CANCELLED
    with pytest.raises(BatchNotCancellable):
        sim.cancel_batch(batch_id)
    assert sim.ledger.rows() == {}


@pytest.mark.parametrize(("wait", "finished"), [(0.5, 0), (9.5, 4)])
def test_cancel_while_validating_or_finalizing(wait: float, finished: int) -> None:
    clock = Clock()
    sim = engine(clock)
    batch_id = sim.create_batch("b1", requests(4), [], {}).id
    clock.now += wait
    sim.cancel_batch(batch_id)
    clock.now += 1
    current = sim.batch(batch_id)
    assert current.status is Status.CANCELLED
    assert len(current.finished) == finished
    assert (current.timeline.in_progress_at < current.now) == (finished > 0)


def test_failed_validation_runs_and_bills_nothing() -> None:
    clock = Clock()
    sim = engine(clock)
    issue = ValidationIssue("invalid_json_line", "bad", 2)
    batch_id = sim.create_batch("b1", requests(3), [issue], {}).id
    clock.now += 1
    current = sim.batch(batch_id)
    assert current.status is Status.FAILED
    assert current.counts == (0, 0, 0)
    assert sim.ledger.rows() == {}


def test_knobs_are_snapshotted_per_batch_and_lines_can_fail() -> None:
    clock = Clock()
    sim = engine(clock)
    sim.configure({"line_500_rate": 1.0})
    failing = sim.create_batch("b1", requests(3), [], {}).id
    sim.configure({"line_500_rate": 0.0})
    fine = sim.create_batch("b2", requests(3), [], {}).id
    clock.now += 20
    assert sim.batch(failing).counts == (3, 0, 3)
    assert sim.batch(fine).counts == (3, 3, 0)
    assert sim.ledger.rows()[("listed", Tier.BATCH)].requests == 3


def test_finish_order_is_never_input_order() -> None:
    options = SimulatorOptions()
    for seed in range(50):
        offsets = finish_offsets(2, options, random.Random(seed))
        assert offsets[0] > offsets[1]


def test_fail_next_comes_before_rates() -> None:
    sim = engine(Clock())
    sim.fail_next(2, 503)
    assert [fault.status if fault else None for fault in (sim.sync_fault(Tier.SYNC) for _ in range(3))] == [
        503,
        503,
        None,
    ]


def test_answers_follow_the_documented_token_rule() -> None:
    body = {
        "model": "m",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "héllo"}],
    }
    answer = answer_for(body)
    assert answer.prompt_tokens == 3 + (3 + 2 + 3) + (3 + 1 + 2)
    assert answer.completion_tokens == count_tokens(answer.content)
    assert answer.content.endswith("héllo")
    assert expected_content(body) != expected_content({**body, "model": "other"})
    cut = answer_for({**body, "messages": [{"role": "user", "content": "é" * 80}], "max_tokens": 5})
    assert cut.finish_reason == "length"
    assert len(cut.content.encode()) <= 20
    assert cut.completion_tokens <= 5


def test_prices_by_tier_with_fallbacks_and_exact_totals() -> None:
    prices = PriceBook(lambda: PRICES)
    assert prices.price("openai/listed", Tier.SYNC) is not None
    listed = prices.price("listed", Tier.BATCH)
    assert listed is not None
    assert listed.input == Decimal("4E-7")
    assert prices.price("listed", Tier.FLEX) == listed
    half = prices.price("list-only", Tier.BATCH)
    assert half is not None
    assert (half.input, half.output) == (Decimal("1.5E-7"), Decimal("7.5E-7"))
    assert prices.price("unknown", Tier.SYNC) is None

    ledger = Ledger()
    for _ in range(3):
        ledger.bill("listed", Tier.SYNC, input_tokens=1, output_tokens=1)
    ledger.bill("unknown", Tier.BATCH, input_tokens=10, output_tokens=10)
    report = ledger_report(ledger, prices)
    assert report["models"]["listed"]["sync"]["cost_usd"] == "0.000015"
    assert report["totals"]["cost_usd"] == "0.000015"
    assert report["totals"]["requests"] == 4
    assert report["unpriced_models"] == ["unknown"]


def test_cli_flags_cover_every_knob() -> None:
    import argparse

    from proxy.simulator.cli import add_arguments, options_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        ["--turnaround-s", "1.5", "--api-key", "sk-x", "--seed", "3", "--line-errors-file", "output"]
    )
    options = options_from_args(args)
    assert (options.turnaround_s, options.api_key, options.seed) == (1.5, "sk-x", 3)
    assert options.line_errors_file == "output"
    assert options_from_args(parser.parse_args([])) == SimulatorOptions()
    strict = options_from_args(
        parser.parse_args(
            ["--flavor", "azure", "--enqueued-token-limits", '{"gpt-4o": 90000}', "--insufficient-quota", "true"]
        )
    )
    assert (strict.flavor, strict.insufficient_quota) == ("azure", True)
    assert (strict.token_limit("gpt-4o"), strict.token_limit("gpt-4o-mini")) == (90_000, 2_000_000)
    with pytest.raises(SystemExit):
        parser.parse_args(["--enqueued-token-limits", "{not json"])
