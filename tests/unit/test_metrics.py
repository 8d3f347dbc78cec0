"""The metrics catalogue: names, labels, bounded cardinality, the queue snapshot collector, /metrics."""

from __future__ import annotations

import time
from decimal import Decimal

import httpx
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from proxy.metrics import Metrics, QueueSnapshot, QueueStats, known_labels, metrics_server, status_class
from proxy.pricing import Cost, Usage
from proxy.reasons import RescueReason, WebhookOutcome
from proxy.routes.metrics import router
from proxy.runtime import build_runtime
from proxy.settings import Config, Settings


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def catalogue() -> Metrics:
    return Metrics(CollectorRegistry(), models=["mini", "big"], teams=["research"], rules=["nightly"])


def record_one(metrics: Metrics, *, model: str = "mini", team: str = "research") -> None:
    metrics.record_finished(
        lane="batch",
        outcome="completed",
        model=model,
        team=team,
        usage=Usage(prompt_tokens=100, completion_tokens=20, cached_tokens=10),
        cost=Cost(Decimal("0.004"), Decimal("0.002")),
    )


def test_every_metric_has_the_prefix_and_no_id_labels() -> None:
    metrics = catalogue()
    record_one(metrics)
    metrics.observe_answer(lane="batch", model="mini", seconds=12, deadline_margin=30)
    names = [family.name for family in metrics.registry.collect()]
    assert names
    assert all(name.startswith("batchgate_") for name in names)
    for family in metrics.registry.collect():
        for s in family.samples:
            assert not {"id", "job_id", "batch_id", "caller", "key"} & set(s.labels)


def test_finished_request_counts_tokens_and_money() -> None:
    metrics = catalogue()
    record_one(metrics)
    record_one(metrics)
    r = metrics.registry
    assert (
        sample(
            r,
            "batchgate_requests_total",
            lane="batch",
            outcome="completed",
            model="mini",
            team="research",
            endpoint="chat_completions",
        )
        == 2
    )
    assert (
        sample(r, "batchgate_tokens_total", kind="input", lane="batch", model="mini", endpoint="chat_completions")
        == 200
    )
    assert (
        sample(r, "batchgate_tokens_total", kind="cached", lane="batch", model="mini", endpoint="chat_completions")
        == 20
    )
    money = {"model": "mini", "team": "research", "lane": "batch", "endpoint": "chat_completions"}
    assert sample(r, "batchgate_list_usd_total", **money) == 0.008
    assert sample(r, "batchgate_saved_usd_total", **money) == 0.004


def test_money_counters_carry_the_endpoint_like_the_request_counters() -> None:
    metrics = catalogue()
    record_one(metrics)
    record_one(metrics, model="mini#embeddings")
    r = metrics.registry
    for endpoint in ("chat_completions", "embeddings"):
        money = {"model": "mini", "team": "research", "lane": "batch", "endpoint": endpoint}
        assert sample(r, "batchgate_list_usd_total", **money) == 0.004
        assert sample(r, "batchgate_paid_usd_total", **money) == 0.002
        assert sample(r, "batchgate_saved_usd_total", **money) == 0.002
        assert sample(r, "batchgate_requests_total", outcome="completed", **money) == 1


def test_unknown_cost_is_counted_not_priced() -> None:
    metrics = catalogue()
    metrics.record_finished(
        lane="sync", outcome="completed", model="mini", team="research", usage=Usage(1, 1), cost=Cost.unknown()
    )
    r = metrics.registry
    assert sample(r, "batchgate_unknown_cost_requests_total", model="mini") == 1
    money = {"model": "mini", "team": "research", "lane": "sync", "endpoint": "chat_completions"}
    assert sample(r, "batchgate_list_usd_total", **money) is None


def test_labels_outside_the_config_are_bucketed_to_other() -> None:
    metrics = catalogue()
    for i in range(50):
        record_one(metrics, model=f"model-{i}", team=f"team-{i}")
        metrics.record_decision(lane="batch", rule=f"rule-{i}")
    r = metrics.registry
    assert (
        sample(
            r,
            "batchgate_requests_total",
            lane="batch",
            outcome="completed",
            model="other",
            team="other",
            endpoint="chat_completions",
        )
        == 50
    )
    assert sample(r, "batchgate_policy_decisions_total", lane="batch", rule="other") == 50
    series = sum(len(f.samples) for f in r.collect() if f.name == "batchgate_requests")
    assert series <= 2  # one _total and one _created sample


def test_rescue_and_webhook_labels_are_the_enum_values_each_born_at_zero() -> None:
    metrics = catalogue()
    r = metrics.registry
    for reason in RescueReason:
        assert sample(r, "batchgate_rescues_total", reason=reason.value) == 0
    for outcome in WebhookOutcome:
        assert sample(r, "batchgate_webhook_deliveries_total", outcome=outcome.value) == 0
    metrics.record_rescue(RescueReason.BATCH_EXPIRED)
    metrics.record_webhook(WebhookOutcome.REFUSED)
    assert sample(r, "batchgate_rescues_total", reason="batch_expired") == 1
    assert sample(r, "batchgate_webhook_deliveries_total", outcome="refused") == 1
    assert sample(r, "batchgate_rescues_total", reason="other") is None


def test_reload_adopts_new_label_sets() -> None:
    metrics = catalogue()
    metrics.set_known(models=["new"], teams=["ops"])
    record_one(metrics, model="new", team="ops")
    record_one(metrics, model="mini", team="research")
    r = metrics.registry
    assert (
        sample(
            r,
            "batchgate_requests_total",
            lane="batch",
            outcome="completed",
            model="new",
            team="ops",
            endpoint="chat_completions",
        )
        == 1
    )
    assert (
        sample(
            r,
            "batchgate_requests_total",
            lane="batch",
            outcome="completed",
            model="other",
            team="other",
            endpoint="chat_completions",
        )
        == 1
    )


def test_deadline_margin_and_misses() -> None:
    metrics = catalogue()
    metrics.observe_answer(lane="batch", model="mini", seconds=100, deadline_margin=500)
    metrics.observe_answer(lane="sync", model="mini", seconds=3, deadline_margin=-2)
    metrics.observe_answer(lane="sync", model="mini", seconds=1, deadline_margin=None)
    r = metrics.registry
    assert sample(r, "batchgate_deadline_misses_total", lane="sync", model="mini") == 1
    assert sample(r, "batchgate_deadline_margin_seconds_count", lane="sync") == 1
    assert sample(r, "batchgate_time_to_answer_seconds_count", lane="sync") == 2
    assert sample(r, "batchgate_deadline_margin_seconds_bucket", lane="batch", le="600.0") == 1


def test_errors_batches_and_reloads() -> None:
    metrics = catalogue()
    metrics.record_upstream_error(lane="sync", status=503)
    metrics.record_upstream_error(lane="batch", status=None)
    metrics.record_upstream_error(lane="flex", status=429)
    metrics.record_upstream_error(lane="flex", timeout=True)
    metrics.record_batch_submitted(queue="mini", size=40)
    metrics.record_batch_finished(queue="mini", state="completed", turnaround_seconds=900)
    metrics.record_config_reload(applied=False)
    r = metrics.registry
    assert sample(r, "batchgate_upstream_errors_total", lane="sync", status_class="5xx") == 1
    assert sample(r, "batchgate_upstream_errors_total", lane="batch", status_class="connection") == 1
    assert sample(r, "batchgate_upstream_errors_total", lane="flex", status_class="429") == 1
    assert sample(r, "batchgate_upstream_errors_total", lane="flex", status_class="timeout") == 1
    assert sample(r, "batchgate_batch_size_requests_sum", queue="mini") == 40
    assert sample(r, "batchgate_batch_turnaround_seconds_count", queue="mini", state="completed") == 1
    assert sample(r, "batchgate_config_reloads_total", result="refused") == 1
    assert [status_class(s) for s in (400, 404, 429, 500, 502)] == ["4xx", "4xx", "429", "5xx", "5xx"]


def test_queue_snapshot_is_rendered_with_ages_at_scrape_time() -> None:
    metrics = catalogue()
    assert sample(metrics.registry, "batchgate_queue_depth", queue="mini") is None  # nothing before a snapshot
    now = time.time()
    metrics.update_queues(
        QueueSnapshot(
            taken_at=now - 5,
            queues=(
                QueueStats(
                    "mini",
                    depth=7,
                    oldest_enqueued_at=now - 120,
                    batches_by_state={"in_progress": 2, "weird": 1},
                    oldest_open_batch_created_at=now - 3000,
                    turnaround_estimate_seconds=3600,
                ),
                QueueStats("ghost-model", depth=1),
            ),
        )
    )
    r = metrics.registry
    assert sample(r, "batchgate_queue_depth", queue="mini") == 7
    assert sample(r, "batchgate_queue_depth", queue="other") == 1
    assert 119 <= (sample(r, "batchgate_queue_oldest_age_seconds", queue="mini") or 0) < 130
    assert sample(r, "batchgate_batches", queue="mini", state="in_progress") == 2
    assert sample(r, "batchgate_batches", queue="mini", state="other") == 1
    assert sample(r, "batchgate_batch_turnaround_estimate_seconds", queue="mini") == 3600
    assert (sample(r, "batchgate_queue_snapshot_age_seconds") or 0) >= 5


def test_known_labels_come_from_the_config() -> None:
    config = Config.model_validate(
        {
            "model_list": [{"model_name": "mini", "litellm_params": {"model": "openai/gpt-4o-mini"}}],
            "auth": {"keys": [{"name": "a", "key": "sk-a", "team": "research"}]},
            "policy": {"rules": [{"name": "nightly"}]},
        }
    )
    labels = known_labels(config)
    assert labels["models"] == ["mini"]
    assert "research" in labels["teams"]
    assert "nightly" in labels["rules"]


async def test_metrics_route_serves_the_runtime_registry() -> None:
    config = Config.model_validate(
        {"model_list": [{"model_name": "mini", "litellm_params": {"model": "openai/gpt-4o-mini"}}]}
    )
    runtime = build_runtime(Settings(redis_url="redis://127.0.0.1:1/0"), config)  # Redis is never contacted here
    metrics = catalogue()
    record_one(metrics)
    runtime.metrics = metrics
    app = FastAPI()
    app.include_router(router)
    app.state.runtime = runtime
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            response = await client.get("/metrics")
    finally:
        await runtime.providers.aclose()
        await runtime.redis.aclose()
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    families = {f.name for f in text_string_to_metric_families(response.text)}
    assert "batchgate_saved_usd" in families


def test_worker_metrics_server() -> None:
    metrics = catalogue()
    record_one(metrics)
    server = metrics_server(metrics, 0, addr="127.0.0.1")
    try:
        response = httpx.get(f"http://127.0.0.1:{server.port}/metrics", timeout=5)
        assert "batchgate_paid_usd_total" in response.text
    finally:
        server.close()
