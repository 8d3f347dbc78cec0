"""The synchronous lane end to end: official openai client -> batchgate -> simulated upstream, over loopback."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from proxy.simulator.engine import expected_content
from tests.support.stack import MASTER_KEY, PROVIDER_KEY, TEAM_KEYS, Stack, running_stack

MESSAGES = [{"role": "user", "content": "Name three prime numbers."}]


@pytest.fixture
def stack(tmp_path: Path, redis_url: str) -> Iterator[Stack]:
    with running_stack(tmp_path, redis_url, limits={"max_body_bytes": 64 * 1024}) as running:
        yield running


def test_plain_completion_is_the_upstream_answer_to_this_request(stack: Stack) -> None:
    client = stack.client()
    for question in ("What is 2+2?", "Spell 'batch' backwards."):
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": question}]}
        completion = client.chat.completions.create(**body)  # type: ignore[call-overload]
        assert completion.choices[0].message.content == expected_content(body)
        assert completion.usage is not None
        assert completion.usage.prompt_tokens > 0
        assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens


def test_streaming_completion_arrives_as_server_sent_events(stack: Stack) -> None:
    body = {"model": "gpt-5-mini", "messages": MESSAGES}
    chunks = list(
        stack.client().chat.completions.create(
            model="gpt-5-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )  # type: ignore[call-overload]
    )
    assert len(chunks) > 3
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == expected_content(body)
    assert chunks[-1].usage is not None


async def test_async_client_and_team_keys(stack: Stack) -> None:
    async with stack.async_client(TEAM_KEYS["alpha"]) as client:
        completion = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    assert completion.choices[0].message.content == expected_content({"model": "gpt-4o-mini", "messages": MESSAGES})


@pytest.mark.parametrize("authorization", [None, "Bearer sk-wrong-key", f"Basic {MASTER_KEY}", "Bearer"])
def test_missing_or_wrong_key_gets_401_in_openai_shape(stack: Stack, authorization: str | None) -> None:
    headers = {"content-type": "application/json"}
    if authorization is not None:
        headers["authorization"] = authorization
    response = httpx.post(
        stack.url + "/v1/chat/completions",
        headers=headers,
        json={"model": "gpt-4o-mini", "messages": MESSAGES},
    )
    assert response.status_code == 401
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"


def test_openai_client_sees_authentication_error(stack: Stack) -> None:
    with pytest.raises(openai.AuthenticationError):
        stack.client("sk-not-a-key").chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]


BAD_INPUTS = [
    pytest.param(b"{not json", "application/json", 400, None, id="not-json"),
    pytest.param(b"[1, 2]", "application/json", 400, None, id="not-an-object"),
    pytest.param(b'{"messages": [{"role": "user", "content": "x"}]}', "application/json", 400, "model", id="no-model"),
    pytest.param(b'{"model": "gpt-4o-mini"}', "application/json", 400, "messages", id="no-messages"),
    pytest.param(b'{"model": 7, "messages": []}', "application/json", 400, "model", id="model-wrong-type"),
    pytest.param(b'{"model": "gpt-4o-mini", "messages": "hi"}', "application/json", 400, "messages", id="messages-str"),
    pytest.param(b'{"model": "gpt-4o-mini", "messages": [1]}', "application/json", 400, "messages[0]", id="msg-type"),
    pytest.param(
        b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}',
        "application/json",
        400,
        "temperature",
        id="temperature-str",
    ),
    pytest.param(
        b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}',
        "application/json",
        400,
        "stream",
        id="stream-str",
    ),
    pytest.param(
        b'{"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]}',
        "application/json",
        404,
        "model",
        id="unknown-model",
    ),
    pytest.param(b"model=gpt-4o-mini", "application/x-www-form-urlencoded", 415, None, id="form-body"),
    pytest.param(b'{"model": "gpt-4o-mini"}', "text/plain", 415, None, id="text-plain"),
    pytest.param(b"{}" + b" " * (70 * 1024), "application/json", 413, None, id="too-large"),
]


@pytest.mark.parametrize(("content", "content_type", "status", "param"), BAD_INPUTS)
def test_bad_input_gets_a_4xx_openai_error(
    stack: Stack, content: bytes, content_type: str, status: int, param: str | None
) -> None:
    response = httpx.post(
        stack.url + "/v1/chat/completions",
        content=content,
        headers={"authorization": f"Bearer {MASTER_KEY}", "content-type": content_type},
    )
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    assert error["param"] == param
    assert "Traceback" not in response.text


def test_unknown_route_and_method_are_openai_shaped(stack: Stack) -> None:
    missing = httpx.get(stack.url + "/v1/nothing-here", headers={"authorization": f"Bearer {MASTER_KEY}"})
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    wrong_method = httpx.get(stack.url + "/v1/chat/completions", headers={"authorization": f"Bearer {MASTER_KEY}"})
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"]["type"] == "invalid_request_error"


def test_upstream_client_error_is_passed_on_with_its_status(stack: Stack) -> None:
    with stack.simulator() as simulator:
        simulator.post("/_sim/fail-next", json={"count": 1, "status": 400}).raise_for_status()
    with pytest.raises(openai.BadRequestError) as raised:
        stack.client().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    assert raised.value.status_code == 400


def test_upstream_429_and_500_are_retried_within_budget(stack: Stack) -> None:
    with stack.simulator() as simulator:
        simulator.post("/_sim/fail-next", json={"count": 1, "status": 429}).raise_for_status()
        simulator.post("/_sim/fail-next", json={"count": 1, "status": 500}).raise_for_status()
    completion = stack.client().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    assert completion.choices[0].message.content


def test_upstream_failure_beyond_the_retry_budget_is_reported(stack: Stack) -> None:
    with stack.simulator() as simulator:
        simulator.post("/_sim/fail-next", json={"count": 5, "status": 503}).raise_for_status()
    with pytest.raises(openai.InternalServerError) as raised:
        stack.client().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    assert raised.value.status_code == 503


def test_provider_key_never_reaches_responses_or_logs(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with stack.simulator() as simulator:
        simulator.post("/_sim/fail-next", json={"count": 1, "status": 401}).raise_for_status()
    response = httpx.post(
        stack.url + "/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": MESSAGES},
        headers={"authorization": f"Bearer {MASTER_KEY}"},
    )
    assert response.status_code == 502  # the provider refused batchgate's key, not the caller's
    assert response.json()["error"]["code"] == "upstream_authentication_error"
    assert response.json()["error"]["type"] == "upstream_error"
    assert PROVIDER_KEY not in response.text
    assert PROVIDER_KEY not in caplog.text
    assert MASTER_KEY not in caplog.text


def test_request_id_is_returned_and_logged(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="batchgate.access")
    response = httpx.post(
        stack.url + "/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": MESSAGES},
        headers={"authorization": f"Bearer {TEAM_KEYS['beta']}", "x-request-id": "trace-42"},
    )
    assert response.status_code == 200
    assert response.headers["x-batchgate-request-id"] == "trace-42"
    # x-request-id is the upstream's own request id now (passed through), no longer batchgate's
    assert response.headers["x-request-id"].startswith("req_")
    assert response.headers.get_list("x-request-id") == [response.headers["x-request-id"]]
    assert response.headers["x-batchgate-decision"].startswith("lane=sync")
    health = httpx.get(stack.url + "/v1/models", headers={"authorization": f"Bearer {TEAM_KEYS['beta']}",
                                                          "x-request-id": "trace-43"})  # fmt: skip
    assert health.headers["x-request-id"] == health.headers["x-batchgate-request-id"] == "trace-43"
    records = [r for r in caplog.records if getattr(r, "request_id", None) == "trace-42"]
    assert len(records) == 1
    assert records[0].__dict__["team"] == "beta"
    assert records[0].__dict__["model"] == "gpt-4o-mini"
    assert records[0].__dict__["status"] == 200


def test_models_health_and_readiness(stack: Stack) -> None:
    models = stack.client().models.list()
    assert sorted(model.id for model in models.data) == ["gpt-4o-mini", "gpt-5-mini"]
    assert httpx.get(stack.url + "/healthz").json()["status"] == "ok"
    ready = httpx.get(stack.url + "/readyz")
    assert ready.status_code == 200
    assert ready.json()["redis"] == "ok"
