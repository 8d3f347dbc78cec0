"""A real Prometheus scrapes batchgate's /metrics; every dashboard query and alert expression evaluates."""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Request, Response

from proxy.budgets_metrics import BudgetGauges
from proxy.routes import metrics as metrics_route
from proxy.runtime import build_runtime
from proxy.settings import Config, Settings
from tests.support.prometheus import (
    alert_rules,
    dashboard_queries,
    finite_values,
    prometheus_server,
    query,
)
from tests.support.servers import ServerThread
from tests.support.telemetry import catalogue, exercise
from tests.support.waiting import wait_until_sync

# Grafana's variables, as Prometheus needs them spelled: windows long enough for several 1 s scrapes.
GRAFANA_VARIABLES = {"$__rate_interval": "10s", "$__range": "1m", "$team": ".*"}
CONFIG = Config.model_validate(
    {"model_list": [{"model_name": "mini", "litellm_params": {"model": "openai/gpt-4o-mini"}}]}
)


@pytest.fixture
def batchgate_metrics(redis_url: str) -> Iterator[str]:
    """An app serving the real /metrics route from a Runtime, fed with traffic every 200 ms.

    A scrape never sees half a round (the feeder and the route share a lock), so ratios between counters are exact."""
    metrics = catalogue()
    app = FastAPI()
    app.include_router(metrics_route.router)
    whole_rounds = threading.Lock()

    @app.middleware("http")
    async def between_rounds(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        with whole_rounds:
            return await call_next(request)

    runtime = build_runtime(Settings(redis_url=redis_url), CONFIG)
    runtime.metrics = metrics
    budgets = BudgetGauges(metrics.registry)  # no budget is configured: set as a scrape would from Redis
    budgets.limit.labels("team", "research", "day").set(10)
    budgets.headroom.labels("team", "research", "day").set(4)
    app.state.runtime = runtime
    stop = threading.Event()

    def feed() -> None:
        round_number = 0
        while not stop.is_set():
            with whole_rounds:
                exercise(metrics, round_number=round_number)
            round_number += 1
            stop.wait(0.2)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        with ServerThread(app) as server:
            yield f"127.0.0.1:{server.port}"
    finally:
        stop.set()
        feeder.join(timeout=5)


@pytest.fixture
def prometheus(tmp_path: Path, batchgate_metrics: str) -> Iterator[str]:
    with prometheus_server(tmp_path, [batchgate_metrics]) as url:
        yield url


def test_every_dashboard_query_and_alert_evaluates_with_data(prometheus: str) -> None:
    wait_until_sync(
        lambda: bool(finite_values(query(prometheus, "sum(rate(batchgate_saved_usd_total[10s]))"))),
        timeout=20,
        what="scraped samples",
    )
    queries = dashboard_queries(GRAFANA_VARIABLES)
    assert len(queries) > 20
    empty = [title for title, expression in queries if not finite_values(query(prometheus, expression))]
    assert not empty, f"panels without data: {empty}"

    savings_percent = next(e for title, e in queries if title == "batchgate-savings: Savings, % of list")
    # each round: sync saves 0 of 0.004, batch and flex 0.002 each: 0.004 of 0.012 list
    assert finite_values(query(prometheus, savings_percent))[0] == pytest.approx(100 / 3, abs=0.01)

    for rule in alert_rules():
        query(prometheus, rule["expr"])
    firing_expected = {"BatchgateDeadlineMissed", "BatchgateWebhookDeadLetters", "BatchgateBatchStuck"}
    for rule in alert_rules():
        if rule["alert"] in firing_expected:
            assert query(prometheus, rule["expr"]), rule["alert"]


def test_prometheus_loads_the_alert_rules_healthy(prometheus: str) -> None:
    def rules_evaluated() -> bool:
        groups = httpx.get(f"{prometheus}/api/v1/rules", timeout=5).json()["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        return bool(rules) and all(
            rule.get("lastEvaluation", "").startswith("2") and rule["health"] != "unknown" for rule in rules
        )

    wait_until_sync(rules_evaluated, timeout=20, what="rules evaluated")
    groups = httpx.get(f"{prometheus}/api/v1/rules", timeout=5).json()["data"]["groups"]
    rules = {rule["name"]: rule for group in groups for rule in group["rules"]}
    assert set(rules) == {rule["alert"] for rule in alert_rules()}
    assert all(rule["health"] == "ok" for rule in rules.values()), {n: r.get("lastError") for n, r in rules.items()}
    wait_until_sync(
        lambda: any(
            alert["labels"]["alertname"] == "BatchgateDeadlineMissed"
            for alert in httpx.get(f"{prometheus}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
        ),
        timeout=15,
        what="the deadline-miss alert",
    )
