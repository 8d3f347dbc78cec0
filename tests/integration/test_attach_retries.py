"""Which calls attach to an earlier job, over real HTTP (no worker: the jobs stay queued): an Idempotency-Key
reused with the same body (another body: 422), and an SDK's marked retry of an identical body."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.stack import TEAM_KEYS, Stack, running_stack

ASYNC = {"X-Batch-Deadline": "24h", "Prefer": "respond-async"}
RETRY = "x-stainless-retry-count"


@pytest.fixture
def stack(tmp_path: Path, redis_url: str) -> Iterator[Stack]:
    with running_stack(tmp_path, redis_url) as running:
        yield running


def body(text: str) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}


def post(http: httpx.Client, payload: dict[str, Any], *, team: str = "alpha", **headers: str) -> httpx.Response:
    return http.post(
        "/v1/chat/completions",
        json=payload,
        headers={"authorization": f"Bearer {TEAM_KEYS[team]}", **ASYNC, **headers},
    )


def job_id(response: httpx.Response) -> str:
    assert response.status_code == 202, response.text
    found: str = response.json()["id"]
    return found


def test_an_idempotency_key_reused_with_another_body_is_refused(stack: Stack) -> None:
    with httpx.Client(base_url=stack.url, timeout=30) as http:
        first = job_id(post(http, body("one"), **{"Idempotency-Key": "k-1"}))
        assert job_id(post(http, body("one"), **{"Idempotency-Key": "k-1"})) == first
        reused = post(http, body("two"), **{"Idempotency-Key": "k-1"})
        assert reused.status_code == 422
        assert reused.json()["error"] == {
            "message": "This Idempotency-Key was already used with a different request body.",
            "type": "invalid_request_error",
            "param": None,
            "code": "idempotency_key_reused",
        }
        # the key belongs to its caller: another team's key of the same name is its own
        assert job_id(post(http, body("two"), team="beta", **{"Idempotency-Key": "k-1"})) != first


def test_a_marked_sdk_retry_of_an_identical_body_attaches_to_the_first_job(stack: Stack) -> None:
    with httpx.Client(base_url=stack.url, timeout=30) as http:
        first = job_id(post(http, body("retried"), **{RETRY: "0"}))
        assert job_id(post(http, body("retried"), **{RETRY: "1"})) == first
        assert job_id(post(http, body("retried"), **{RETRY: "2"})) == first
        # not a retry: a second identical call is new work, and a later retry attaches to the latest one
        second = job_id(post(http, body("retried"), **{RETRY: "0"}))
        assert second != first
        assert job_id(post(http, body("retried"), **{RETRY: "1"})) == second
        # another body, another caller, or a malformed count: never attached
        assert job_id(post(http, body("other"), **{RETRY: "1"})) not in (first, second)
        assert job_id(post(http, body("retried"), team="beta", **{RETRY: "1"})) not in (first, second)
        assert job_id(post(http, body("retried"), **{RETRY: "one"})) not in (first, second)
        listed = http.get("/v1/deferred", headers={"authorization": f"Bearer {TEAM_KEYS['alpha']}"}).json()
        assert len(listed["data"]) == 4


def test_attaching_sdk_retries_can_be_turned_off(tmp_path: Path, redis_url: str) -> None:
    with (
        running_stack(tmp_path, redis_url, delivery={"attach_client_retries": False}) as stack,
        httpx.Client(base_url=stack.url, timeout=30) as http,
    ):
        first = job_id(post(http, body("retried"), **{RETRY: "0"}))
        assert job_id(post(http, body("retried"), **{RETRY: "1"})) != first
