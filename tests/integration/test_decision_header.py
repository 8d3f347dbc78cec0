"""Every answer of /v1/chat/completions carries `X-Batchgate-Decision`, refusals and errors included.

A call refused before any lane took it says `lane=none; reason=<error code>`; an upstream error passed on says
which lane it came from, as a success would.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.servers import free_port
from tests.support.stack import MASTER_KEY, Stack, running_stack

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
AUTH = {"authorization": f"Bearer {MASTER_KEY}"}
DECISION = "x-batchgate-decision"


@pytest.fixture
def stack(tmp_path: Path, redis_url: str) -> Iterator[Stack]:
    # every sync call upstream answers 429, and the retry policy gives up after one attempt
    with running_stack(
        tmp_path,
        redis_url,
        simulator={"sync_429_rate": 1.0},
        limits={"max_body_bytes": 4096},
        retry={"max_attempts": 1, "base_delay": 0.01, "max_delay": 0.01, "budget": 1},
    ) as live:
        yield live


@pytest.fixture
def http(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.url, timeout=30) as client:
        yield client


def refusal(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    code = response.json()["error"]["code"]
    assert response.headers[DECISION] == f"lane=none; reason={code}"
    return str(code)


def test_each_kind_of_refusal_names_no_lane_and_its_reason(http: httpx.Client) -> None:
    assert refusal(http.post("/v1/chat/completions", json=BODY), 401) == "missing_api_key"
    wrong_key = http.post("/v1/chat/completions", json=BODY, headers={"authorization": "Bearer sk-no"})
    assert refusal(wrong_key, 401) == "invalid_api_key"
    invalid_json = http.post("/v1/chat/completions", content=b"{", headers={**AUTH, "content-type": "application/json"})
    assert refusal(invalid_json, 400) == "invalid_json"
    no_model = http.post("/v1/chat/completions", json={"messages": BODY["messages"]}, headers=AUTH)
    assert refusal(no_model, 400)
    big = {**BODY, "messages": [{"role": "user", "content": "x" * 8192}]}
    assert refusal(http.post("/v1/chat/completions", json=big, headers=AUTH), 413) == "request_too_large"
    assert refusal(http.get("/v1/chat/completions", headers=AUTH), 405) == "method_not_allowed"
    # refused after the policy decided (the call was deferrable), before any lane took it
    bad_prefer = {**AUTH, "X-Batch-Deadline": "4h", "Prefer": "wait=-1"}
    assert refusal(http.post("/v1/chat/completions", json=BODY, headers=bad_prefer), 400) == "invalid_prefer"


def test_an_upstream_error_passed_on_names_the_lane_that_answered(http: httpx.Client) -> None:
    response = http.post("/v1/chat/completions", json=BODY, headers=AUTH)
    assert response.status_code == 429, response.text
    assert response.headers[DECISION].startswith("lane=sync; rule=")


def test_a_store_outage_is_a_503_that_names_no_lane(tmp_path: Path) -> None:
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    with (
        running_stack(tmp_path, dead_redis) as stack,
        httpx.Client(base_url=stack.url, timeout=60, headers=AUTH) as http,
    ):
        response = http.post("/v1/chat/completions", json=BODY, headers={"X-Batch-Deadline": "4h"})
        assert refusal(response, 503) == "service_unavailable"
