"""`batchgate quote FILE.jsonl`: the quote of a file of chat calls, from a running batchgate (its learned
turnarounds) or, with --config, from a config file alone (every model at its configured turnaround estimate).
`batchgate quote --shadow-hours N`: the quote of the last N hours of shadow-mode traffic, from a running batchgate."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from proxy.errors import ConfigError, InvalidRequest
from proxy.status import DEFAULT_URL, KEY_ENV, URL_ENV


def add_arguments(commands: Any) -> None:
    """Register `batchgate quote` on the CLI's subcommands."""
    parser = commands.add_parser("quote", help="what a JSONL of chat calls would cost on each venue (no provider)")
    parser.add_argument(
        "file", type=Path, nargs="?", help="JSONL of chat bodies or batch-file lines (each may set `deadline`)"
    )
    parser.add_argument("--shadow-hours", type=float, help="instead of a file: the last N hours of shadow traffic")
    parser.add_argument("--deadline", help="deadline of the calls that carry none (4h, RFC 3339)")
    parser.add_argument("--config", type=Path, help="quote from this config alone, at its turnaround estimates")
    parser.add_argument("--url", default=os.environ.get(URL_ENV, DEFAULT_URL), help=f"batchgate URL ({URL_ENV})")
    parser.add_argument("--key", default=os.environ.get(KEY_ENV), help=f"API key, a secret ({KEY_ENV})")
    parser.add_argument("--json", action="store_true", help="print the quote document as JSON")
    parser.set_defaults(handler=run_quote)


def run_quote(args: argparse.Namespace) -> int:
    from proxy.quote import render  # noqa: PLC0415

    try:
        if (args.file is None) == (args.shadow_hours is None):
            raise QuoteUnavailable("give either a FILE of calls or --shadow-hours N")
        if args.shadow_hours is not None and args.config is not None:
            raise QuoteUnavailable("shadow traffic is kept by a running batchgate: use --url, not --config")
        if args.shadow_hours is not None:
            document = _from_api(args, orjson.dumps({"shadow_hours": args.shadow_hours}).decode())
        else:
            text = args.file.read_text()
            document = _offline(args, text) if args.config is not None else _from_api(args, text)
    except (OSError, ConfigError, QuoteUnavailable) as exc:
        print(f"batchgate quote: {exc}", file=sys.stderr)
        return 1
    except InvalidRequest as exc:
        print(f"batchgate quote: {exc.message}", file=sys.stderr)
        return 1
    print(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() if args.json else render(document))
    return 0


class QuoteUnavailable(Exception):
    pass


def _offline(args: argparse.Namespace, text: str) -> dict[str, Any]:
    from proxy.pricing import PriceBook  # noqa: PLC0415
    from proxy.quote import parse_calls, parse_text, prior_turnarounds, quote  # noqa: PLC0415
    from proxy.settings import load_config  # noqa: PLC0415

    config = load_config(args.config)
    now = datetime.now(UTC)
    calls = parse_calls(parse_text(text), config, now, default_deadline=args.deadline)
    return quote(config, PriceBook.from_config(config), prior_turnarounds(config), calls, now)


def _from_api(args: argparse.Namespace, text: str) -> dict[str, Any]:
    import httpx  # noqa: PLC0415

    from proxy.settings import DEV_MASTER_KEY  # noqa: PLC0415

    params = {"deadline": args.deadline} if args.deadline else {}
    headers = {"authorization": f"Bearer {args.key or DEV_MASTER_KEY}", "content-type": "application/jsonl"}
    try:
        response = httpx.post(
            args.url.rstrip("/") + "/v1/quote", params=params, headers=headers, content=text.encode(), timeout=60
        )
    except httpx.HTTPError as exc:
        raise QuoteUnavailable(f"cannot reach {args.url}: {exc}") from None
    if response.status_code != 200:
        raise QuoteUnavailable(f"{args.url} answered {response.status_code}: {response.text[:300]}")
    document: dict[str, Any] = response.json()
    return document
