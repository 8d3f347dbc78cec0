"""`batchgate status`: the savings report, the live queues and the in-flight batches, in the terminal.

Two ways to read it:
- through the API (default): `GET /v1/status` on a running batchgate, with a caller key. The report is scoped to
  the key as `/v1/savings` is (a team key sees its team's savings; the master key sees every team), and batch
  ids are shown to the master key only. This needs nothing but the URL and a key, like any client.
- straight from Redis (`--redis-url`), for operators on the cluster network: everything, every team.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from proxy.accounting import Accounting
from proxy.jobs.turnaround_book import load_turnarounds, turnaround_json
from proxy.queue_stats import read_queues
from proxy.settings import DEV_MASTER_KEY, Config
from proxy.store.store import Store

DEFAULT_URL = "http://127.0.0.1:8080"
URL_ENV = "BATCHGATE_URL"
KEY_ENV = "BATCHGATE_KEY"
DEFAULT_SINCE = "24h"


async def collect_status(
    store: Store,
    accounting: Accounting,
    config: Config | None,
    *,
    since: datetime,
    until: datetime,
    team: str | None,
    with_ids: bool,
) -> dict[str, Any]:
    """The status document served by `GET /v1/status` and printed by `batchgate status`."""
    report = await accounting.report(since, until, team=team)
    views = await read_queues(store)
    reconciliation = await accounting.last_reconciliations() if with_ids else {}
    now = time.time()
    return {
        "object": "batchgate.status",
        "generated_at": int(now),
        "team": team,
        "savings": report.to_json(),
        "reconciliation": reconciliation,
        "queues": [view.to_json(now, with_ids=with_ids) for view in views],
        "models": await _with_turnarounds(store, config, models_json(config)) if config is not None else [],
    }


async def _with_turnarounds(store: Store, config: Config, models: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each model's entry with its learned batch turnaround (`turnaround`: quantiles in seconds, per band)."""
    confidence = config.worker.turnaround_confidence
    for entry in models:
        bands = await load_turnarounds(store, config, entry["model"])
        entry["turnaround"] = turnaround_json(bands, confidence=confidence)
    return models


def models_json(config: Config) -> list[dict[str, Any]]:
    """Each configured model's lanes and batching knobs (what a client needs to pick a useful deadline)."""
    return [
        {
            "model": deployment.model_name,
            "supports_flex": deployment.supports_flex,
            "max_wait_seconds": config.batch_knobs(deployment.model_name).max_wait,
            "turnaround_estimate_seconds": config.batch_knobs(deployment.model_name).turnaround_estimate,
            "safety_margin_seconds": config.worker.safety_margin,
            "flex_turnaround_seconds": config.worker.flex_turnaround,
        }
        for deployment in config.model_list
    ]


# --- rendering ---


def usd(text: str | Decimal) -> str:
    """A ledger amount for people: at least cents, every significant digit kept (ledger amounts are exact)."""
    amount = Decimal(text)
    places = max(2, -amount.normalize().as_tuple().exponent)  # type: ignore[operator]
    return f"${amount:,.{places}f}"


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}%"


def seconds_text(value: float | None) -> str:
    if value is None:
        return "-"
    value = max(value, 0.0)
    if value < 120:
        return f"{value:.0f}s"
    if value < 7200:
        return f"{value / 60:.0f}m"
    return f"{value / 3600:.1f}h"


def render_status(document: dict[str, Any], *, source: str) -> str:
    savings = document["savings"]
    totals = savings["totals"]
    lines = [
        f"batchgate status  {source}  team: {document.get('team') or 'all'}",
        f"Savings from {savings['since']} to {savings['until']}",
        f"  requests {totals['requests']}  list {usd(totals['list_usd'])}  paid {usd(totals['paid_usd'])}"
        f"  waste {usd(totals['waste_usd'])}  saved {usd(totals['saved_usd'])} ({percent(totals['savings_percent'])})"
        f"  forfeited {usd(totals['forfeited_usd'])}"
        + (f"  unknown cost {totals['unknown_cost_requests']}" if totals["unknown_cost_requests"] else ""),
    ]
    for dimension in ("lane", "model", "team"):
        for row in savings[f"by_{dimension}"]:
            lines.append(
                f"  {dimension} {row[dimension]:<14} requests {row['requests']:>6}  list {usd(row['list_usd'])}"
                f"  paid {usd(row['paid_usd'])}  waste {usd(row['waste_usd'])}  saved {usd(row['saved_usd'])}"
                f" ({percent(row['savings_percent'])})"
            )
    for reason, amount in totals["waste"]["by_reason"].items():
        lines.append(f"  waste {reason:<20} {usd(amount)}")
    for reason, amount in totals["forfeited"]["by_reason"].items():
        lines.append(f"  forfeited {reason:<26} {usd(amount)}")
    shadow = savings["shadow"]["totals"]
    if shadow["requests"]:
        lines.append(
            f"  shadow mode: {shadow['requests']} requests would have saved {usd(shadow['saved_usd'])}"
            f" ({percent(shadow['savings_percent'])})"
        )
    lines.extend(reconciliation_lines(document.get("reconciliation") or {}))
    lines.append("Queues")
    if not document["queues"]:
        lines.append("  (no deferred request yet)")
    for queue in document["queues"]:
        batches = ", ".join(f"{count} {state}" for state, count in sorted(queue["open_batches"].items())) or "none"
        lines.append(
            f"  {queue['model']:<16} waiting {queue['waiting']:>5} (oldest {seconds_text(queue['oldest_age_seconds'])})"
            f"  sync lane {queue['sync_waiting'] + queue['sync_running']:>3}  open batches: {batches}"
        )
    lines.extend(turnaround_lines(document.get("models") or []))
    in_flight = [batch for queue in document["queues"] for batch in queue["batches"]]
    lines.append("In-flight batches")
    if not in_flight:
        lines.append("  (none)")
    for batch in in_flight:
        progress = "-" if batch["progress_percent"] is None else f"{batch['progress_percent']:.0f}%"
        name = batch["id"] or "batch"
        done = "?" if batch["done"] is None else batch["done"]
        lines.append(
            f"  {batch['model']:<16} {name}  {batch['state']:<12} {done}/{batch['total'] or batch['jobs']}"
            f" done ({progress})  {batch['jobs']} jobs  age {seconds_text(batch['age_seconds'])}"
        )
    return "\n".join(lines)


def turnaround_lines(models: list[dict[str, Any]]) -> list[str]:
    """Each model's batch turnaround: learned quantiles, or the configured estimate until enough batches."""
    lines = ["Batch turnaround"] if models else []
    for model in models:
        turnaround = model.get("turnaround")
        if not turnaround:
            continue
        quantiles = "  ".join(f"{name} {seconds_text(value)}" for name, value in turnaround["seconds"].items())
        source = "learned" if turnaround["learned"] else "estimate (not yet learned)"
        lines.append(
            f"  {model['model']:<16} {source:<26} {quantiles}  at {turnaround['confidence']:.0%}:"
            f" {seconds_text(turnaround['at_confidence_seconds'])}  batches seen {turnaround['batches_seen']}"
        )
    return lines


def reconciliation_lines(kept: dict[str, Any]) -> list[str]:
    """The last batch reconciliation (and the last mismatch, if any): recorded against billed."""
    lines = []
    for name, title in (("last", "Last reconciliation"), ("last_mismatch", "Last mismatch")):
        result = kept.get(name)
        if not result:
            continue
        recorded, billed = result["recorded"], result["billed"]
        verdict = (
            "unchecked (no billing data)"
            if not result["checked"]
            else "matched"
            if result["matched"]
            else (f"DIFFERS by {usd(result['difference_usd'])}")
        )
        lines.append(
            f"{title}: batch {result['batch']} ({result['model']}) {verdict}  recorded {recorded['lines']} lines"
            f" {recorded['input_tokens']}+{recorded['output_tokens']} tokens, billed {billed['lines']} lines"
            f" {billed['input_tokens']}+{billed['output_tokens']} tokens"
        )
    return lines


# --- the command ---


def add_arguments(commands: Any) -> None:
    """Register `batchgate status` on the CLI's subcommands."""
    parser = commands.add_parser("status", help="savings, live queues and in-flight batches of a running batchgate")
    parser.add_argument("--url", default=os.environ.get(URL_ENV, DEFAULT_URL), help=f"batchgate URL ({URL_ENV})")
    parser.add_argument(
        "--key", default=os.environ.get(KEY_ENV), help=f"API key, a secret ({KEY_ENV}; default: dev key)"
    )
    parser.add_argument("--redis-url", help="read Redis directly instead of the API (operators: every team)")
    parser.add_argument("--config", type=Path, help="with --redis-url: the config, for the models' batching knobs")
    parser.add_argument("--since", default=DEFAULT_SINCE, help="savings since: a duration ago (24h, 7d) or RFC 3339")
    parser.add_argument("--team", help="master key or --redis-url: one team only")
    parser.add_argument("--json", action="store_true", help="print the status document as JSON")
    parser.set_defaults(handler=run_status)


def run_status(args: argparse.Namespace) -> int:
    try:
        if args.redis_url:
            document = asyncio.run(_from_redis(args))
            source = "redis"
        else:
            document = _from_api(args)
            source = args.url
    except StatusUnavailable as exc:
        print(f"batchgate status: {exc}", file=sys.stderr)
        return 1
    if args.json:
        import orjson  # noqa: PLC0415

        print(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())
    else:
        print(render_status(document, source=source))
    return 0


class StatusUnavailable(Exception):
    pass


def _from_api(args: argparse.Namespace) -> dict[str, Any]:
    import httpx  # noqa: PLC0415

    params = {"since": args.since, **({"team": args.team} if args.team else {})}
    headers = {"authorization": f"Bearer {args.key or DEV_MASTER_KEY}"}
    try:
        response = httpx.get(args.url.rstrip("/") + "/v1/status", params=params, headers=headers, timeout=30)
    except httpx.HTTPError as exc:
        raise StatusUnavailable(f"cannot reach {args.url}: {exc}") from None
    if response.status_code != 200:
        raise StatusUnavailable(f"{args.url} answered {response.status_code}: {response.text[:300]}")
    document: dict[str, Any] = response.json()
    return document


async def _from_redis(args: argparse.Namespace) -> dict[str, Any]:
    from redis.exceptions import RedisError  # noqa: PLC0415

    from proxy.durations import parse_duration, parse_instant  # noqa: PLC0415
    from proxy.redis_client import connect_redis  # noqa: PLC0415
    from proxy.settings import load_config  # noqa: PLC0415

    now = datetime.now(UTC)
    try:
        since = now - timedelta(seconds=parse_duration(args.since))
    except ValueError:
        since = parse_instant(args.since)
    config = load_config(args.config) if args.config else None
    client = connect_redis(args.redis_url)
    store = Store.create(client)
    try:
        return await collect_status(
            store, Accounting(store.ledger), config, since=since, until=now, team=args.team, with_ids=True
        )
    except (OSError, RedisError) as exc:
        raise StatusUnavailable(f"cannot read Redis at {args.redis_url}: {exc}") from None
    finally:
        await client.aclose()
