"""Bad input over real HTTP gets a 4xx in OpenAI's error shape, never a 500, and a 500 keeps the connection.

One test per kind of fault found (issue 14): a non-ASCII or enormous `Prefer: wait`, an RFC 3339 deadline that
leaves the years 1-9999 once in UTC, an unbounded report range, a callback host in full-width digits and dots,
and a message content nested hundreds of levels deep on the deferred and the sync path.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI

from proxy.app import install_error_handlers
from proxy.errors import INTERNAL_MESSAGE, error_body
from proxy.http_protocol import OpenAIErrorHttpToolsProtocol
from tests.support.servers import ServerThread
from tests.support.stack import MASTER_KEY, Stack, running_stack

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
DEFER = {"X-Batch-Deadline": "4h"}


@pytest.fixture
def stack(tmp_path: Path, redis_url: str) -> Iterator[Stack]:
    # no allow-listed hosts, so the SSRF guard decides; max_wait 0 so a long-poll answers at once
    delivery = {"max_wait": "0s", "webhook": {"secret": SECRET, "allow_hosts": []}}
    with running_stack(tmp_path, redis_url, delivery=delivery) as live:
        yield live


@pytest.fixture
def http(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.url, headers={"authorization": f"Bearer {MASTER_KEY}"}, timeout=30) as client:
        yield client


def assert_openai_error(response: httpx.Response, status: int, param: str | None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str)
    assert error["message"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    return dict(error)


def nested(levels: int) -> Any:
    content: Any = [{"type": "text", "text": "deep"}]
    for _ in range(levels):
        content = [content]
    return content


@pytest.mark.parametrize(
    "deadline", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "1e400", "9" * 5000, "²h"]
)
def test_a_deadline_outside_what_can_be_represented_is_a_400(http: httpx.Client, deadline: str) -> None:
    response = http.post("/v1/chat/completions", json=BODY, headers={"X-Batch-Deadline": deadline.encode()})
    assert assert_openai_error(response, 400, "X-Batch-Deadline")["code"] == "invalid_deadline"


@pytest.mark.parametrize("since", ["1e12", "inf", "-inf", "nan", "1e308", "99999999999d", "0001-01-01T00:00:00+01:00"])
@pytest.mark.parametrize("path", ["/v1/savings", "/v1/status"])
def test_a_report_range_out_of_bounds_is_a_400(http: httpx.Client, path: str, since: str) -> None:
    assert_openai_error(http.get(path, params={"since": since}), 400, "since")
    assert_openai_error(http.get(path, params={"until": since}), 400, "until")


FULL_WIDTH_HOSTS = [
    "127\u30020\u30020\u30021",  # ideographic full stops
    "\uff11\uff12\uff17.\uff10.\uff10.\uff11",  # full-width digits
    "127\uff0e0\uff0e0\uff0e1",  # full-width full stops
    "\u24db\u24de\u24d2\u24d0\u24db\u24d7\u24de\u24e2\u24e3",  # circled letters: localhost
    "a..b",  # an empty label IDNA refuses
]


@pytest.mark.parametrize("host", FULL_WIDTH_HOSTS)
def test_a_callback_host_is_normalised_before_the_ssrf_check(http: httpx.Client, host: str) -> None:
    url = f"http://{host}/hook".encode()
    response = http.post("/v1/chat/completions", json=BODY, headers={**DEFER, "X-Batch-Callback-Url": url})
    assert assert_openai_error(response, 400, "X-Batch-Callback-Url")["code"] == "callback_url_refused"


def test_a_callback_header_that_is_not_utf8_is_a_400(http: httpx.Client) -> None:
    response = http.post(
        "/v1/chat/completions", json=BODY, headers={**DEFER, "X-Batch-Callback-Url": b"http://\xff\xfe/hook"}
    )
    assert assert_openai_error(response, 400, "X-Batch-Callback-Url")["code"] == "invalid_header"


@pytest.mark.parametrize("levels", [100, 300, 900, 2000])
@pytest.mark.parametrize("headers", [DEFER, {}], ids=["deferred", "sync"])
def test_content_nested_hundreds_of_levels_deep_is_a_400(
    http: httpx.Client, levels: int, headers: dict[str, str]
) -> None:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": nested(levels)}]}
    headers = {**headers, "content-type": "application/json"}
    response = http.post("/v1/chat/completions", content=_dumps_deep(body), headers=headers)
    # past orjson's reading limit (1,024 levels) the body is not JSON batchgate can read, so no param is named
    error = assert_openai_error(response, 400, "messages" if levels < 1000 else None)
    assert error["code"] == ("invalid_value" if levels < 1000 else "invalid_json")


def _dumps_deep(body: dict[str, Any]) -> bytes:
    """orjson refuses to write more than 254 levels; the JSON is built by hand past that."""
    levels = 0
    content = body["messages"][0]["content"]
    while isinstance(content, list) and len(content) == 1 and isinstance(content[0], list):
        levels += 1
        content = content[0]
    inner = orjson.dumps(content).decode()
    return (
        '{"model":"gpt-4o-mini","messages":[{"role":"user","content":' + "[" * levels + inner + "]" * levels + "}]}"
    ).encode()


@pytest.mark.parametrize("wait", ["²", "9" * 5000, "2147483649", "-1", "1.5", ""])
def test_a_malformed_or_out_of_range_prefer_wait_is_a_400_and_makes_no_job(http: httpx.Client, wait: str) -> None:
    before = http.get("/v1/deferred", params={"limit": 100}).json()["data"]
    response = http.post("/v1/chat/completions", json=BODY, headers={**DEFER, "Prefer": f"wait={wait}".encode()})
    assert assert_openai_error(response, 400, "Prefer")["code"] == "invalid_prefer"
    assert http.get("/v1/deferred", params={"limit": 100}).json()["data"] == before


def test_a_malformed_prefer_wait_on_a_poll_is_a_400(http: httpx.Client) -> None:
    job = http.post("/v1/chat/completions", json=BODY, headers={**DEFER, "Prefer": "respond-async"}).json()
    for wait in ["²", "9" * 5000]:
        polled = http.get(f"/v1/deferred/{job['id']}", headers={"Prefer": f"wait={wait}".encode()})
        assert assert_openai_error(polled, 400, "Prefer")["code"] == "invalid_prefer"
    # the largest delta-seconds is still accepted, and capped at delivery.max_wait (0 here)
    polled = http.get(f"/v1/deferred/{job['id']}", headers={"Prefer": "wait=2147483648"})
    assert polled.status_code == 200
    assert polled.headers["preference-applied"] == "wait=0"


def test_openapi_describes_the_chat_route_with_its_body(http: httpx.Client) -> None:
    document = http.get("/openapi.json").json()
    chat = document["paths"]["/v1/chat/completions"]["post"]
    schema = chat["requestBody"]["content"]["application/json"]["schema"]
    assert schema["required"] == ["model", "messages"]
    assert set(schema["properties"]["model"]["enum"]) == {"gpt-4o-mini", "gpt-5-mini"}
    assert {parameter["name"] for parameter in chat["parameters"]} >= {"x-batch-deadline", "prefer"}
    savings = document["paths"]["/v1/savings"]["get"]
    assert "422" not in savings["responses"]
    assert savings["responses"]["default"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Error"
    }
    assert httpx.get(http.base_url.join("/openapi.json")).status_code == 401  # a key is needed, as for /v1/models


def test_a_500_keeps_the_keep_alive_connection() -> None:
    api = FastAPI()
    install_error_handlers(api)

    @api.get("/boom")
    async def boom() -> None:
        raise RuntimeError("unexpected")

    @api.get("/fine")
    async def fine() -> dict[str, str]:
        return {"ok": "yes"}

    with ServerThread(api) as server, socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        request = "GET {} HTTP/1.1\r\nHost: test\r\n\r\n"
        sock.sendall((request.format("/boom") + request.format("/fine")).encode())
        received = b""
        while received.count(b"HTTP/1.1 ") < 2 or not received.endswith(b'{"ok":"yes"}'):
            chunk = sock.recv(65536)
            assert chunk, f"the server closed the connection after: {received!r}"
            received += chunk
    first, second = received.split(b"HTTP/1.1 ")[1:]
    assert first.startswith(b"500 ")
    assert b"connection: close" not in first.lower()
    assert orjson.loads(first.split(b"\r\n\r\n", 1)[1]) == error_body(INTERNAL_MESSAGE, "server_error")
    assert second.startswith(b"200 ")


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /v1/models HTTP/1.1\r\nHost: test\r\nBad Header Name: x\r\n\r\n",
        b"NOT A REQUEST LINE\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
    ids=["header-name", "request-line", "chunk-size"],
)
def test_malformed_http_gets_an_openai_shaped_400(raw: bytes) -> None:
    api = FastAPI()
    with (
        ServerThread(api, http=OpenAIErrorHttpToolsProtocol) as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock,
    ):
        sock.sendall(raw)
        received = b""
        while chunk := sock.recv(65536):  # the server closes the connection after answering
            received += chunk
    head, body = received.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 400 ")
    assert b"content-type: application/json" in head.lower()
    error = orjson.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "invalid_http_request"
