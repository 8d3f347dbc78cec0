"""Test controls under `/_sim`: the ledger, runtime knobs, fail-next, calls in flight. No authentication (a test tool).

`GET /_sim/batches` lists every batch on every face (a test counts what was created: a batch created twice shows
twice). `POST /_sim/fail-next {"count": N, "status": S, "body": "..."}` makes the next N synchronous calls fail with S;
with `body`, they answer that text verbatim (text/html), as a broken gateway would, and S may even be 2xx."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from pydantic import ValidationError

from proxy.errors import InvalidRequest
from proxy.simulator.ledger import ledger_report
from proxy.simulator.openai_face import json_body
from proxy.simulator.state import simulator_state

JSON = "application/json"

router = APIRouter(prefix="/_sim")


def _json(payload: Any) -> Response:
    return Response(orjson.dumps(payload), media_type=JSON)


@router.get("/health")
async def health() -> Response:
    return _json({"status": "ok"})


@router.get("/ledger")
async def ledger(request: Request) -> Response:
    engine = simulator_state(request).engine
    engine.settle_all()
    return _json(await asyncio.to_thread(ledger_report, engine.ledger, engine.prices))


@router.get("/in-flight")
async def in_flight(request: Request) -> Response:
    """Synchronous calls the simulator is answering now (during `sync_latency_s`), by their last user text."""
    counts = simulator_state(request).in_flight
    return _json({label: count for label, count in counts.items() if count > 0})


@router.get("/batches")
async def batches(request: Request) -> Response:
    """`{"batches": [{"id", "face", "lines", "status"}]}`, oldest first, across every face."""
    views = list(simulator_state(request).engine.batches_newest_first())
    found = [
        {"id": view.record.id, "face": str(view.record.attributes.get("face") or view.record.options.flavor),
         "lines": len(view.record.lines), "status": view.status.value}
        for view in reversed(views)
    ]  # fmt: skip
    return _json({"batches": found})


@router.post("/reset")
async def reset(request: Request) -> Response:
    simulator_state(request).engine.reset()
    return _json({"reset": True})


@router.get("/config")
async def read_config(request: Request) -> Response:
    return _json(simulator_state(request).engine.options.model_dump())


@router.patch("/config")
async def change_config(request: Request) -> Response:
    changes = await json_body(request)
    if not isinstance(changes, dict):
        raise InvalidRequest("Expected a JSON object of knob names to values.")
    engine = simulator_state(request).engine
    try:
        options = engine.configure(changes)
    except ValidationError as exc:
        raise InvalidRequest(f"Invalid knobs: {exc.errors(include_url=False, include_context=False)}") from exc
    return _json(options.model_dump())


@router.post("/fail-next")
async def fail_next(request: Request) -> Response:
    body = await json_body(request)
    if not isinstance(body, dict):
        raise InvalidRequest('Expected {"count": N, "status": S}.')
    count, status, raw = body.get("count", 1), body.get("status", 500), body.get("body")
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise InvalidRequest("'count' must be a non-negative integer.", param="count")
    if raw is not None and not isinstance(raw, str):
        raise InvalidRequest("'body' must be a string (answered verbatim as text/html).", param="body")
    lowest = 200 if raw is not None else 400  # with a body, even a 200 can be a broken answer
    if not isinstance(status, int) or isinstance(status, bool) or not lowest <= status <= 599:
        raise InvalidRequest(f"'status' must be an HTTP status from {lowest} to 599.", param="status")
    return _json({"pending": simulator_state(request).engine.fail_next(count, status, raw)})
