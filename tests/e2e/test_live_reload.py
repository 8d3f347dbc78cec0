"""A running `batchgate serve` reloads its config on SIGHUP and on a file change, and refuses an invalid one."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.servers import child_environment, free_port, wait_for_http
from tests.support.stack import MASTER_KEY, config_document, simulator_server
from tests.support.waiting import wait_until_sync

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "reload me"}]}
DEFER_EVERYTHING = {"rules": [{"name": "defer-everything", "match": {"models": ["gpt-*"]}, "lane": "batch"}]}
SYNC_TEAM_RULE = {"rules": [{"name": "alpha-sync", "match": {"teams": ["alpha"]}, "lane": "sync"}]}


@pytest.fixture
def serving(tmp_path: Path, redis_url: str, repo_root: Path) -> Iterator[tuple[str, Path, subprocess.Popen[bytes]]]:
    with simulator_server() as upstream:
        config_path = tmp_path / "config.yaml"
        config_path.write_text(yaml.safe_dump(config_document(upstream.url)))
        port = free_port()
        env = {
            **child_environment(),
            "BATCHGATE_CONFIG": str(config_path),
            "BATCHGATE_REDIS_URL": redis_url,
            "BATCHGATE_PORT": str(port),
        }
        log = (tmp_path / "serve.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "proxy", "serve", "--no-worker"], cwd=repo_root, env=env, stdout=log, stderr=log
        )
        try:
            wait_for_http(f"http://127.0.0.1:{port}/healthz", timeout=60)
            yield f"http://127.0.0.1:{port}", config_path, process
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=45)
            log.close()


def decision(url: str) -> str:
    # respond-async: a deferred call would otherwise be held until its answer, and this server runs no worker
    headers = {"authorization": f"Bearer {MASTER_KEY}", "prefer": "respond-async"}
    response = httpx.post(url + "/v1/chat/completions", json=BODY, headers=headers)
    assert response.status_code in (200, 202), response.text
    return response.headers["x-batchgate-decision"]


def write_policy(path: Path, policy: dict[str, object]) -> None:
    document = yaml.safe_load(path.read_text())
    document["policy"] = policy
    path.write_text(yaml.safe_dump(document))


def reloads(url: str, result: str) -> float:
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith(f'batchgate_config_reloads_total{{result="{result}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_sighup_and_file_changes_reload_and_an_invalid_file_is_refused(
    serving: tuple[str, Path, subprocess.Popen[bytes]],
) -> None:
    url, config_path, process = serving
    original = config_path.read_text()
    assert decision(url).startswith("lane=sync; rule=default")

    write_policy(config_path, DEFER_EVERYTHING)
    process.send_signal(signal.SIGHUP)
    wait_until_sync(lambda: "rule=defer-everything" in decision(url), timeout=15)
    assert decision(url).startswith("lane=batch")
    assert reloads(url, "applied") >= 1

    config_path.write_text("model_list: [this is: not valid\n")
    process.send_signal(signal.SIGHUP)
    wait_until_sync(lambda: reloads(url, "refused") >= 1, timeout=15)
    assert "rule=defer-everything" in decision(url), "the config in force stays after a refused reload"
    assert process.poll() is None

    applied_before = reloads(url, "applied")
    config_path.write_text(original)
    write_policy(config_path, SYNC_TEAM_RULE)
    wait_until_sync(
        lambda: reloads(url, "applied") > applied_before, timeout=15
    )  # no signal this time: the file change alone
    assert decision(url).startswith("lane=sync; rule=default")


PRICE_BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "price me"}]}


def priced(document: dict[str, Any], batch_in: str, batch_out: str) -> dict[str, Any]:
    """The document with gpt-4o-mini's batch prices overridden (USD per token, exact in pico-dollars)."""
    for deployment in document["model_list"]:
        if deployment["model_name"] == "gpt-4o-mini":
            deployment["litellm_params"].update(
                input_cost_per_token=2e-6,
                output_cost_per_token=8e-6,
                input_cost_per_token_batches=float(batch_in),
                output_cost_per_token_batches=float(batch_out),
            )
    return document


def batch_totals(url: str) -> dict[str, Any]:
    response = httpx.get(url + "/v1/savings", headers={"authorization": f"Bearer {MASTER_KEY}"})
    response.raise_for_status()
    lanes = {row["lane"]: row for row in response.json()["by_lane"]}
    return lanes.get("batch", {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "paid_usd": "0"})


def answered_in_batch(url: str) -> dict[str, Any]:
    """Defer one call, wait until the worker answered it and its cost is in the ledger: the totals after it."""
    before = batch_totals(url)["requests"]
    accepted = httpx.post(
        url + "/v1/chat/completions", json=PRICE_BODY, headers={"authorization": f"Bearer {MASTER_KEY}"}
    )
    assert accepted.status_code == 202, accepted.text
    wait_until_sync(lambda: batch_totals(url)["requests"] > before, timeout=60)
    return batch_totals(url)


def paid_for_last(after: dict[str, Any], before: dict[str, Any], batch_in: str, batch_out: str) -> tuple[Any, Any]:
    """(what the ledger says the last call cost, what it costs at the given batch prices)."""
    prompt = after["prompt_tokens"] - before["prompt_tokens"]
    completion = after["completion_tokens"] - before["completion_tokens"]
    assert prompt > 0
    assert completion > 0
    expected = prompt * Decimal(batch_in) + completion * Decimal(batch_out)
    return Decimal(after["paid_usd"]) - Decimal(before["paid_usd"]), expected


def metric(url: str, name: str) -> float:
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith(name):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_separate_worker_reloads_live_keys_and_refuses_static_ones(
    tmp_path: Path, redis_url: str, repo_root: Path
) -> None:
    """`batchgate worker` prices what it answers with the price overrides in force: a SIGHUP after a price change
    switches it to the new prices; a file that also changes a static key is refused (logged with the key and the
    word restart) and the worker keeps the prices it had."""
    with simulator_server(turnaround_s=0.5) as upstream:
        config_path = tmp_path / "config.yaml"
        document = config_document(upstream.url, policy=DEFER_EVERYTHING, batching={"max_wait": "0.2s"})
        config_path.write_text(yaml.safe_dump(priced(document, "0.000001", "0.000002")))
        api_port, worker_metrics = free_port(), free_port()
        env = {**child_environment(), "BATCHGATE_CONFIG": str(config_path), "BATCHGATE_REDIS_URL": redis_url}
        api_log, worker_log = tmp_path / "serve.log", tmp_path / "worker.log"
        with api_log.open("wb") as log:
            api = subprocess.Popen(
                [sys.executable, "-m", "proxy", "serve", "--no-worker"],
                cwd=repo_root, env={**env, "BATCHGATE_PORT": str(api_port)}, stdout=log, stderr=log,
            )  # fmt: skip
        with worker_log.open("wb") as log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "proxy", "worker"],
                cwd=repo_root, env={**env, "BATCHGATE_METRICS_PORT": str(worker_metrics)}, stdout=log, stderr=log,
            )  # fmt: skip
        url, worker_url = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{worker_metrics}"
        try:
            wait_for_http(url + "/healthz", timeout=180)  # two processes importing litellm on a busy machine
            wait_for_http(worker_url + "/metrics", timeout=180)
            start = batch_totals(url)
            first = answered_in_batch(url)
            paid, expected = paid_for_last(first, start, "0.000001", "0.000002")
            assert paid == expected

            config_path.write_text(yaml.safe_dump(priced(document, "0.000003", "0.000005")))
            worker.send_signal(signal.SIGHUP)
            wait_until_sync(
                lambda: metric(worker_url, 'batchgate_config_reloads_total{result="applied"}') >= 1, timeout=15
            )
            second = answered_in_batch(url)
            paid, expected = paid_for_last(second, first, "0.000003", "0.000005")
            assert paid == expected, "after SIGHUP the worker prices with the new overrides"

            static_change = priced(document, "0.000007", "0.000009")
            static_change["worker"] = {**static_change["worker"], "lease": 7}
            config_path.write_text(yaml.safe_dump(static_change))
            worker.send_signal(signal.SIGHUP)
            wait_until_sync(
                lambda: metric(worker_url, 'batchgate_config_reloads_total{result="refused"}') >= 1, timeout=15
            )
            refusal = [line for line in worker_log.read_text().splitlines() if "reload refused" in line]
            assert refusal, worker_log.read_text()[-3000:]
            assert "worker.lease" in refusal[-1]
            assert "restart" in refusal[-1]
            third = answered_in_batch(url)
            paid, expected = paid_for_last(third, second, "0.000003", "0.000005")
            assert paid == expected, "a refused reload leaves the prices in force"
            assert worker.poll() is None
        finally:
            for process in (worker, api):
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=45)
