"""The reports: GET /v1/savings (the savings ledger over a time range) and GET /v1/status (the same, with the
live queues and in-flight batches). Both are scoped to the caller's team (master: all, and may filter)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
from fastapi import APIRouter
from fastapi.responses import Response

from proxy.accounting import MAX_REPORT_SECONDS
from proxy.auth import Caller
from proxy.durations import parse_duration, parse_instant
from proxy.errors import InvalidRequest, PermissionDenied
from proxy.routes.dependencies import CallerDep, RuntimeDep
from proxy.status import collect_status

router = APIRouter()
DEFAULT_RANGE = timedelta(days=30)


@router.get("/v1/savings")
async def savings(
    runtime: RuntimeDep,
    caller: CallerDep,
    since: str | None = None,
    until: str | None = None,
    team: str | None = None,
) -> Response:
    start, end = report_range(since, until)
    report = await runtime.accounting.report(start, end, team=scoped_team(caller, team))
    return Response(orjson.dumps(report.to_json()), media_type="application/json")


@router.get("/v1/status")
async def status(
    runtime: RuntimeDep,
    caller: CallerDep,
    since: str | None = None,
    until: str | None = None,
    team: str | None = None,
) -> Response:
    """What `batchgate status` prints. Queue and batch counts are shared by every caller of a model; batch ids
    are shown to the master key only."""
    start, end = report_range(since, until)
    document = await collect_status(
        runtime.store,
        runtime.accounting,
        runtime.config,
        since=start,
        until=end,
        team=scoped_team(caller, team),
        with_ids=caller.is_master,
    )
    return Response(orjson.dumps(document), media_type="application/json")


def report_range(since: str | None, until: str | None) -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    end = parse_moment(until, now, param="until") if until else now
    start = parse_moment(since, now, param="since") if since else end - DEFAULT_RANGE
    if start >= end:
        raise InvalidRequest("'since' must be earlier than 'until'.", param="since")
    if (end - start).total_seconds() > MAX_REPORT_SECONDS:
        raise InvalidRequest(f"The range may span at most {MAX_REPORT_SECONDS // 86400} days.", param="since")
    return start, end


def scoped_team(caller: Caller, requested: str | None) -> str | None:
    """The team a report covers: the master key may pick any (or all); everyone else sees their own."""
    if caller.is_master:
        return requested or None
    if requested and requested != caller.team:
        raise PermissionDenied("Your key may only read its own team's savings.", param="team")
    return caller.team


def parse_moment(text: str, now: datetime, *, param: str) -> datetime:
    """An RFC 3339 time, or a duration meaning that long ago ("24h", "7d")."""
    try:
        return parse_instant(text)
    except ValueError:
        pass
    try:
        return now - timedelta(seconds=parse_duration(text))
    except ValueError:
        raise InvalidRequest(
            f"Invalid '{param}': expected an RFC 3339 time (2026-01-31T00:00:00Z) or a duration (24h).",
            param=param,
        ) from None
