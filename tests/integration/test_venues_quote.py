"""Venues, ETAs and quotes against a real Redis and batchgate on loopback: an off-peak call waits in the sync queue
until its window opens (the store's clock injected), a waiting job's ETA follows the learned turnaround, and
`POST /v1/quote`, `batchgate quote` and `POST /v1/policy/explain` answer from the price map without a provider."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis
import redis.asyncio
import yaml

from proxy.cli import main
from proxy.jobs.render import job_object
from proxy.jobs.service import accept, fresh_eta
from proxy.jobs.turnaround import ALL
from proxy.policy.decide import decide
from proxy.policy.facts import RequestFacts
from proxy.policy.lanes import VenueInputs, lane_facts
from proxy.prompt_cache import prefix_of
from proxy.routes.quote import _turnarounds as quote_turnarounds
from proxy.settings import Config
from proxy.store import keys
from proxy.store.shadow_calls import ShadowCall, ShadowCalls
from proxy.store.store import Store
from proxy.worker.process import run_in_app
from tests.integration.test_budgets_stack import AUTH as BUDGETED
from tests.integration.test_budgets_stack import settled_to
from tests.integration.test_savings_reconcile import assert_books_equal_the_bill, savings
from tests.support.deferred_env import ALICE, chat_body, deferred_env
from tests.support.stack import MASTER_KEY, TEAM_KEYS, Stack, config_document, running_stack, serving
from tests.support.waiting import wait_until_sync

MODEL = "gpt-4o-mini"
OFF_PEAK = {"name": "off-peak", "price_multiplier": 0.25, "window": {"start": "16:30", "end": "00:30"}}
CHEAP = {"name": "cheap", "models": [MODEL], "price_multiplier": 0.3, "turnaround": {"p50": "10m", "p99": "30m"}}
AUTO_RULE = {"name": "auto", "match": {"headers": {"x-route": "auto"}}, "lane": "auto"}
LIST_IN, LIST_OUT = Decimal("1e-6"), Decimal("2e-6")
CALLS = [
    {**chat_body(MODEL, "Summarise the report."), "max_tokens": 100, "deadline": "8h"},
    {**chat_body(MODEL, "Translate the notes into French, please."), "max_tokens": 50, "deadline": "20m"},
    {**chat_body(MODEL, "Now."), "deadline": "5s"},
]


async def test_an_off_peak_call_waits_in_the_sync_queue_until_its_window(redis_client: redis.asyncio.Redis) -> None:
    noon = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    clock = [noon.timestamp()]
    store = Store.create(redis_client, clock=lambda: clock[0])
    config = Config.model_validate(
        config_document("http://127.0.0.1:1", policy={"default": {"lane": "auto"}, "venues": [OFF_PEAK]})
    )
    facts = RequestFacts(caller_name=ALICE.name, team=ALICE.team, model=MODEL, headers={"x-batch-deadline": "8h"})
    lanes = lane_facts(config, MODEL, venues=VenueInputs(None, noon))
    decision = decide(config.policy, facts, lanes, noon)
    assert (decision.lane, decision.venue) == ("sync", "off-peak")
    view = await accept(store, config, ALICE, chat_body(MODEL, "later"), decision)
    assert job_object(view)["eta"] == int(noon.replace(hour=16, minute=30).timestamp())
    tag = keys.tag_of_job(view.id)
    assert await store.outcomes.claim_sync(tag, limit=10, claim_seconds=60) == []  # 12:00: held
    clock[0] = noon.replace(hour=16, minute=29).timestamp()
    assert await store.outcomes.claim_sync(tag, limit=10, claim_seconds=60) == []
    clock[0] = noon.replace(hour=16, minute=30).timestamp()  # the window opens: the sync lane sends it
    assert await store.outcomes.claim_sync(tag, limit=10, claim_seconds=60) == [view.id]


async def test_a_waiting_jobs_eta_follows_the_learned_turnaround(tmp_path: Path, redis_url: str) -> None:
    sections = {"batching": {"max_wait": "10m", "turnaround_estimate": "1h"}, "worker": {"turnaround_min_batches": 3}}
    async with deferred_env(tmp_path, redis_url, **sections) as env:
        book = env.runtime.turnarounds
        assert book is not None
        view = await env.accept(chat_body(MODEL, "eta"), deadline_in=6 * 3600)
        assert view.eta is not None
        assert view.eta > view.created_at + 3600
        for _ in range(3):
            await book.observe(MODEL, jobs=5, seconds=60.0)  # learned: batches take about a minute
        stored = await env.store.jobs.get(view.id)
        assert stored is not None
        fresh = await fresh_eta(env.store, book, stored)
        assert fresh.eta is not None
        assert fresh.eta_p90 is not None
        assert view.created_at + 600 < fresh.eta < view.created_at + 600 + 120
        assert fresh.eta <= fresh.eta_p90 < view.eta


async def test_a_quote_gives_the_batch_lane_the_turnaround_the_lane_choice_gives_it(
    tmp_path: Path, redis_url: str
) -> None:
    # lane_rule expected_cost: a call takes the batch lane when the turnaround at the break-even level (0.5 here:
    # no flex) plus cancel_lead fits; a quote that demanded the 99% quantile would call deferrable calls sync
    sections = {"worker": {"turnaround_min_batches": 3}}
    async with deferred_env(tmp_path, redis_url, **sections) as env:
        book = env.runtime.turnarounds
        assert book is not None
        for seconds in [60.0] * 19 + [3000.0]:  # most batches take a minute, one took 50 minutes
            await book.observe(MODEL, jobs=5, seconds=seconds)
        bands = await book.fresh(MODEL)
        chosen_by = book.need_of(bands, MODEL)
        assert chosen_by < bands[ALL].quantile(env.runtime.config.worker.turnaround_confidence)
        quoted = await quote_turnarounds(env.runtime, MODEL)
        assert quoted.learned
        assert quoted.need == pytest.approx(chosen_by)
        assert quoted.median == pytest.approx(bands[ALL].quantile(0.5))


def served_document() -> dict[str, Any]:
    document = config_document(
        "http://127.0.0.1:1",
        policy={"rules": [AUTO_RULE], "venues": [CHEAP]},
        delivery={"default": "async"},
    )
    params = document["model_list"][0]["litellm_params"]
    params.update(input_cost_per_token=1e-6, output_cost_per_token=2e-6)
    params.update(input_cost_per_token_batches=5e-7, output_cost_per_token_batches=1e-6)
    return document


@pytest.fixture
def stack(tmp_path: Path, redis_url: str) -> Iterator[Stack]:
    with serving(served_document(), tmp_path, redis_url, "http://127.0.0.1:1", None) as served:
        yield served


def list_cost(call: dict[str, Any]) -> Decimal:
    """As the router counts: the prompt about four bytes a token, the output its max_tokens."""
    body = {name: value for name, value in call.items() if name != "deadline"}
    return len(orjson.dumps(body)) // 4 * LIST_IN + int(body.get("max_tokens", 0)) * LIST_OUT


def usd(value: Decimal) -> str:
    return f"{value.quantize(Decimal('1e-12')):f}"


def assert_quote(document: dict[str, Any]) -> None:
    first, second, third = (list_cost(call) for call in CALLS)
    total = first + second + third
    assert document["calls"] == 3
    assert document["list_usd"] == usd(total)
    assert document["expected_usd"] == usd(first * Decimal("0.3") + second / 2 + third)
    assert document["saved_usd"] == usd(first * Decimal("0.7") + second / 2)
    assert document["venues_picked"] == {"batch": 1, "cheap": 1, "sync": 1}
    venues = {row["venue"]: row for row in document["venues"]}
    assert (venues["cheap"]["calls"], venues["batch"]["calls"], venues["sync"]["calls"]) == (1, 2, 3)
    assert venues["cheap"]["expected_usd"] == usd(first * Decimal("0.3") + second + third)
    assert venues["batch"]["expected_usd"] == usd(first / 2 + second / 2 + third)
    assert venues["sync"]["saved_usd"] == usd(Decimal(0))
    shares = {row["deadline"]: (row["deferrable"], row["calls"]) for row in document["deadlines"]}
    assert shares == {"8h": (1, 1), "20m": (1, 1), "5s": (0, 1)}
    assert document["turnarounds"][MODEL]["learned"] is False


def test_quote_endpoint_and_cli_price_calls_from_the_price_map(
    stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jsonl = "\n".join(orjson.dumps(call).decode() for call in CALLS) + "\n"
    auth = {"authorization": f"Bearer {MASTER_KEY}"}
    with httpx.Client(base_url=stack.url, headers=auth, timeout=30) as client:
        assert_quote(client.post("/v1/quote", content=jsonl, headers={"content-type": "application/jsonl"}).json())
        assert_quote(client.post("/v1/quote", json=copy.deepcopy(CALLS)).json())
        refused = client.post("/v1/quote", content='{"model": "nope", "messages": []}\n')
        assert refused.status_code == 400
        assert refused.json()["error"]["code"] == "invalid_quote"
        assert httpx.post(stack.url + "/v1/quote", content=jsonl, timeout=30).status_code == 401
    path = tmp_path / "calls.jsonl"
    path.write_text(jsonl)
    config_path = tmp_path / "offline.yaml"
    config_path.write_text(yaml.safe_dump(served_document()))
    assert main(["quote", str(path), "--config", str(config_path), "--json"]) == 0
    assert_quote(orjson.loads(capsys.readouterr().out))
    assert main(["quote", str(path), "--url", stack.url, "--key", MASTER_KEY]) == 0
    printed = capsys.readouterr().out
    assert "3 calls: list $" in printed
    assert "cheap" in printed
    assert "5s" in printed


def test_explain_endpoint_and_a_deferred_jobs_eta(stack: Stack) -> None:
    auth = {"authorization": f"Bearer {MASTER_KEY}"}
    body = chat_body(MODEL, "Which venue?")
    with httpx.Client(base_url=stack.url, headers=auth, timeout=30) as client:
        explained = client.post(
            "/v1/policy/explain", json=body, headers={"x-batch-deadline": "8h", "x-route": "auto"}
        ).json()
        assert (explained["venue"], explained["lane"], explained["rule"]) == ("cheap", "sync", "auto")
        assert [row["venue"] for row in explained["venues"]] == ["cheap", "batch", "sync"]
        assert [row["chosen"] for row in explained["venues"]] == [True, False, False]
        assert explained["venues"][1]["price_share"] == 0.5
        accepted = client.post("/v1/chat/completions", json=body, headers={"x-batch-deadline": "8h"})
        assert accepted.status_code == 202
        job = accepted.json()
        decision = accepted.headers["x-batchgate-decision"]
        assert f"eta={job['eta']}; eta_p90={job['eta_p90']}" in decision
        assert job["created_at"] <= job["eta"] <= job["eta_p90"]
        polled = client.get(f"/v1/deferred/{job['id']}").json()
        assert polled["status"] == "queued"
        assert polled["eta"] >= job["eta"] - 1
        assert "cache=" not in decision  # one message: no prefix to cache


def test_a_prefix_too_short_to_cache_is_reported_in_the_decision_and_explain(stack: Stack) -> None:
    body = {"model": MODEL, "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]}
    prefix = prefix_of(body)
    assert prefix is not None
    expected = f"cache=too_short({prefix.tokens}<1024)"
    auth, deadline = {"authorization": f"Bearer {MASTER_KEY}"}, {"x-batch-deadline": "8h"}
    with httpx.Client(base_url=stack.url, headers=auth, timeout=30) as client:
        explained = client.post("/v1/policy/explain", json=body, headers=deadline).json()
        assert explained["lane"] == "batch"
        assert expected in explained["decision"]
        assert explained["prompt_cache"] == {"status": "too_short", "prefix_tokens": prefix.tokens,
                                             "minimum_tokens": 1024}  # fmt: skip
        accepted = client.post("/v1/chat/completions", json=body, headers=deadline)
        assert accepted.status_code == 202
        assert expected in accepted.headers["x-batchgate-decision"]
        long_body = {**body, "messages": [{"role": "system", "content": "word " * 1200}, body["messages"][1]]}
        cached = client.post("/v1/policy/explain", json=long_body, headers=deadline).json()
        assert cached["prompt_cache"] is None
        assert "cache=" not in cached["decision"]


def test_off_peak_and_declared_venue_calls_are_booked_at_the_price_the_provider_bills(
    tmp_path: Path, redis_url: str
) -> None:
    """An off-peak venue (held for a window that is open now, on both clocks) and a declared tier venue (a
    `service_tier` the provider added later): paid at the venue's price on the books, on the bill (exactly) and on
    the caller's budget."""
    now = datetime.now(UTC)
    start, end = (f"{moment:%H:%M}" for moment in (now - timedelta(hours=1), now + timedelta(hours=2)))
    window = {"start": start, "end": end}
    off_peak = {"name": "off-peak", "models": [MODEL], "price_multiplier": 0.25, "window": window}
    tier = {"service_tier": "economy"}
    economy = {"name": "economy", "models": ["gpt-5-mini"], "price_multiplier": 0.3, "body": tier}
    simulator = {"off_peak_utc": f"{start}-{end}", "off_peak_share": 0.25, "venue_tiers": {"economy": 0.3}}
    policy = {"default": {"lane": "auto"}, "venues": [off_peak, economy]}
    with running_stack(
        tmp_path, redis_url, background=[run_in_app], simulator=simulator, policy=policy, auth=BUDGETED,
        delivery={"default": "async"},
    ) as stack:  # fmt: skip
        ids, auth = [], {"authorization": f"Bearer {TEAM_KEYS['alpha']}", "x-batch-deadline": "8h"}
        for model, venue in ((MODEL, "off-peak"), ("gpt-5-mini", "economy")):
            body = {**chat_body(model, venue), "max_tokens": 20}
            accepted = httpx.post(f"{stack.url}/v1/chat/completions", json=body, headers=auth, timeout=30)
            assert accepted.status_code == 202, accepted.text
            assert f"venue={venue}" in accepted.headers["x-batchgate-decision"]
            ids.append(accepted.json()["id"])
        assert [job["status"] for job in stack.final_jobs(ids)] == ["completed", "completed"]
        report = savings(stack, 2)
        assert_books_equal_the_bill(report, stack.ledger())
        settled_to(stack, Decimal(report["totals"]["paid_usd"]))  # the budget holds settle at the paid price
    shares = {MODEL: Decimal("0.25"), "gpt-5-mini": Decimal("0.3")}
    for row in report["by_model"]:
        listed, paid = Decimal(row["list_usd"]), Decimal(row["paid_usd"])
        assert listed > 0
        assert abs(paid - listed * shares[row["model"]]) <= Decimal("1e-12")
        assert Decimal(row["saved_usd"]) == listed - paid


def test_the_last_hours_of_shadow_traffic_are_quoted_like_a_file_of_calls(
    tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    shadow = {"name": "trial", "match": {"headers": {"x-shadow": "yes"}}, "lane": "batch", "deadline": "2h",
              "shadow": True}  # fmt: skip
    listed = {"gpt-4o-mini": (Decimal("1.5e-7"), Decimal("6e-7"))}  # litellm's list prices
    with running_stack(tmp_path, redis_url, policy={"rules": [shadow]}) as stack:
        auth = {"authorization": f"Bearer {MASTER_KEY}"}
        with httpx.Client(base_url=stack.url, headers=auth, timeout=30) as client:
            usages = []
            for text in ("secret prompt one", "secret prompt two", "secret prompt three"):
                answer = client.post("/v1/chat/completions", json=chat_body(MODEL, text), headers={"x-shadow": "yes"})
                assert "shadow=true" in answer.headers["x-batchgate-decision"]
                usages.append(answer.json()["usage"])
            client.post("/v1/chat/completions", json=chat_body(MODEL, "not in shadow mode")).raise_for_status()

            def quoted() -> dict[str, Any] | None:
                document: dict[str, Any] = client.post("/v1/quote", json={"shadow_hours": 1}).json()
                return document if document["calls"] == 3 else None

            document = wait_until_sync(quoted, timeout=10, interval=0.1, what="3 shadow calls kept")
            assert client.post("/v1/quote", json={"shadow_hours": 0}).status_code == 400
        price_in, price_out = listed[MODEL]
        total = sum(usage["prompt_tokens"] * price_in + usage["completion_tokens"] * price_out for usage in usages)
        assert document["list_usd"] == usd(total)
        assert document["venues_picked"] == {"batch": 3}
        assert document["expected_usd"] == usd(total / 2)
        assert document["deadlines"] == [{"deadline": "2h", "calls": 3, "deferrable": 3, "deferrable_share": 1.0}]
        assert document["source"].startswith("shadow-mode traffic of the last 1h")
        assert main(["quote", "--shadow-hours", "1", "--url", stack.url, "--key", MASTER_KEY, "--json"]) == 0
        printed = orjson.loads(capsys.readouterr().out)
        assert {name: printed[name] for name in ("calls", "list_usd", "deadlines")} == {
            name: document[name] for name in ("calls", "list_usd", "deadlines")
        }
        with redis.Redis.from_url(redis_url) as direct:
            raw = direct.zrange(keys.shadow_calls(), 0, -1)
        assert len(raw) == 3
        assert not any(b"secret" in member for member in raw)  # no prompts kept


async def test_shadow_calls_are_kept_within_a_time_and_a_size_bound(redis_client: redis.asyncio.Redis) -> None:
    kept = ShadowCalls(redis_client, retention=3600, limit=2)
    calls = [ShadowCall(1000.0 + n, MODEL, 10 + n, 5, 60.0) for n in range(3)]
    await kept.add(calls)
    assert await kept.since(0) == calls[1:]  # the size bound: the newest two
    await kept.add([ShadowCall(1002.0 + 3600, MODEL, 1, 1, None)])
    assert [call.at for call in await kept.since(0)] == [1002.0, 4602.0]  # 1001 is older than an hour: dropped
    assert 0 < await redis_client.ttl(keys.shadow_calls()) <= 3601
