"""The savings ledger against a real Redis: exact totals, idempotency per job, time ranges, team scoping."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest
import redis.asyncio
from fastapi import FastAPI

from proxy.accounting import Accounting
from proxy.app import install_error_handlers
from proxy.pricing import PriceBook, Usage
from proxy.routes import savings
from proxy.runtime import build_runtime
from proxy.settings import Config, Settings
from proxy.store import keys
from proxy.store.keys import ledger_bucket, ledger_marker
from proxy.store.store import Store

D = Decimal
T0 = datetime(2026, 3, 1, 10, 15, tzinfo=UTC)
STANDARD_USAGE = Usage(1000, 100)
PRICES = PriceBook.from_price_map(
    {"gpt-4o-mini": {"input_cost_per_token": 1.5e-07, "output_cost_per_token": 6e-07}},
    aliases={"mini": "openai/gpt-4o-mini"},
)


def ledger_over(client: redis.asyncio.Redis) -> Accounting:
    return Accounting(Store.create(client).ledger)


async def record(
    accounting: Accounting,
    *,
    team: str = "research",
    model: str = "mini",
    lane: str = "batch",
    usage: Usage = STANDARD_USAGE,
    at: datetime = T0,
    job_id: str | None = None,
    shadow: bool = False,
    outcome: str = "completed",
) -> bool:
    cost = PRICES.cost(model, usage, lane)  # type: ignore[arg-type]
    return await accounting.record(
        team=team, model=model, lane=lane, outcome=outcome, cost=cost, usage=usage, at=at, job_id=job_id, shadow=shadow
    )


async def test_totals_are_exact_and_split_by_team_model_and_lane(redis_client: redis.asyncio.Redis) -> None:
    accounting = ledger_over(redis_client)
    for _ in range(3):
        await record(accounting)
    await record(accounting, lane="sync")
    await record(accounting, team="ops", lane="flex", usage=Usage(10, 10))
    await record(accounting, team="ops", model="mystery", lane="batch")
    report = await accounting.report(T0 - timedelta(hours=1), T0 + timedelta(hours=1))
    batch_one = PRICES.cost("mini", Usage(1000, 100), "batch")
    total = report.total()
    assert total.requests == 6
    assert total.unknown_cost_requests == 1
    expected_list = 4 * batch_one.list_usd + PRICES.cost("mini", Usage(10, 10), "flex").list_usd
    assert total.list_usd == expected_list
    assert report.by("team")["research"].saved_usd == 3 * batch_one.saved_usd == D("0.000315")
    assert report.by("lane")["sync"].saved_usd == 0
    assert report.by("model")["mystery"].unknown_cost_requests == 1
    body = report.to_json()
    assert body["totals"]["list_usd"] == f"{expected_list:.12f}"
    assert body["by_team"][0]["team"] == "ops"
    research = next(row for row in body["rows"] if row["team"] == "research" and row["lane"] == "batch")
    assert research["requests"] == 3
    assert research["savings_percent"] == 50.0
    assert research["prompt_tokens"] == 3000
    assert research["outcomes"] == {"completed": 3}


async def test_recording_the_same_job_twice_counts_once(redis_client: redis.asyncio.Redis) -> None:
    accounting = ledger_over(redis_client)
    job_id = keys.new_job_id("mini")
    assert await record(accounting, job_id=job_id)
    assert not await record(accounting, job_id=job_id)
    assert not await record(accounting, job_id=job_id, at=T0 + timedelta(hours=5))
    assert await record(accounting, job_id=keys.new_job_id("mini"))
    report = await accounting.report(T0 - timedelta(days=1), T0 + timedelta(days=1))
    assert report.total().requests == 2
    assert await redis_client.exists(ledger_marker(job_id)) == 1
    assert await redis_client.pttl(ledger_marker(job_id)) > 0


def test_marker_and_bucket_share_the_jobs_cluster_slot() -> None:
    job_id = keys.new_job_id("mini")
    tag = keys.tag_of_job(job_id)
    assert f"{{{tag}}}" in ledger_marker(job_id)
    assert f"{{{tag}}}" in ledger_bucket(tag, 1)
    assert f"{{{tag}}}" in keys.job(job_id)


async def test_report_covers_whole_hours_in_range(redis_client: redis.asyncio.Redis) -> None:
    accounting = ledger_over(redis_client)
    await record(accounting, at=T0)
    await record(accounting, at=T0 + timedelta(hours=2))
    await record(accounting, at=T0 + timedelta(days=3))
    report = await accounting.report(T0, T0 + timedelta(minutes=1))
    assert report.total().requests == 1
    assert report.since == datetime(2026, 3, 1, 10, tzinfo=UTC)
    assert report.until == datetime(2026, 3, 1, 11, tzinfo=UTC)
    assert (await accounting.report(T0, T0 + timedelta(hours=3))).total().requests == 2
    assert (await accounting.report(T0 - timedelta(days=10), T0 + timedelta(days=10))).total().requests == 3
    assert (await accounting.report(T0 + timedelta(days=5), T0 + timedelta(days=6))).total().requests == 0


async def test_shadow_would_have_saved_is_reported_apart(redis_client: redis.asyncio.Redis) -> None:
    accounting = ledger_over(redis_client)
    await record(accounting, lane="sync")
    await record(accounting, lane="batch", shadow=True)
    report = await accounting.report(T0 - timedelta(hours=1), T0 + timedelta(hours=1))
    assert report.total().requests == 1
    assert report.total().saved_usd == 0
    shadow = report.total(shadow=True)
    assert shadow.requests == 1
    assert shadow.saved_usd == PRICES.cost("mini", Usage(1000, 100), "batch").saved_usd
    assert report.to_json()["shadow"]["totals"]["requests"] == 1


async def test_team_filter(redis_client: redis.asyncio.Redis) -> None:
    accounting = ledger_over(redis_client)
    await record(accounting, team="research")
    await record(accounting, team="ops")
    report = await accounting.report(T0 - timedelta(hours=1), T0 + timedelta(hours=1), team="ops")
    assert set(report.by("team")) == {"ops"}


CONFIG = Config.model_validate(
    {
        "model_list": [{"model_name": "mini", "litellm_params": {"model": "openai/gpt-4o-mini"}}],
        "auth": {
            "master_key": "sk-master",
            "keys": [
                {"name": "alice", "key": "sk-alice", "team": "research"},
                {"name": "bob", "key": "sk-bob", "team": "ops"},
            ],
        },
    }
)


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[httpx.AsyncClient]:
    runtime = build_runtime(Settings(redis_url=redis_url), CONFIG)
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(savings.router)
    app.state.runtime = runtime
    accounting = runtime.accounting
    now = datetime.now(UTC)
    await record(accounting, team="research", at=now)
    await record(accounting, team="ops", at=now, lane="flex")
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
            yield http
    finally:
        await runtime.providers.aclose()
        await runtime.redis.aclose()


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_route_scopes_a_caller_to_its_team(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/savings", headers=auth("sk-alice"))
    assert response.status_code == 200
    body = response.json()
    assert body["team"] == "research"
    assert [row["team"] for row in body["by_team"]] == ["research"]
    assert body["totals"]["requests"] == 1
    denied = await client.get("/v1/savings", params={"team": "ops"}, headers=auth("sk-alice"))
    assert denied.status_code == 403
    assert denied.json()["error"]["param"] == "team"


async def test_route_master_sees_all_and_may_filter(client: httpx.AsyncClient) -> None:
    everything = (await client.get("/v1/savings", headers=auth("sk-master"))).json()
    assert {row["team"] for row in everything["by_team"]} == {"research", "ops"}
    ops = (await client.get("/v1/savings", params={"team": "ops", "since": "2h"}, headers=auth("sk-master"))).json()
    assert [row["team"] for row in ops["by_team"]] == ["ops"]
    assert ops["by_lane"][0]["lane"] == "flex"


async def test_route_rejects_bad_parameters(client: httpx.AsyncClient) -> None:
    for params, param in (
        ({"since": "yesterday"}, "since"),
        ({"until": "2026-13-01T00:00:00Z"}, "until"),
        ({"since": "2026-03-02T00:00:00Z", "until": "2026-03-01T00:00:00Z"}, "since"),
        ({"since": "1000d"}, "since"),
    ):
        response = await client.get("/v1/savings", params=params, headers=auth("sk-master"))
        assert response.status_code == 400, params
        assert response.json()["error"]["type"] == "invalid_request_error"
        assert response.json()["error"]["param"] == param
    assert (await client.get("/v1/savings")).status_code == 401
    assert (await client.get("/v1/savings", headers=auth("sk-wrong"))).status_code == 401
