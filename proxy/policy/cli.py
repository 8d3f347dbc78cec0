"""`batchgate policy check FILE` and `batchgate policy explain FILE ...`."""

from __future__ import annotations

import argparse
import fnmatch
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from proxy.durations import format_instant, parse_instant
from proxy.endpoints import Endpoint, queue_group
from proxy.errors import ConfigError, InvalidRequest
from proxy.policy.decide import decide, human_duration
from proxy.policy.decision import Decision
from proxy.policy.facts import DEADLINE_HEADER, RequestFacts
from proxy.policy.lanes import VenueInputs, batch_blocker_for, dropped_fields_for, lane_facts, uses_auto
from proxy.policy.matchers import Condition, EndpointCondition
from proxy.pricing import PriceBook
from proxy.providers.lane_fields import ANTHROPIC_DROPPED
from proxy.settings import Config, load_config
from proxy.venues import completion_budget


def check(path: Path, out: TextIO) -> int:
    """Validate the whole config file; print OK (with warnings, if any) or the problems. 0 when valid."""
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"INVALID: {exc}", file=out)
        return 1
    rules = config.policy.rules
    print(f"OK: {path} ({len(config.model_list)} model(s), {len(rules)} rule(s))", file=out)
    for warning in warnings(config):
        print(f"  warning: {warning}", file=out)
    return 0


def warnings(config: Config) -> list[str]:
    """Valid but probably unintended: rules that can never match, globs that name no configured model."""
    found: list[str] = []
    names = [deployment.model_name for deployment in config.model_list]
    covered: dict[Endpoint, str] = {}  # endpoint -> the first rule matching every call to it
    for index, rule in enumerate(config.policy.rules):
        endpoints = _endpoints(rule.match.conditions)
        if all(endpoint in covered for endpoint in endpoints):
            catch_all = covered[next(iter(sorted(endpoints)))]
            found.append(f"policy.rules[{index}] ({rule.name}) is never reached: {catch_all} matches all")
        if all(isinstance(condition, EndpointCondition) for condition in rule.match.conditions):
            for endpoint in endpoints:
                covered.setdefault(endpoint, rule.name)
        for pattern in rule.match.models:
            if not fnmatch.filter(names, pattern):
                found.append(f"policy.rules[{index}].match.models: {pattern!r} names no model in model_list")
    return found


def explain(
    path: Path,
    *,
    key: str | None,
    team: str | None,
    model: str,
    headers: list[str],
    metadata: list[str],
    user: str | None,
    prompt_tokens: int,
    now: datetime | None,
    out: TextIO,
    stream: bool = False,
    body: Path | None = None,
    endpoint: Endpoint = Endpoint.CHAT_COMPLETIONS,
) -> int:
    """Print the decision for one imagined request, the rule that made it, and why earlier ones missed.
    `body` is a JSON body of `endpoint`: the fields its model's batch lane cannot carry keep it off batch."""
    try:
        config = load_config(path)
        header_map = _pairs(headers, ":", "--header", "'Name: value'")
        metadata_map = _pairs(metadata, "=", "--metadata", "key=value")
        request_body = _body(body)
    except (ConfigError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=out)
        return 1
    if config.deployment(model) is None:
        known = ", ".join(deployment.model_name for deployment in config.model_list)
        print(f"error: model {model!r} is not in {path} model_list (known: {known})", file=out)
        return 1
    caller_name, caller_team = _caller(config, key, team, out)
    facts = RequestFacts(
        caller_name=caller_name,
        team=caller_team,
        model=model,
        headers={name.lower(): value for name, value in header_map.items()},
        metadata=metadata_map,
        user=user,
        prompt_tokens_estimate=prompt_tokens,
        stream=stream,
        batch_blocker=batch_blocker_for(config, model, request_body, endpoint),
        dropped_fields=dropped_fields_for(config, model, request_body),
        endpoint=endpoint,
    )
    moment = now or datetime.now(UTC)
    group = queue_group(model, endpoint)
    inputs = None
    if uses_auto(config.policy):  # the price book is read only when a venue may be picked
        prices = PriceBook.from_config(config).prices(group)
        budget = completion_budget(request_body)
        inputs = VenueInputs(prices, moment, prompt_tokens=prompt_tokens, completion_tokens=budget)
    lanes = lane_facts(config, group, venues=inputs)
    try:
        decision = decide(config.policy, facts, lanes, moment)
    except InvalidRequest as exc:
        print(f"error: the request would be refused with 400: {exc.message}", file=out)
        return 1
    _print_decision(config, decision, moment, out, deadline_sent=DEADLINE_HEADER in facts.headers)
    _print_venues(decision, out)
    if not lanes.batchable:
        print(f"  batch:     never for this model: {lanes.no_batch_reason}", file=out)
    elif facts.batch_blocker is not None:
        print(f"  batch:     not for this request: its batch lane cannot carry {facts.batch_blocker}", file=out)
    for name in facts.dropped_fields:
        print(f"  dropped:   {name}: {ANTHROPIC_DROPPED[name]}, on every lane", file=out)
    _print_rules(config, facts, moment, decision, out)
    return 0


def _endpoints(conditions: tuple[Condition, ...]) -> frozenset[Endpoint]:
    """The endpoints a rule's conditions let through."""
    for condition in conditions:
        if isinstance(condition, EndpointCondition):
            return condition.endpoints
    return frozenset(Endpoint)


def _body(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        loaded = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"--body {path} is not JSON: {exc}") from None
    if not isinstance(loaded, dict):
        raise ValueError(f"--body {path} must hold a JSON object (a chat-completions body)")
    return loaded


def _pairs(items: list[str], separator: str, option: str, form: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in items:
        name, found, value = item.partition(separator)
        if not found or not name.strip():
            raise ValueError(f"{option} expects {form}, got {item!r}")
        pairs[name.strip()] = value.strip()
    return pairs


def _caller(config: Config, key: str | None, team: str | None, out: TextIO) -> tuple[str, str]:
    """The caller as auth would resolve it: --key-name names a key of auth.keys (or 'master')."""
    if key is None or key == "master":
        return "master", team or "master"
    for declared in config.auth.keys:
        if key == declared.name:
            return declared.name, team or declared.team
    print(f"note: key {key!r} is not declared in auth.keys; using it as the caller name", file=out)
    return key, team or "default"


def _print_decision(config: Config, decision: Decision, now: datetime, out: TextIO, *, deadline_sent: bool) -> None:
    print(f"X-Batchgate-Decision: {decision.header_value()}", file=out)
    print(f"  deferred:  {'yes' if decision.deferred else 'no'}", file=out)
    print(f"  lane:      {decision.lane}", file=out)
    if decision.shadow:
        print(f"  shadow:    sent synchronously; deferring would have used {decision.shadow_lane}", file=out)
    if decision.deadline is not None:
        left = human_duration((decision.deadline - now).total_seconds())
        print(f"  deadline:  {format_instant(decision.deadline)} (in {left})", file=out)
    if decision.deferred:
        configured = config.delivery.mode_for(deadline_sent=deadline_sent)
        source = "delivery.default" if deadline_sent else "delivery.unrequested: no X-Batch-Deadline"
        delivery = decision.delivery or f"{configured} (config {source})"
        print(f"  delivery:  {delivery}", file=out)
        if decision.callback_url:
            print(f"  callback:  {decision.callback_url}", file=out)
        if decision.max_wait is not None:
            print(f"  batching:  max_wait {human_duration(decision.max_wait)}", file=out)
    print(f"  reason:    {decision.reason}", file=out)


def _print_venues(decision: Decision, out: TextIO) -> None:
    """The venues the `auto` lane considered, cheapest first, with price, ETA and verdict."""
    if not decision.considered:
        return
    print("venues (cheapest first; auto takes the first that keeps the deadline):", file=out)
    for item in decision.considered:
        venue = item.venue
        mark = "*" if venue.name == decision.venue else " "
        hold = f", held {human_duration(venue.hold)}" if venue.hold else ""
        print(
            f" {mark} {venue.name:<12} {venue.price:7.1%} of list  eta {human_duration(venue.eta)}"
            f"  at confidence {human_duration(venue.need)}{hold}: {item.note}",
            file=out,
        )


def _print_rules(config: Config, facts: RequestFacts, now: datetime, decision: Decision, out: TextIO) -> None:
    rules = config.policy.rules
    if not rules:
        print("rules: none configured", file=out)
        return
    print("rules (first match wins):", file=out)
    matched = False
    for index, rule in enumerate(rules, start=1):
        if matched:
            verdict = "not tried"
        else:
            miss = rule.miss(facts, now)
            matched = miss is None
            verdict = "MATCHED" if miss is None else f"no match: {miss}"
        print(f"  {index}. {rule.name}: {verdict}", file=out)
    if not matched:
        print(f"  no rule matched: the {decision.rule} action applied", file=out)


def add_arguments(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`batchgate policy check FILE` and `batchgate policy explain FILE --model M ...`."""
    policy = commands.add_parser("policy", help="validate a config file or explain its decisions")

    def usage(_args: argparse.Namespace) -> int:
        policy.print_help()
        return 2

    policy.set_defaults(handler=usage)
    actions = policy.add_subparsers(title="policy commands")

    check_parser = actions.add_parser("check", help="validate a config file (exit 0 when valid)")
    check_parser.add_argument("file", type=Path, help="the YAML config file to validate")
    check_parser.set_defaults(handler=_run_check)

    explain_parser = actions.add_parser("explain", help="print the decision for one imagined request")
    explain_parser.add_argument("file", type=Path, help="the YAML config file whose policy decides")
    explain_parser.add_argument("--model", required=True, help="model_name the client sends")
    explain_parser.add_argument(
        "--key-name", dest="key", help="caller key NAME (auth.keys[].name) or 'master'; never the secret itself"
    )
    explain_parser.add_argument("--team", help="team (default: the key's team)")
    explain_parser.add_argument(
        "--header", action="append", default=[], help="'Name: value', repeatable ('X-Batch-Deadline: 4h')"
    )
    explain_parser.add_argument("--metadata", action="append", default=[], help="key=value, repeatable")
    explain_parser.add_argument("--user", help="the request's `user` field")
    explain_parser.add_argument("--prompt-tokens", type=int, default=0, help="estimated prompt tokens")
    explain_parser.add_argument("--stream", action="store_true", help="the request streams")
    explain_parser.add_argument("--body", type=Path, help="a JSON request body of the endpoint (fields can force sync)")
    explain_parser.add_argument(
        "--endpoint",
        type=Endpoint,
        choices=list(Endpoint),
        default=Endpoint.CHAT_COMPLETIONS,
        help="the endpoint called (default: chat_completions)",
    )
    explain_parser.add_argument("--now", type=parse_instant, help="RFC 3339 time to decide at (default: now)")
    explain_parser.set_defaults(handler=_run_explain)


def _run_check(args: argparse.Namespace) -> int:
    import sys  # noqa: PLC0415

    return check(args.file, sys.stdout)


def _run_explain(args: argparse.Namespace) -> int:
    import sys  # noqa: PLC0415

    return explain(
        args.file,
        key=args.key,
        team=args.team,
        model=args.model,
        headers=args.header,
        metadata=args.metadata,
        user=args.user,
        prompt_tokens=args.prompt_tokens,
        now=args.now,
        out=sys.stdout,
        stream=args.stream,
        body=args.body,
        endpoint=args.endpoint,
    )
