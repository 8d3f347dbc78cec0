"""`/v1/responses` through batchgate with the official openai client: the sync lane (plain, streamed, through
litellm), stored responses retrieved / cancelled / deleted at the provider, calls that depend on stored state
kept synchronous with the reason, and deferral by header and by a policy rule through a `/v1/responses` batch
(each answer its own, an ordinary Response object). The mixed chat + embeddings + responses workload that
reconciles with the simulator's ledger is in test_embeddings.py (one stack for all three).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from proxy.worker.process import run_in_app
from tests.integration.test_embeddings import http
from tests.support.stack import TEAM_KEYS, Stack, running_stack

MODEL = "gpt-4o-mini"
LITELLM_MODEL = "responder-via-litellm"  # a provider with no raw path: litellm.aresponses
MODELS = {MODEL: f"openai/{MODEL}", LITELLM_MODEL: f"litellm_proxy/{MODEL}"}
POLICY = {
    "rules": [
        {"name": "team-beta-responses", "match": {"teams": ["beta"], "endpoints": ["responses"]},
         "lane": "batch", "deadline": "1h"},
    ]
}  # fmt: skip
DEFERRED = {"X-Batch-Deadline": "1h", "Prefer": "respond-async"}


@pytest.fixture
def stack(tmp_path: Path, redis_url: str) -> Iterator[Stack]:
    with running_stack(tmp_path, redis_url, background=[run_in_app], policy=POLICY, models=MODELS) as running:
        yield running


def test_sync_plain_streamed_stored_and_kept_sync_by_state(stack: Stack) -> None:
    client = stack.client()
    raw = client.responses.with_raw_response.create(model=MODEL, input="the sky is blue", max_output_tokens=64)
    assert raw.headers["x-batchgate-decision"].startswith("lane=sync; rule=default; endpoint=responses")
    plain = raw.parse()
    assert plain.object == "response"
    assert plain.status == "completed"
    assert plain.id.startswith("resp_")
    assert plain.output_text.endswith("the sky is blue")
    assert plain.usage is not None
    assert plain.usage.output_tokens > 0
    assert plain.usage.total_tokens == plain.usage.input_tokens + plain.usage.output_tokens
    # streamed: the event sequence relayed as it came, the same answer, usage in response.completed
    with client.responses.stream(model=MODEL, input="the sky is blue", max_output_tokens=64) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds
    assert final.output_text == plain.output_text
    assert final.usage == plain.usage
    # stored at the provider: retrieved, not cancellable (not background), deleted
    assert client.responses.retrieve(plain.id).output_text == plain.output_text
    with pytest.raises(openai.BadRequestError):
        client.responses.cancel(plain.id)
    client.responses.delete(plain.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(plain.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve("job_not_a_stored_response")
    # a chain on stored state is never batched, even when the caller can wait: the sync lane, and why
    chained = client.responses.with_raw_response.create(
        model=MODEL, input="and the sea?", previous_response_id=final.id, extra_headers={"X-Batch-Deadline": "1h"}
    )
    decision = chained.headers["x-batchgate-decision"]
    assert decision.startswith("lane=sync"), decision
    assert "its batch lane cannot carry `previous_response_id`" in decision, decision
    [job] = stack.final_jobs([chained.http_response.json()["id"]])
    assert (job["status"], job["lane"]) == ("completed", "sync"), job
    assert job["response"]["previous_response_id"] == final.id
    # through litellm.aresponses (a provider with no raw Responses path)
    bridged = client.responses.create(model=LITELLM_MODEL, input="the sky is blue", max_output_tokens=64)
    assert bridged.output_text == plain.output_text
    assert bridged.usage is not None
    assert bridged.usage.input_tokens == plain.usage.input_tokens


def test_deferred_by_header_and_by_rule_each_answer_its_own(stack: Stack) -> None:
    client = stack.client()
    texts = [f"question {n}" for n in range(3)]
    job_ids = []
    for text in texts:
        raw = client.responses.with_raw_response.create(model=MODEL, input=text, extra_headers=DEFERRED)
        assert raw.http_response.status_code == 202, raw.http_response.text
        job = raw.http_response.json()
        assert job["object"] == "response.deferred"
        assert job["endpoint"] == "responses"
        assert job["model"] == MODEL
        job_ids.append(job["id"])
    for text, job in zip(texts, stack.final_jobs(job_ids), strict=True):
        assert job["status"] == "completed", job
        assert job["lane"] == "batch", job
        answer = job["response"]
        assert answer["object"] == "response"
        assert answer["output"][0]["content"][0]["text"].endswith(text)
        direct = client.responses.create(model=MODEL, input=text)
        assert answer["output"][0]["content"][0]["text"] == direct.output_text
        assert direct.usage is not None
        assert (answer["usage"]["input_tokens"], answer["usage"]["output_tokens"]) == (
            direct.usage.input_tokens,
            direct.usage.output_tokens,
        )
    # by a rule, held: an ordinary Response object on the same connection
    beta = stack.client(TEAM_KEYS["beta"])
    held = beta.responses.with_raw_response.create(model=MODEL, input="held question")
    assert "rule=team-beta-responses" in held.headers["x-batchgate-decision"]
    assert "lane=batch" in held.headers["x-batchgate-decision"]
    assert held.parse().output_text.endswith("held question")
    with http(stack, TEAM_KEYS["beta"]) as raw_client:
        stored = raw_client.post("/v1/responses", json={"model": MODEL, "input": "keep it", "store": True})
        assert stored.status_code == 200
        assert "store: true" in stored.headers["x-batchgate-decision"]
    with stack.simulator() as simulator:
        batches = simulator.get("/v1/batches", headers={"authorization": "Bearer x"}).json()["data"]
    assert {batch["endpoint"] for batch in batches} == {"/v1/responses"}
