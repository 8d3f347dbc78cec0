"""File hygiene against the simulated upstream: uploads and batch outputs carry the configured expiry
(`batching.file_expiry`), and an ended batch's input file is deleted."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import httpx

from proxy.worker.runner import Worker
from tests.support.deferred_env import DeferredEnv, chat_body, deferred_env

HEADERS = {"authorization": "Bearer sk-x"}
EXPIRY = 7200


def file_object(env: DeferredEnv, file_id: str) -> httpx.Response:
    return httpx.get(f"{env.simulator_url}/v1/files/{file_id}", headers=HEADERS, timeout=10)


async def test_uploads_and_outputs_carry_the_configured_expiry_and_an_ended_batchs_input_is_deleted(
    tmp_path: Path, redis_url: str
) -> None:
    async with deferred_env(tmp_path, redis_url, batching={"file_expiry": EXPIRY}) as env:
        client = env.runtime.batch_client("gpt-4o-mini")

        async def one_request() -> AsyncIterator[tuple[str, Mapping[str, Any]]]:
            yield "probe", chat_body("gpt-4o-mini", "probe")

        prepared = await client.prepare(one_request(), metadata={})
        upload = file_object(env, prepared.ref).json()
        assert upload["expires_at"] - upload["created_at"] == EXPIRY  # the upload carried expires_after
        await client.cleanup(prepared.ref)
        assert file_object(env, prepared.ref).status_code == 404

        views = [await env.accept(chat_body("gpt-4o-mini", f"tidy {i}")) for i in range(3)]
        await asyncio.wait_for(Worker(env.runtime, worker_id="w1").run(burst=True), 60)
        finished = await env.store.jobs.get_many([view.id for view in views])
        assert [view.status if view else None for view in finished] == ["completed"] * 3
        [batch] = env.provider_batches()
        assert batch["status"] == "completed"
        assert file_object(env, batch["input_file_id"]).status_code == 404  # deleted once the batch ended
        output = file_object(env, batch["output_file_id"]).json()
        assert output["expires_at"] - output["created_at"] == EXPIRY  # the batch carried output_expires_after


async def test_the_simulator_refuses_an_expiry_openai_refuses(tmp_path: Path, redis_url: str) -> None:
    async with deferred_env(tmp_path, redis_url) as env, httpx.AsyncClient(headers=HEADERS, timeout=10) as http:
        url, upload = f"{env.simulator_url}/v1/files", {"file": ("in.jsonl", b"{}\n")}
        form = {"purpose": "batch", "expires_after[anchor]": "created_at", "expires_after[seconds]": "60"}
        refused = await http.post(url, data=form, files=upload)
        assert (refused.status_code, refused.json()["error"]["param"]) == (400, "expires_after")
        plain = (await http.post(url, data={"purpose": "batch"}, files=upload)).json()
        assert plain["expires_at"] - plain["created_at"] == 30 * 24 * 3600  # no expiry asked: the default
