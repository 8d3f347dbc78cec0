"""A job as callers see it: the `chat.completion.deferred` object (202 body, GET, list entries, webhooks); a job of
another endpoint is its endpoint's (`embedding.deferred`, with `endpoint` and its ordinary answer inside)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson

from proxy.durations import format_instant
from proxy.endpoints import Endpoint, split_group
from proxy.errors import caller_facing_error
from proxy.store.records import JobView

OBJECT = "chat.completion.deferred"


def job_object(view: JobView) -> dict[str, Any]:
    """The job object; `response` is embedded verbatim (the provider's bytes, never re-encoded)."""
    model, endpoint = split_group(view.model)
    rendered: dict[str, Any] = {
        "id": view.id,
        "object": endpoint.deferred_object,
        "status": view.status,
        "model": model,
        "created_at": int(view.created_at),
        "deadline": format_instant(datetime.fromtimestamp(view.deadline).astimezone()) if view.deadline else None,
        "lane": view.lane,
    }
    held = view.lane == "sync" and view.status == "queued"  # a call held for its venue's window
    if view.eta is not None and view.eta_p90 is not None and (view.lane == "batch" or held) and not view.rescued:
        # When its batch (or its held venue's call) is expected to end (unix seconds), and pessimistically.
        rendered["eta"] = int(view.eta)
        rendered["eta_p90"] = int(view.eta_p90)
    if endpoint is not Endpoint.CHAT_COMPLETIONS:
        rendered["endpoint"] = endpoint.value
    if view.rescued:
        rendered["rescued"] = True
    if view.finished_at is not None:
        rendered["finished_at"] = int(view.finished_at)
    if view.response is not None:
        rendered["response"] = orjson.Fragment(view.response)
    if view.error is not None:
        rendered["error"] = caller_facing_error(view.error)
    if view.upstream_request_id:  # the provider's request id of the batch line (or sync call) that answered
        rendered["upstream_request_id"] = view.upstream_request_id
    return rendered


def job_json(view: JobView) -> bytes:
    return orjson.dumps(job_object(view))


def job_page_json(views: Sequence[JobView], *, has_more: bool) -> bytes:
    """One page of `GET /v1/deferred`: newest first, `last_id` is the cursor for `after`."""
    return orjson.dumps(
        {
            "object": "list",
            "data": [job_object(view) for view in views],
            "first_id": views[0].id if views else None,
            "last_id": views[-1].id if views else None,
            "has_more": has_more,
        }
    )


def location_of(view: JobView) -> str:
    """The job's URL path (the Location header of a 202)."""
    return f"/v1/deferred/{view.id}"
