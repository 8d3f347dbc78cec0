"""Waste, forfeited savings and reconciliation: the pure parts (which line is waste, what the ledger adds, how a
batch's billing compares with what was recorded)."""

from __future__ import annotations

from decimal import Decimal

from proxy.accounting import SEPARATOR, Forfeit, Totals, increments
from proxy.pricing import Cost, PriceBook, Usage
from proxy.reasons import WasteReason
from proxy.reconciliation import BatchBilling, Recorded, compare
from proxy.store.outcomes import Answer
from proxy.store.records import JobView
from proxy.worker.ingest import waste_reason

PRICES = PriceBook.from_price_map(
    {"mini": {"input_cost_per_token": 0.00000015, "output_cost_per_token": 0.0000006}}
)  # batch prices: half of these
JOB = "bgj_grp_0001"


def job(status: str, *, lane: str = "batch", batch: str | None = "b1", request_id: str | None = None) -> JobView:
    return JobView.decode(
        {
            b"id": JOB.encode(),
            b"status": status.encode(),
            b"lane": lane.encode(),
            b"batch": (batch or "").encode(),
            b"upstream_request_id": (request_id or "").encode(),
            b"team": b"t",
            b"model": b"mini",
        }
    )


def line(request_id: str | None = "req_line") -> Answer:
    return Answer(JOB, "b1", "completed", "batch", response=b"{}", upstream_request_id=request_id)


def test_a_line_is_waste_unless_it_is_its_jobs_own_answer() -> None:
    assert waste_reason(job("completed", request_id="req_line"), line(), "b1") is None  # ingested again
    assert waste_reason(job("completed", batch="b1"), line(None), "b1") is None
    assert waste_reason(job("completed", request_id="req_other"), line(), "b1") is WasteReason.DUPLICATE
    assert waste_reason(job("completed", lane="sync"), line(), "b1") is WasteReason.ANSWERED_ELSEWHERE
    assert waste_reason(job("cancelled"), line(), "b1") is WasteReason.CANCELLED
    assert waste_reason(job("queued", batch="b2"), line(), "b1") is WasteReason.DUPLICATE
    assert waste_reason(None, line(), "b1") is None


def fields(counters: dict[str, int]) -> dict[str, int]:
    return {name.split(SEPARATOR)[-1]: amount for name, amount in counters.items()}


def test_waste_adds_to_waste_only_and_saved_is_list_less_paid_less_waste() -> None:
    usage = Usage(prompt_tokens=1000, completion_tokens=200)
    answer = PRICES.cost("mini", usage, "batch")
    common = {"team": "t", "model": "mini", "lane": "batch", "outcome": "completed", "usage": usage, "shadow": False}
    paid = fields(increments(cost=answer, **common))  # type: ignore[arg-type]
    waste = fields(increments(cost=answer, waste_reason=WasteReason.CANCELLED.value, **common))  # type: ignore[arg-type]
    assert "requests" not in waste
    assert "list_pico" not in waste
    assert waste["waste_pico"] == waste["waste:cancelled"] == paid["paid_pico"] == 135_000_000
    totals = Totals()
    for counter, amount in [*paid.items(), *waste.items()]:
        totals.add_counter(counter, amount)
    assert totals.list_pico == 270_000_000
    assert totals.saved_usd == Decimal("0")  # 0.00027 list - 0.000135 paid - 0.000135 waste
    assert totals.to_json()["waste"]["by_reason"] == {"cancelled": "0.000135000000"}


def test_a_rescue_records_its_forfeited_savings_by_reason() -> None:
    usage = Usage(prompt_tokens=1000, completion_tokens=200)
    forfeit = Forfeit("deadline_at_risk_in_batch", Decimal("0.000135"))
    counters = fields(
        increments(team="t", model="mini", lane="sync", outcome="completed", cost=Cost(Decimal("0.00027"),
                   Decimal("0.00027")), usage=usage, shadow=False, forfeit=forfeit)
    )  # fmt: skip
    assert counters["forfeited_pico"] == counters["forfeited:deadline_at_risk_in_batch"] == 135_000_000
    assert counters["requests"] == 1


def test_reconciliation_prices_a_difference_at_the_batch_price() -> None:
    recorded = Recorded()
    recorded.add(Usage(prompt_tokens=1000, completion_tokens=200))
    same = compare(batch_id="b", provider_batch_id="p", model="mini", at=0.0, recorded=recorded,
                   billing=BatchBilling(1, 1000, 200), prices=PRICES)  # fmt: skip
    assert same.checked
    assert same.matched
    assert same.difference_usd == 0
    short = compare(batch_id="b", provider_batch_id="p", model="mini", at=0.0, recorded=recorded,
                    billing=BatchBilling(2, 2000, 400), prices=PRICES)  # fmt: skip
    assert not short.matched
    assert short.difference_usd == Decimal("0.000135")
    unknown = compare(batch_id="b", provider_batch_id="p", model="mini", at=0.0, recorded=recorded,
                      billing=BatchBilling(None, None, None), prices=PRICES)  # fmt: skip
    assert not unknown.checked
    assert unknown.matched
