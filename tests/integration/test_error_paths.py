"""Both ways into the API (the fast chat path and FastAPI's routes) answer errors through the one error map,
over real HTTP: the same OpenAI-shaped 500 for an unexpected exception, with nothing of its cause in it."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from proxy.app import BatchgateApp, install_error_handlers
from proxy.errors import INTERNAL_MESSAGE, NotFound, error_body
from tests.support.servers import ServerThread

LEAKY = "/srv/batchgate/proxy/hidden_module.py"


def app_without_a_runtime() -> BatchgateApp:
    """No lifespan ran, so the chat handler meets an AttributeError (state.runtime) it does not expect."""
    api = FastAPI()
    install_error_handlers(api)

    @api.get("/boom")
    async def boom() -> None:
        raise RuntimeError(f"failed while reading {LEAKY}")

    @api.get("/missing")
    async def missing() -> None:
        raise NotFound("No such thing.", param="id")

    return BatchgateApp(api)


def test_an_unexpected_exception_is_the_same_500_on_both_paths() -> None:
    # A fresh connection per request (test_bad_input.py checks that a 500 keeps the connection open).
    with (
        ServerThread(app_without_a_runtime()) as server,
        httpx.Client(base_url=server.url, timeout=10, limits=httpx.Limits(max_keepalive_connections=0)) as http,
    ):
        fast = http.post("/v1/chat/completions", json={"model": "m", "messages": []})
        routed = http.get("/boom")
        for response in (fast, routed):
            assert response.status_code == 500
            assert response.headers["content-type"] == "application/json"
            assert response.json() == error_body(INTERNAL_MESSAGE, "server_error")
            assert "hidden_module" not in response.text
            assert "Traceback" not in response.text
        assert http.get("/missing").json() == error_body("No such thing.", "invalid_request_error", param="id",
                                                         code="not_found")  # fmt: skip
        wrong_method = http.get("/v1/chat/completions")
        assert wrong_method.status_code == 405
        assert wrong_method.headers["allow"] == "POST"
        assert wrong_method.json()["error"]["code"] == "method_not_allowed"
        unknown = http.get("/nowhere")
        assert unknown.status_code == 404
        assert unknown.json()["error"]["code"] == "not_found"
