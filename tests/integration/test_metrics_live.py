"""A real Prometheus scrapes a real batchgate deployment: an API process and a separate `batchgate worker`
process (its own metrics port), as in production. Real traffic of every kind goes through the official openai
client; then every dashboard query and alert expression evaluates through Prometheus's HTTP API, the panels
return data, and the queue gauges (published by the worker only) are not double counted."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openai.types.chat import ChatCompletionMessageParam
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support.prometheus import (
    alert_rules,
    dashboard_queries,
    finite_values,
    prometheus_server,
    query,
)
from tests.support.servers import ServerThread, free_port
from tests.support.stack import Stack, running_stack
from tests.support.waiting import wait_until_sync

# The test's traffic lasts well under the windows, so every rate and increase sees all of it.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__range": "5m", "$team": ".*"}
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "count me"}]
# Panels that need traffic this test does not make: none. (Webhooks are delivered to a local receiver.)
NOT_EXPECTED_TO_HAVE_DATA: set[str] = set()


def receiver_app() -> Starlette:
    async def hook(request: Request) -> Response:
        await request.body()
        return Response(status_code=204)

    return Starlette(routes=[Route("/hook", hook, methods=["POST"])])


@pytest.fixture
def deployment(tmp_path: Path, redis_url: str) -> Iterator[tuple[Stack, str]]:
    """API (no in-process worker) + a `batchgate worker` process with its metrics port, on one Redis."""
    with ServerThread(receiver_app()) as receiver:
        policy = {
            "rules": [
                {"name": "flex-calls", "match": {"headers": {"x-lane": "flex"}}, "lane": "flex", "deadline": "1h"},
                {"name": "shadow-trial", "match": {"headers": {"x-shadow": "yes"}}, "lane": "batch",
                 "deadline": "1h", "shadow": True},
                {"name": "hooked", "match": {"headers": {"x-hook": "yes"}}, "lane": "batch", "deadline": "1h",
                 "delivery": "webhook", "callback_url": receiver.url + "/hook"},
            ]
        }  # fmt: skip
        webhooks = {"allow_hosts": ["127.0.0.1"], "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}
        budgets = {"team_budgets": {"alpha": {"monthly_usd": 100.0}}}  # the budget headroom panel's data
        with running_stack(tmp_path, redis_url, policy=policy, delivery={"webhook": webhooks}, auth=budgets) as stack:
            port = free_port()
            env = {
                **os.environ,
                "BATCHGATE_CONFIG": str(stack.config_path),
                "BATCHGATE_REDIS_URL": redis_url,
                "BATCHGATE_METRICS_PORT": str(port),
                "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            }
            log = (tmp_path / "worker.log").open("wb")
            worker = subprocess.Popen([sys.executable, "-m", "proxy", "worker"], env=env, stdout=log, stderr=log)
            try:
                # a hang detector, not a speed limit: under load the worker imports litellm slowly
                wait_until_sync(lambda: _serves_metrics(port), timeout=120, what="the worker's metrics port")
                yield stack, f"127.0.0.1:{port}"
            finally:
                worker.terminate()
                worker.wait(timeout=30)
                log.close()


def _serves_metrics(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def defer(stack: Stack, model: str, **extra: str) -> str:
    raw = stack.client().chat.completions.with_raw_response.create(model=model, messages=MESSAGES, extra_headers=extra)
    assert raw.http_response.status_code == 202, raw.http_response.text
    job_id: str = raw.http_response.json()["id"]
    return job_id


def traffic(stack: Stack) -> None:
    client = stack.client()
    for model in ("gpt-4o-mini", "gpt-5-mini"):
        client.chat.completions.create(model=model, messages=MESSAGES)
        client.chat.completions.create(model=model, messages=MESSAGES, extra_headers={"x-shadow": "yes"})
    assert list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))  # no usage
    jobs = [defer(stack, model, **{"X-Batch-Deadline": "1h"}) for model in ("gpt-4o-mini", "gpt-5-mini") * 3]
    jobs.append(defer(stack, "gpt-5-mini", **{"x-lane": "flex", "Prefer": "respond-async"}))
    stack.final_jobs(jobs)
    # a second batch of a queue: its turnaround and size are new observations on existing series (rate > 0)
    stack.final_jobs([defer(stack, "gpt-4o-mini", **{"x-hook": "yes"})])
    stack.configure_simulator(flex_429_rate=1.0)
    stack.final_jobs([defer(stack, "gpt-5-mini", **{"x-lane": "flex", "Prefer": "respond-async"})])
    stack.configure_simulator(flex_429_rate=0.0, finish_fraction=0.0)
    rescued = stack.final_jobs([defer(stack, "gpt-4o-mini", **{"X-Batch-Deadline": "10s"})])
    assert rescued[0].get("rescued")
    # a batch left in flight (it stalls) for the queue and batch gauges, and a late answer for the misses
    stalled = defer(stack, "gpt-5-mini", **{"X-Batch-Deadline": "1h"})
    stack.configure_simulator(sync_latency_s=4.0)
    late = stack.final_jobs([defer(stack, "gpt-4o-mini", **{"X-Batch-Deadline": "3s"})])
    assert late[0]["finished_at"] > time.time() - 60
    stack.configure_simulator(sync_latency_s=0.0)
    assert stalled


def test_prometheus_scrapes_the_api_and_the_worker(deployment: tuple[Stack, str], tmp_path: Path) -> None:
    stack, worker_target = deployment
    api_target = stack.url.removeprefix("http://")
    with prometheus_server(tmp_path, [api_target, worker_target]) as prometheus:
        traffic(stack)
        wait_until_sync(
            lambda: finite_values(query(prometheus, "sum(batchgate_requests_total)")) == [16.0],
            timeout=30,
            what="every request scraped",
        )
        wait_until_sync(
            lambda: finite_values(query(prometheus, 'sum(batchgate_batches{state="in_progress"})')) == [1.0],
            timeout=30,
            what="the stalled batch in the gauges",
        )
        # where each metric comes from: requests answered by the API process vs the worker
        by_instance = {
            (series["metric"]["instance"], series["metric"]["lane"]): float(series["value"][1])
            for series in query(prometheus, "sum by (instance, lane) (batchgate_requests_total)")
        }
        assert by_instance[(api_target, "sync")] == 5  # 2 plain, 2 shadow, 1 stream
        assert by_instance[(worker_target, "batch")] == 7  # 6 + the webhook job
        # queue gauges come from the worker only (the API process has none): nothing to double count
        instances = {series["metric"]["instance"] for series in query(prometheus, "batchgate_queue_depth")}
        assert instances == {worker_target}

        queries = dashboard_queries(GRAFANA_VARIABLES)
        empty = [title for title, expression in queries if not finite_values(query(prometheus, expression))]
        assert set(empty) <= NOT_EXPECTED_TO_HAVE_DATA, f"panels without data: {empty}"
        assert finite_values(query(prometheus, "sum(batchgate_saved_usd_total)"))[0] > 0
        # the stream that did not ask for usage is priced all the same (batchgate asks the upstream for it)
        assert finite_values(query(prometheus, "sum(batchgate_unknown_cost_requests_total)")) in ([], [0.0])
        assert finite_values(query(prometheus, "sum(batchgate_shadow_saved_usd_total)"))[0] > 0

        for rule in alert_rules():
            query(prometheus, rule["expr"])
        firing = {rule["alert"] for rule in alert_rules() if query(prometheus, rule["expr"])}
        assert "BatchgateDeadlineMissed" in firing
        assert "BatchgateQueueSnapshotStale" not in firing
