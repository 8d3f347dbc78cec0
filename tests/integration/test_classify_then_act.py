"""Classify, then act (issue 11 point 2), end to end against the strict simulator with the official openai client
as caller and the worker running in the API process:

- an account problem (quota, billing hard limit, a refused key) stops batch submission at once, is reported by
  /readyz and a gauge, and fails the waiting jobs at their deadline with an error naming it; a config reload
  clears it;
- a batch refused for one named line fails that job alone; the others are answered from the batch lane;
- a batch refused without a line named is bisected until the refused request is alone;
- an Azure-shaped upstream carries a batch from start to finish.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from proxy.config_watch import watch_config
from proxy.simulator.engine import expected_content
from proxy.worker.accounts import caller_code
from proxy.worker.process import run_in_app
from tests.support.stack import MASTER_KEY, PROVIDER_KEY, Stack, running_stack
from tests.support.waiting import wait_until_sync

MODEL = "gpt-4o-mini"
FAST = {"turnaround_s": 0.6, "validating_s": 0.1, "finalizing_s": 0.1}
WORKER = {"poll_interval_min": 0.1, "poll_interval_max": 0.3, "tick": 0.1, "safety_margin": 1, "lease": 5}
BAD_ROLE = "narrator"  # the simulator's chat validation refuses it (`messages[0].role`); batchgate's accept does not


def body(text: str, *, role: str = "user") -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": role, "content": text}]}


async def defer(stack: Stack, bodies: list[dict[str, Any]], deadline: str) -> list[str]:
    """Send the calls at once (one flush takes them all) and return their job ids."""
    async with stack.async_client(timeout=30) as client:

        async def one(request: dict[str, Any]) -> str:
            raw = await client.chat.completions.with_raw_response.create(
                **request, extra_headers={"X-Batch-Deadline": deadline}
            )
            assert raw.status_code == 202, raw.text
            return raw.headers["x-batchgate-job"]

        return list(await asyncio.gather(*(one(request) for request in bodies)))


def provider_batches(stack: Stack, key: str = PROVIDER_KEY) -> list[dict[str, Any]]:
    with stack.simulator() as client:
        page = client.get("/v1/batches", params={"limit": 100}, headers={"authorization": f"Bearer {key}"})
    page.raise_for_status()
    batches: list[dict[str, Any]] = page.json()["data"]
    return batches


def readiness(stack: Stack) -> httpx.Response:
    return httpx.get(stack.url + "/readyz", timeout=10)


def ledger(stack: Stack) -> dict[str, Any]:
    models: dict[str, Any] = stack.ledger()["models"]
    return models.get(MODEL, {})


@pytest.fixture
def stack_factory(tmp_path: Path, redis_url: str) -> Any:
    def make(simulator: dict[str, Any] | None = None, *, reloads: bool = False, **sections: Any) -> Any:
        worker = {**WORKER, **sections.pop("worker", {})}
        background = [run_in_app, watch_config] if reloads else [run_in_app]
        return running_stack(
            tmp_path, redis_url, background=background, simulator={**FAST, **(simulator or {})},
            worker=worker, batching={"max_wait": "0.5s", "turnaround_estimate": "2s"}, **sections,
        )  # fmt: skip

    return make


ACCOUNT_CASES = {
    "insufficient_quota": ({"insufficient_quota": True}, "insufficient_quota"),
    "billing_hard_limit_reached": ({"billing_hard_limit_reached": True}, "billing_hard_limit_reached"),
    "revoked_key": ({"api_key": "sk-another-key-than-batchgate-has"}, "invalid_api_key"),
}


@pytest.mark.parametrize("case", list(ACCOUNT_CASES))
def test_an_account_problem_stops_submission_and_fails_jobs_at_their_deadline(stack_factory: Any, case: str) -> None:
    knobs, code = ACCOUNT_CASES[case]
    with stack_factory(simulator=knobs, worker={"account_probe_interval": 600}) as stack:
        job_ids = asyncio.run(defer(stack, [body("quota one"), body("quota two")], deadline="6s"))

        def stopped() -> dict[str, Any] | None:
            document: dict[str, Any] = readiness(stack).json()
            return document if document.get("account_problems") else None

        document = wait_until_sync(stopped, timeout=20, interval=0.05, what="readyz reporting the account problem")
        assert readiness(stack).status_code == 200  # sync calls and other providers still work: see operations.md
        [problem] = document["account_problems"]
        assert problem["group"] == MODEL
        assert problem["code"] == code
        assert "account problem" in problem["message"]
        assert PROVIDER_KEY[-4:] not in readiness(stack).text  # unauthenticated: not even the provider's message
        with stack.simulator() as sim:
            uploads = sim.get("/v1/files", headers={"authorization": f"Bearer {knobs.get('api_key', PROVIDER_KEY)}"})
        jobs = stack.final_jobs(job_ids, timeout=30)
        for job in jobs:
            assert job["status"] == "failed", job
            if case == "revoked_key":
                assert job["error"]["code"] == "upstream_authentication_error"  # not the caller's key
            assert job["error"]["type"] == "provider_account_problem"
            assert job["error"]["code"] == caller_code(problem["code"])
            assert "account problem" in job["error"]["message"]
            assert MODEL in job["error"]["message"]
        if "api_key" not in knobs:
            # one submission, never a retry loop: no batch upstream, and no sync call at list price either
            assert provider_batches(stack) == []
            assert uploads.status_code == 200
            assert ledger(stack).get("sync", {}).get("requests", 0) == 0

        def gauge() -> str | None:
            text = httpx.get(stack.url + "/metrics", timeout=10).text
            line = f'batchgate_provider_account_problem{{code="{problem["code"]}",group="{MODEL}"}} 1.0'
            return line if line in text else None

        wait_until_sync(gauge, timeout=10, interval=0.2, what="the account-problem gauge")


def test_a_config_reload_clears_the_account_problem_and_batches_flow_again(stack_factory: Any) -> None:
    knobs = {"insufficient_quota": True}
    with stack_factory(simulator=knobs, reloads=True, worker={"account_probe_interval": 600}) as stack:
        asyncio.run(defer(stack, [body("before the fix")], deadline="1h"))
        wait_until_sync(lambda: readiness(stack).json().get("account_problems"), timeout=20, interval=0.05,
                        what="the account problem")  # fmt: skip
        stack.configure_simulator(insufficient_quota=False)  # the operator topped the account up
        document = yaml.safe_load(stack.config_path.read_text())
        document["auth"]["keys"].append({"name": "reload-key", "key": "sk-test-reload-3333", "team": "alpha"})
        stack.config_path.write_text(yaml.safe_dump(document))
        wait_until_sync(lambda: not readiness(stack).json().get("account_problems"), timeout=20, interval=0.1,
                        what="the reload clearing the problem")  # fmt: skip
        [job_id] = asyncio.run(defer(stack, [body("after the fix")], deadline="1h"))
        [job] = stack.final_jobs([job_id], timeout=30)
        assert job["status"] == "completed"
        assert ledger(stack)["batch"]["requests"] >= 1


def test_a_probe_after_the_interval_resumes_submission_once_the_account_is_fixed(stack_factory: Any) -> None:
    with stack_factory(simulator={"insufficient_quota": True}, worker={"account_probe_interval": 1}) as stack:
        [job_id] = asyncio.run(defer(stack, [body("waits for the probe")], deadline="1h"))
        wait_until_sync(lambda: readiness(stack).json().get("account_problems"), timeout=20, interval=0.05,
                        what="the account problem")  # fmt: skip
        stack.configure_simulator(insufficient_quota=False)
        [job] = stack.final_jobs([job_id], timeout=30)
        assert job["status"] == "completed"
        assert not readiness(stack).json().get("account_problems")
        assert [batch["status"] for batch in provider_batches(stack)] == ["completed"]


def test_a_batch_refused_for_a_named_line_answers_every_other_job_from_the_batch_lane(stack_factory: Any) -> None:
    with stack_factory() as stack:
        requests = [body(f"good {i}") for i in range(4)] + [body("poison", role=BAD_ROLE)]
        job_ids = asyncio.run(defer(stack, requests, deadline="1h"))
        jobs = stack.final_jobs(job_ids, timeout=40)
        *good, bad = jobs
        assert bad["status"] == "failed"
        assert bad["error"]["type"] == "invalid_request_error"
        assert BAD_ROLE in bad["error"]["message"]
        for job, request in zip(good, requests, strict=False):
            assert job["status"] == "completed", job
            assert job["response"]["choices"][0]["message"]["content"] == expected_content(request)
        states = sorted(batch["status"] for batch in provider_batches(stack))
        assert states == ["completed", "failed"]
        tiers = ledger(stack)
        assert tiers["batch"]["requests"] == 4
        assert tiers.get("sync", {}).get("requests", 0) == 0


def test_a_refused_line_the_provider_does_not_name_is_bisected_out(stack_factory: Any) -> None:
    with stack_factory(simulator={"validation_names_line": False}) as stack:
        requests = [body(f"fine {i}") for i in range(3)] + [body("hidden poison", role=BAD_ROLE)]
        job_ids = asyncio.run(defer(stack, requests, deadline="1h"))
        jobs = stack.final_jobs(job_ids, timeout=60)
        assert [job["status"] for job in jobs] == ["completed"] * 3 + ["failed"]
        assert BAD_ROLE in jobs[-1]["error"]["message"]
        batches = provider_batches(stack)
        assert all(error["line"] is None for batch in batches for error in (batch["errors"] or {}).get("data", []))
        # 4 jobs -> halves of 2 -> the poisoned half split again: three refused batches, two that ran
        assert sorted(batch["status"] for batch in batches) == ["completed"] * 2 + ["failed"] * 3
        tiers = ledger(stack)
        assert tiers["batch"]["requests"] == 3
        assert tiers.get("sync", {}).get("requests", 0) == 0


def test_an_azure_shaped_batch_runs_start_to_finish_through_the_worker(stack_factory: Any) -> None:
    with stack_factory(simulator={"flavor": "azure"}) as stack:
        requests = [body(f"azure {i}") for i in range(3)]
        job_ids = asyncio.run(defer(stack, requests, deadline="1h"))
        jobs = stack.final_jobs(job_ids, timeout=40)
        for job, request in zip(jobs, requests, strict=True):
            assert job["status"] == "completed", job
            assert job["response"]["choices"][0]["message"]["content"] == expected_content(request)
        [batch] = provider_batches(stack)
        assert batch["status"] == "Completed"  # the Azure spelling, read leniently
        assert ledger(stack)["batch"]["requests"] == 3


ROTATED_KEY = "sk-rotated-elsewhere-0000"
READ_CASES = {
    # the key is revoked upstream while the batch runs: retrieving it answers 401 invalid_api_key
    "retrieve_401": ({"api_key": ROTATED_KEY}, {"api_key": PROVIDER_KEY}, "poll", "invalid_api_key"),
    # a restricted key without the files-read scope: the batch ends, its results download answers 403, code null
    "results_403": ({"files_read_forbidden": True}, {"files_read_forbidden": False}, "results", "http_403"),
}


def job_statuses(stack: Stack, job_ids: list[str]) -> list[str]:
    with httpx.Client(base_url=stack.url, headers={"authorization": f"Bearer {MASTER_KEY}"}, timeout=10) as http:
        return [http.get(f"/v1/deferred/{job_id}").json()["status"] for job_id in job_ids]


def account_gauge(stack: Stack, code: str) -> str | None:
    text = httpx.get(stack.url + "/metrics", timeout=10).text
    line = f'batchgate_provider_account_problem{{code="{code}",group="{MODEL}"}} 1.0'
    return line if line in text else None


@pytest.mark.parametrize("case", list(READ_CASES))
def test_a_401_or_403_on_poll_or_results_stops_the_account_keeps_the_jobs_and_resumes(
    stack_factory: Any, case: str
) -> None:
    broken, fixed, where, code = READ_CASES[case]
    listing_key = str(broken.get("api_key", PROVIDER_KEY))
    with stack_factory(simulator={"turnaround_s": 2.0}, worker={"account_probe_interval": 600}) as stack:
        job_ids = asyncio.run(defer(stack, [body("read one"), body("read two")], deadline="1h"))
        wait_until_sync(lambda: provider_batches(stack), timeout=30, interval=0.05, what="the batch created upstream")
        stack.configure_simulator(**broken)

        def reported() -> dict[str, Any] | None:
            problems = readiness(stack).json().get("account_problems") or []
            return problems[0] if problems else None

        problem = wait_until_sync(reported, timeout=30, interval=0.05, what=f"readyz reporting the {where} problem")
        assert (problem["group"], problem["code"], problem["where"]) == (MODEL, code, where)
        assert readiness(stack).json()["degraded"] is True
        wait_until_sync(lambda: account_gauge(stack, code), timeout=10, interval=0.2, what="the account gauge")
        wait_until_sync(
            lambda: [batch for batch in provider_batches(stack, listing_key) if batch["status"] == "completed"],
            timeout=30, interval=0.1, what="the batch ended upstream",
        )  # fmt: skip
        assert reported() is not None  # still stopped: the calls keep failing
        assert job_statuses(stack, job_ids) == ["submitted"] * 2  # waiting on their batch, none failed
        stack.configure_simulator(**fixed)  # the operator restored the key's access
        jobs = stack.final_jobs(job_ids, timeout=30)
        assert [(job["status"], job["lane"]) for job in jobs] == [("completed", "batch")] * 2
        wait_until_sync(lambda: reported() is None, timeout=10, interval=0.05, what="the problem cleared")
        assert "degraded" not in readiness(stack).json()
        assert [batch["status"] for batch in provider_batches(stack)] == ["completed"]  # the one batch, never again
        tiers = ledger(stack)
        assert tiers["batch"]["requests"] == 2
        assert tiers.get("sync", {}).get("requests", 0) == 0
