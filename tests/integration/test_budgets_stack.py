"""Budgets over real HTTP: a key's daily budget reserves each call's worst case, settles at the real cost (sync in
the API, deferred in the worker), refuses a call that would go past it with an OpenAI-shaped 429, and shows its
headroom on /metrics."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

from proxy.simulator.ledger import PriceBook as SimulatorPrices
from proxy.simulator.ledger import Tier
from proxy.token_estimate import estimate_tokens
from proxy.worker.process import run_in_app
from tests.integration.test_anthropic_stack import FAST_SIMULATOR
from tests.support.stack import MASTER_KEY, TEAM_KEYS, Stack, running_stack
from tests.support.waiting import wait_until_sync

MODEL = "gpt-4o-mini"
PRICE_IN, PRICE_OUT = Decimal("1.5e-7"), Decimal("6e-7")  # litellm's list prices of gpt-4o-mini
LIMIT = Decimal("0.0001")
AUTH = {
    "keys": [
        {"name": "alpha-key", "key": TEAM_KEYS["alpha"], "team": "alpha", "budget": {"daily_usd": float(LIMIT)}},
        {"name": "beta-key", "key": TEAM_KEYS["beta"], "team": "beta"},
    ]
}


def call(stack: Stack, key: str, max_tokens: int, headers: dict[str, str] | None = None) -> httpx.Response:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Name a prime."}], "max_tokens": max_tokens}
    with httpx.Client(base_url=stack.url, timeout=30) as http:
        return http.post(
            "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}", **(headers or {})}
        )


def headroom(stack: Stack) -> Decimal | None:
    with httpx.Client(base_url=stack.url, timeout=10) as http:
        text = http.get("/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "batchgate_budget_headroom_usd" and sample.labels == {
                "scope": "key", "name": "alpha-key", "period": "day"
            }:  # fmt: skip
                return Decimal(repr(sample.value))
    return None


def cost(usage: dict[str, Any], share: Decimal = Decimal(1)) -> Decimal:
    return (usage["prompt_tokens"] * PRICE_IN + usage["completion_tokens"] * PRICE_OUT) * share


def settled_to(stack: Stack, spent: Decimal) -> Decimal:
    expected = float(LIMIT - spent)
    return wait_until_sync(
        lambda: (left := headroom(stack)) is not None and abs(float(left) - expected) < 1e-12 and left,
        timeout=20,
        what=f"headroom {expected}",
    )


def test_a_key_budget_settles_sync_and_deferred_calls_and_refuses_past_its_limit(
    tmp_path: Path, redis_url: str
) -> None:
    with running_stack(tmp_path, redis_url, background=[run_in_app], simulator=FAST_SIMULATOR, auth=AUTH) as stack:
        answered = call(stack, TEAM_KEYS["alpha"], 20)
        assert answered.status_code == 200, answered.text
        spent = cost(answered.json()["usage"])
        settled_to(stack, spent)

        accepted = call(stack, TEAM_KEYS["alpha"], 20, {"X-Batch-Deadline": "1h"})
        assert accepted.status_code == 202, accepted.text
        [job] = stack.final_jobs([accepted.json()["id"]])
        assert job["status"] == "completed"
        spent += cost(job["response"]["usage"], Decimal("0.5"))  # answered in a batch: half price
        settled_to(stack, spent)

        refused = call(stack, TEAM_KEYS["alpha"], 1000)  # its worst case (1,000 output tokens) cannot fit
        assert refused.status_code == 429
        error = refused.json()["error"]
        assert (error["type"], error["code"]) == ("insufficient_quota", "budget_exceeded")
        assert "key 'alpha-key' daily budget of $0.0001" in error["message"]
        assert "resets at" in error["message"]
        assert refused.headers["x-batchgate-decision"] == "lane=none; reason=budget_exceeded"
        assert int(refused.headers["retry-after"]) > 0

        assert call(stack, TEAM_KEYS["beta"], 1000).status_code == 200  # another key's calls are not limited
        settled_to(stack, spent)  # the refusal reserved nothing


def test_a_deferred_embeddings_call_reserves_its_input_at_the_batch_price_and_settles_at_the_real_cost(
    tmp_path: Path, redis_url: str
) -> None:
    embedder = "text-embedding-3-small"
    batch_in = SimulatorPrices().price(embedder, Tier.BATCH)
    assert batch_in is not None
    models = {MODEL: f"openai/{MODEL}", embedder: f"openai/{embedder}"}
    simulator = {**FAST_SIMULATOR, "turnaround_s": 600.0}  # the first batch waits: its job's hold is visible
    with running_stack(
        tmp_path, redis_url, background=[run_in_app], simulator=simulator, auth=AUTH, models=models
    ) as stack, httpx.Client(base_url=stack.url, timeout=30) as http:  # fmt: skip
        alpha = {"authorization": f"Bearer {TEAM_KEYS['alpha']}", "x-batch-deadline": "1h", "prefer": "respond-async"}
        body = {"model": embedder, "input": ["a held document", "another one"]}
        accepted = http.post("/v1/embeddings", json=body, headers=alpha)
        assert accepted.status_code == 202, accepted.text
        worst = estimate_tokens(orjson.dumps(body)) * batch_in.input  # input tokens at the batch price, no output
        settled_to(stack, worst)
        master = {"authorization": f"Bearer {MASTER_KEY}"}
        assert http.delete(f"/v1/deferred/{accepted.json()['id']}", headers=master).status_code == 200
        settled_to(stack, Decimal(0))  # a cancelled job gives its hold back

        too_big = {"model": embedder, "input": ["word " * 4000] * 5}  # worst case above the $0.0001 budget
        refused = http.post("/v1/embeddings", json=too_big, headers=alpha)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "budget_exceeded"
        settled_to(stack, Decimal(0))

        stack.configure_simulator(turnaround_s=1.2)
        accepted = http.post("/v1/embeddings", json=body, headers=alpha)
        assert accepted.status_code == 202, accepted.text
        [job] = stack.final_jobs([accepted.json()["id"]])
        assert job["status"] == "completed"
        real = job["response"]["usage"]["prompt_tokens"] * batch_in.input
        assert 0 < real < worst
        settled_to(stack, real)
