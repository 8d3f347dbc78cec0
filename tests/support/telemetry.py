"""A Metrics catalogue fed with every kind of event, for dashboard and alert tests."""

from __future__ import annotations

import time
from decimal import Decimal

from prometheus_client import CollectorRegistry

from proxy.budgets_metrics import BudgetGauges
from proxy.metrics import Metrics, QueueSnapshot, QueueStats
from proxy.pricing import Cost, Usage
from proxy.reasons import RescueReason, WasteReason, WebhookOutcome

MODELS = ("mini", "big")
TEAMS = ("research", "ops")


def catalogue() -> Metrics:
    return Metrics(CollectorRegistry(), models=MODELS, teams=TEAMS, rules=("nightly", "default"))


def exercise(metrics: Metrics, *, round_number: int = 0) -> None:
    """One round of traffic touching every metric (including a deadline miss and a dead letter)."""
    for model in MODELS:
        for team in TEAMS:
            for lane, paid in (("sync", "0.004"), ("batch", "0.002"), ("flex", "0.002")):
                metrics.record_finished(
                    lane=lane,
                    outcome="completed",
                    model=model,
                    team=team,
                    usage=Usage(prompt_tokens=1000, completion_tokens=100, cached_tokens=200),
                    cost=Cost(Decimal("0.004"), Decimal(paid)),
                )
                metrics.record_decision(lane=lane, rule="nightly")
                metrics.observe_answer(lane=lane, model=model, seconds=5 + round_number, deadline_margin=600)
    metrics.record_shadow(model="mini", team="ops", lane="batch", cost=Cost(Decimal("0.004"), Decimal("0.002")))
    metrics.record_finished(
        lane="sync", outcome="failed", model="mystery", team="ops", usage=Usage(), cost=Cost.unknown()
    )
    metrics.observe_answer(lane="sync", model="mini", seconds=30, deadline_margin=-5)
    metrics.record_rescue(RescueReason.DEADLINE_AT_RISK_IN_BATCH)
    wasted = Cost(Decimal("0.004"), Decimal("0.002"))
    metrics.record_waste(model="mini", team="ops", lane="batch", reason=WasteReason.ANSWERED_ELSEWHERE, cost=wasted)
    metrics.record_forfeited(
        model="mini", team="ops", reason=RescueReason.DEADLINE_AT_RISK_IN_BATCH, usd=Decimal("0.002")
    )
    metrics.record_reconciliation(model="mini", difference_usd=Decimal("0.0001"), matched=False, checked=True)
    metrics.record_batch_submitted(queue="mini", size=40 + round_number)
    metrics.record_batch_finished(queue="mini", state="completed", turnaround_seconds=900 + round_number)
    metrics.record_capacity(queue="mini", enqueued=1000 * round_number, budget=2_000_000)
    metrics.record_capacity_refusal("mini")
    metrics.record_webhook(WebhookOutcome.DELIVERED)
    metrics.record_webhook(WebhookOutcome.DEAD_LETTER)
    metrics.record_upstream_error(lane="sync", status=503)
    metrics.record_upstream_error(lane="batch", status=429)
    metrics.record_config_reload(applied=False)
    metrics.set_account_problems([("mini", "insufficient_quota")])
    now = time.time()
    metrics.update_queues(
        QueueSnapshot(
            taken_at=now,
            queues=(
                QueueStats(
                    "mini",
                    depth=12,
                    oldest_enqueued_at=now - 90,
                    batches_by_state={"in_progress": 2, "finalizing": 1},
                    oldest_open_batch_created_at=now - 7200,
                    turnaround_estimate_seconds=3600,
                ),
                QueueStats("big", depth=3, oldest_enqueued_at=now - 10, turnaround_estimate_seconds=3600),
            ),
        )
    )


def exercised_metrics() -> set[str]:
    """Every sample name (with _total, _bucket, ... suffixes) a fully exercised catalogue exposes."""
    metrics = catalogue()
    exercise(metrics)
    budgets = BudgetGauges(metrics.registry)  # read from Redis at scrape time (proxy/budgets_metrics.py)
    budgets.limit.labels("team", "research", "day").set(10)
    budgets.headroom.labels("team", "research", "day").set(4)
    return {sample.name for family in metrics.registry.collect() for sample in family.samples}
