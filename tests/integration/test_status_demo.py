"""`batchgate demo` and `batchgate status` against a running batchgate (API + in-process worker)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.cli import main
from proxy.worker.process import run_in_app
from tests.support.stack import MASTER_KEY, TEAM_KEYS, Stack, running_stack
from tests.support.waiting import wait_until_sync

D = Decimal
# the batch lane needs 5m + 2s of deadline here, flex 1s + 2s: the demo's flex calls have somewhere to go
SECTIONS: dict[str, Any] = {
    "batching": {"max_wait": "1s", "turnaround_estimate": "5m"},
    "worker": {"flex_turnaround": "1s"},
}


@pytest.fixture
def stack(tmp_path: Path, redis_url: str) -> Iterator[Stack]:
    with running_stack(tmp_path, redis_url, background=[run_in_app], **SECTIONS) as running:
        yield running


def savings_totals(stack: Stack) -> dict[str, Any]:
    response = httpx.get(f"{stack.url}/v1/savings", headers={"authorization": f"Bearer {MASTER_KEY}"}, timeout=10)
    totals: dict[str, Any] = response.json()["totals"]
    return totals


def amount(output: str, label: str) -> Decimal:
    found = re.search(rf"^\s*{label}\s+\$([0-9,.]+)", output, re.MULTILINE)
    assert found, f"no {label!r} line in:\n{output}"
    return D(found.group(1).replace(",", ""))


def test_demo_prints_a_receipt_that_matches_the_ledger(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    assert main(["demo", "--url", stack.url, "--key", MASTER_KEY, "--calls", "8", "--timeout", "60"]) == 0
    took = time.monotonic() - started
    output = capsys.readouterr().out
    assert "8 calls" in output
    assert "deferred calls:" in output  # progress while the jobs run
    # Under load the deadline guard may rescue deferred calls to the sync lane: correct, and counted as such.
    split = re.search(r"calls\s+8\s+\(sync (\d+), batch (\d+), flex (\d+)\)", output)
    assert split, output
    rescued_line = re.search(r"rescued\s+(\d+)", output)
    rescued = int(rescued_line.group(1)) if rescued_line else 0
    assert (int(split.group(1)), int(split.group(2)), int(split.group(3))) == (2 + rescued, 4 - rescued, 2), output
    assert rescued < 4, "at least one deferred call went through a batch"
    assert re.search(r"deadlines met\s+6 of 6 deferred calls", output), output
    totals = savings_totals(stack)
    assert totals["requests"] == 8
    assert amount(output, "list cost") == D(totals["list_usd"])
    assert amount(output, "paid cost") == D(totals["paid_usd"])
    assert amount(output, "saved") == D(totals["saved_usd"]) > 0
    percent = re.search(r"saved\s+\$[0-9.,]+ \(([0-9.]+)%\)", output)
    assert percent is not None
    assert float(percent.group(1)) == pytest.approx(totals["savings_percent"], abs=0.05)
    assert took < 45


def test_status_shows_savings_queues_and_in_flight_batches(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    client = stack.client()
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    stack.configure_simulator(finish_fraction=0.0)  # the next batch stalls: it stays in flight
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-5-mini", messages=[{"role": "user", "content": "later"}], extra_headers={"X-Batch-Deadline": "2h"}
    )
    assert raw.http_response.status_code == 202

    def running_batches() -> list[dict[str, Any]] | None:
        document = httpx.get(
            f"{stack.url}/v1/status", headers={"authorization": f"Bearer {MASTER_KEY}"}, timeout=10
        ).json()
        batches = [batch for queue in document["queues"] for batch in queue["batches"]]
        return batches if batches and batches[0]["state"] == "in_progress" and batches[0]["total"] == 1 else None

    batches = wait_until_sync(running_batches, timeout=20, interval=0.1, what="one batch in progress in the status")
    assert batches[0]["id"].startswith("bgb_")
    assert batches[0]["provider_batch_id"]

    assert main(["status", "--url", stack.url, "--key", MASTER_KEY]) == 0
    output = capsys.readouterr().out
    assert re.search(r"requests 1\s+list \$[0-9.]+\s+paid \$[0-9.]+\s+waste \$0\.00\s+saved \$0\.00", output), output
    assert re.search(r"gpt-5-mini\s+waiting\s+0 .*open batches: 1 in_progress", output), output
    assert re.search(r"gpt-5-mini\s+bgb_\S+\s+in_progress\s+0/1 done \(0%\)\s+1 jobs", output), output

    # straight from Redis: the same picture
    assert main(["status", "--redis-url", stack.settings.redis_url or "", "--config", str(stack.config_path)]) == 0
    direct = capsys.readouterr().out
    assert "requests 1 " in direct
    assert re.search(r"gpt-5-mini\s+bgb_\S+\s+in_progress", direct), direct

    # a team key sees its own team's savings (none) and the queues, but no batch ids
    team_view = httpx.get(
        f"{stack.url}/v1/status", headers={"authorization": f"Bearer {TEAM_KEYS['alpha']}"}, timeout=10
    ).json()
    assert team_view["team"] == "alpha"
    assert team_view["savings"]["totals"]["requests"] == 0
    team_batches = [batch for queue in team_view["queues"] for batch in queue["batches"]]
    assert team_batches
    assert all(batch["id"] is None and batch["provider_batch_id"] is None for batch in team_batches)
    assert httpx.get(f"{stack.url}/v1/status", timeout=10).status_code == 401


def test_status_reports_an_unreachable_server(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--url", "http://127.0.0.1:9"]) == 1
    assert "cannot reach" in capsys.readouterr().err
