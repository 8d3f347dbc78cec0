"""Reload and the static/live split, on a real Runtime and a real API: a static change (a model added, a worker
setting) is refused at reload with the keys named; a live change applies; a request keeps its snapshot."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from proxy.config_watch import watch_config
from proxy.policy.reload import ConfigReloader
from proxy.pricing import Usage
from proxy.runtime import build_runtime, close_runtime
from proxy.settings import Settings, load_config
from tests.support.stack import MASTER_KEY, Stack, running_stack
from tests.support.waiting import wait_until_sync

NEW_MODEL = "gpt-new"
DEFER = {"rules": [{"name": "defer-everything", "lane": "batch"}]}


def chat(model: str = "gpt-4o-mini") -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hello"}]}


def edit(path: Path, **sections: Any) -> None:
    document = yaml.safe_load(path.read_text())
    document.update(sections)
    path.write_text(yaml.safe_dump(document))


def with_new_model(path: Path) -> list[dict[str, Any]]:
    models: list[dict[str, Any]] = yaml.safe_load(path.read_text())["model_list"]
    added = {**models[0], "model_name": NEW_MODEL, "litellm_params": {**models[0]["litellm_params"]}}
    added["litellm_params"]["model"] = f"openai/{NEW_MODEL}"
    return [*models, added]


def reloads(url: str, result: str) -> float:
    prefix = f'batchgate_config_reloads_total{{result="{result}"}}'
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def post(
    url: str, body: dict[str, Any] | Iterator[bytes], key: str = MASTER_KEY, *, prefer: str | None = None
) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    if prefer is not None:
        headers["prefer"] = prefer
    if isinstance(body, dict):
        return httpx.post(url + "/v1/chat/completions", json=body, headers=headers, timeout=30)
    return httpx.post(url + "/v1/chat/completions", content=body, headers=headers, timeout=30)


@pytest.fixture
def stack(tmp_path: Path, redis_url: str) -> Iterator[Stack]:
    with running_stack(tmp_path, redis_url, background=[watch_config]) as running:
        yield running


def test_a_model_added_by_reload_is_refused_at_reload_and_stays_unknown(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    before = post(stack.url, chat(NEW_MODEL))
    assert before.status_code == 404
    assert before.json()["error"]["code"] == "model_not_found"

    with caplog.at_level(logging.ERROR, logger="batchgate.policy.reload"):
        edit(stack.config_path, model_list=with_new_model(stack.config_path), policy=DEFER)
        wait_until_sync(lambda: reloads(stack.url, "refused") >= 1, timeout=15, what="the reload to be refused")

    refusals = [record.getMessage() for record in caplog.records if "refused" in record.getMessage()]
    assert len(refusals) == 1
    assert "model_list[2]" in refusals[0]
    assert "restart" in refusals[0]
    assert str(stack.config_path) in refusals[0]

    after = post(stack.url, chat(NEW_MODEL))
    assert (after.status_code, after.json()) == (before.status_code, before.json())
    # The live part of the refused file (the policy) was not applied either.
    assert post(stack.url, chat()).headers["x-batchgate-decision"].startswith("lane=sync; rule=default")
    assert reloads(stack.url, "applied") == 0


def test_a_request_keeps_the_config_it_started_with(stack: Stack) -> None:
    """The policy changes while the request body is still arriving: the request is decided by the policy in
    force when it started, and the next request by the new one."""

    def slow_body() -> Iterator[bytes]:
        text = httpx.Request("POST", "/", json=chat()).content
        yield text[:10]
        edit(stack.config_path, policy=DEFER)
        wait_until_sync(lambda: reloads(stack.url, "applied") >= 1, timeout=15, what="the reload to apply")
        yield text[10:]

    started_before = post(stack.url, slow_body())
    assert started_before.status_code == 200, started_before.text
    assert started_before.headers["x-batchgate-decision"].startswith("lane=sync; rule=default")
    started_after = post(stack.url, chat(), prefer="respond-async")  # the rule defers it: opt into the 202
    assert started_after.status_code == 202, started_after.text
    assert "rule=defer-everything" in started_after.headers["x-batchgate-decision"]


async def test_runtime_swaps_the_live_part_and_refuses_a_static_change(tmp_path: Path, redis_url: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "model_list": [{"model_name": "gpt-4o-mini", "litellm_params": {"model": "openai/gpt-4o-mini"}}],
                "auth": {"master_key": MASTER_KEY},
                "worker": {"lease": 30},
            }
        )
    )
    runtime = build_runtime(Settings(config=path, redis_url=redis_url), load_config(path))
    refusals: list[str] = []
    try:
        reloader = ConfigReloader(path, runtime.apply_config, on_refused=refusals.append, poll_interval=3600)
        started = runtime.live

        edit(path, worker={"lease": 45}, policy=DEFER)
        assert await reloader.check_now() is False
        assert runtime.live is started
        assert len(refusals) == 1
        assert "worker.lease" in refusals[0]
        assert "restart" in refusals[0]

        models = yaml.safe_load(path.read_text())["model_list"]
        models[0]["litellm_params"]["input_cost_per_token"] = 1.0
        models[0]["litellm_params"]["output_cost_per_token"] = 2.0
        edit(
            path,
            worker={"lease": 30},
            model_list=models,
            auth={"master_key": MASTER_KEY, "keys": [{"name": "bob", "key": "sk-bob", "team": "beta"}]},
        )
        assert await reloader.check_now() is True
        assert runtime.live is not started
        assert runtime.config.policy.rules[0].name == "defer-everything"
        assert runtime.keys.caller_for("Bearer sk-bob").team == "beta"
        cost = runtime.prices.cost("gpt-4o-mini", Usage(prompt_tokens=3, completion_tokens=5), "sync")
        assert cost.paid_usd == Decimal(3 * 1 + 5 * 2)
    finally:
        await close_runtime(runtime)


async def test_a_reload_swaps_the_batch_discount_table_into_the_price_book(tmp_path: Path, redis_url: str) -> None:
    """`pricing.batch_discounts` is live: after a reload the process prices with the new discount (the API and
    every worker rebuild the same book from the file: proxy/config_watch.py)."""
    path = tmp_path / "config.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "model_list": [{"model_name": "fast", "litellm_params": {"model": "groq/openai/gpt-oss-20b"}}],
                "auth": {"master_key": MASTER_KEY},
            }
        )
    )
    runtime = build_runtime(Settings(config=path, redis_url=redis_url), load_config(path))
    usage = Usage(prompt_tokens=1_000_000, completion_tokens=1_000_000)
    try:
        reloader = ConfigReloader(path, runtime.apply_config, poll_interval=3600)
        listed = runtime.prices.cost("fast", usage, "sync").list_usd
        assert runtime.prices.cost("fast", usage, "batch").paid_usd == listed * Decimal("0.75")  # Groq's 25% off

        edit(path, pricing={"batch_discounts": {"groq": 0.5}})
        assert await reloader.check_now() is True
        assert runtime.prices.cost("fast", usage, "batch").paid_usd == listed * Decimal("0.5")
    finally:
        await close_runtime(runtime)
