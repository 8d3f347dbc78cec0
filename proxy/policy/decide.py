"""decide(): the pure policy function. No I/O: everything it needs is passed in, so it is cheap to call."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

from proxy.durations import DurationOutOfRange, human_duration, parse_duration, parse_instant
from proxy.errors import InvalidRequest
from proxy.policy.decision import Decision, ResolvedLane
from proxy.policy.facts import DEADLINE_HEADER, LaneFacts, RequestFacts
from proxy.policy.model import Action, Lane, PolicyConfig
from proxy.policy.venue import Considered, Venue
from proxy.reasons import RescueReason
from proxy.venues import pick

__all__ = ["Decision", "LaneFacts", "RequestFacts", "choose_lane", "decide", "human_duration", "parse_client_deadline"]

HEADER_PARAM = "X-Batch-Deadline"
NO_BATCH_API = "the model's provider has no batch API"
MAX_DEADLINE_AHEAD = 366 * 86_400.0


def decide(policy: PolicyConfig, facts: RequestFacts, lanes: LaneFacts, now: datetime) -> Decision:
    """The lane, deadline and delivery of one call. Raises InvalidRequest for a bad X-Batch-Deadline."""
    decision = _decide(policy, facts, lanes, now)
    return dataclasses.replace(decision, dropped=facts.dropped_fields) if facts.dropped_fields else decision


def _decide(policy: PolicyConfig, facts: RequestFacts, lanes: LaneFacts, now: datetime) -> Decision:
    raw_deadline = facts.headers.get(DEADLINE_HEADER)
    client_deadline = None if raw_deadline is None else parse_client_deadline(raw_deadline, now)
    rule = policy.first_match(facts, now)
    action: Action = rule if rule is not None else policy.default
    if rule is not None:
        name = rule.name
    else:
        name = "header" if client_deadline is not None and policy.default.lane is None else "default"

    requested: Lane = action.lane or ("batch" if client_deadline is not None else "sync")
    if requested == "sync":
        return Decision(deferred=False, lane="sync", rule=name, reason=_sync_reason(rule, action))
    if facts.stream:
        return Decision(deferred=False, lane="sync", rule=name, reason="streaming calls are answered synchronously")

    deadline, note = _deadline(action, client_deadline, policy.default_deadline, now)
    if facts.batch_blocker is not None and lanes.batchable:
        lanes = dataclasses.replace(
            lanes, batchable=False, no_batch_reason=f"its batch lane cannot carry {facts.batch_blocker}"
        )
    remaining = (deadline - now).total_seconds()
    venue: Venue | None = None
    considered: tuple[Considered, ...] = ()
    if requested == "auto" and lanes.venues:
        venue, considered, why = pick(_usable(lanes), remaining, lanes.safety_margin)
        lane: ResolvedLane = venue.lane
    else:
        lane, why = choose_lane(requested, remaining, lanes)
    no_batch = None if lanes.batchable else lanes.no_batch_reason or NO_BATCH_API
    if action.shadow:
        return Decision(
            deferred=False,
            lane="sync",
            rule=name,
            reason=f"shadow mode: would defer to {lane}; {note}{why}",
            deadline=deadline,
            shadow=True,
            shadow_lane=lane,
            no_batch=no_batch,
            venue=venue.name if venue is not None else None,
            considered=considered,
        )
    return Decision(
        deferred=True,
        lane=lane,
        rule=name,
        reason=note + why,
        deadline=deadline,
        delivery=action.delivery,
        callback_url=action.callback_url,
        max_wait=action.max_wait,
        rescue_reason=sync_reason(lane, lanes) if venue is None or venue.name == "sync" else None,
        no_batch=no_batch,
        venue=venue.name if venue is not None else None,
        hold_until=now + timedelta(seconds=venue.hold) if venue is not None and venue.hold > 0 else None,
        venue_body=dict(venue.body) if venue is not None else {},
        considered=considered,
        eta=_venue_eta(venue, now, need=False),
        eta_p90=_venue_eta(venue, now, need=True),
    )


def _venue_eta(venue: Venue | None, now: datetime, *, need: bool) -> float | None:
    """A declared venue's ETA (unix seconds): median, or (`need`) at the configured confidence. A batch job's
    comes from the learned turnaround when it is accepted (proxy/jobs/service.py)."""
    if venue is None or venue.lane != "sync" or venue.name == "sync":
        return None
    return now.timestamp() + (venue.need if need else venue.eta)


def _usable(lanes: LaneFacts) -> tuple[Venue, ...]:
    """The venues of `lanes`, the batch venue marked unavailable when the call cannot use the batch lane."""
    if lanes.batchable:
        return lanes.venues
    reason = f"no batch lane ({lanes.no_batch_reason or NO_BATCH_API})"
    return tuple(
        dataclasses.replace(venue, unavailable=reason) if venue.lane == "batch" else venue for venue in lanes.venues
    )


def parse_client_deadline(value: str, now: datetime) -> datetime:
    """X-Batch-Deadline as an instant: a duration from now (90m, 4h, 1h30m) or an RFC 3339 time."""
    shown = value if len(value) <= 64 else value[:61] + "..."
    too_far = InvalidRequest(
        f"X-Batch-Deadline {shown!r} is more than 366 days ahead", param=HEADER_PARAM, code="invalid_deadline"
    )
    try:
        seconds = parse_duration(value, maximum=MAX_DEADLINE_AHEAD)
    except DurationOutOfRange:
        raise too_far from None
    except ValueError:
        try:
            moment = parse_instant(value)
        except ValueError:
            raise InvalidRequest(
                f"X-Batch-Deadline must be a duration such as 90m, 4h or 1h30m, or an RFC 3339 time such as "
                f"2026-11-23T06:00:00Z; got {shown!r}",
                param=HEADER_PARAM,
                code="invalid_deadline",
            ) from None
    else:
        moment = now + timedelta(seconds=seconds)
    if moment <= now:
        raise InvalidRequest(
            f"X-Batch-Deadline {shown!r} is not in the future", param=HEADER_PARAM, code="invalid_deadline"
        )
    if (moment - now).total_seconds() > MAX_DEADLINE_AHEAD:
        raise too_far
    return moment


def choose_lane(requested: Lane, remaining: float, lanes: LaneFacts) -> tuple[ResolvedLane, str]:
    """The cheapest lane that answers within `remaining` seconds, starting from the requested one."""
    need_batch = lanes.batch_turnaround + lanes.safety_margin
    need_flex = lanes.flex_turnaround + lanes.safety_margin
    left = human_duration(remaining)
    batch_fits = lanes.batchable and remaining >= need_batch
    flex_fits = lanes.supports_flex and remaining >= need_flex
    batch_need = (
        f"batch (turnaround {human_duration(lanes.batch_turnaround)} + margin {human_duration(lanes.safety_margin)})"
    )
    if lanes.batch_level is not None:  # learned: see docs/architecture.md "Deciding by expected cost"
        batch_need = (
            f"batch (turnaround {human_duration(lanes.batch_turnaround)} + margin "
            f"{human_duration(lanes.safety_margin)}: ends in time with probability {lanes.batch_level:.3g}, where it "
            f"costs less on average than the alternative; a late batch's jobs are rescued at their last safe moment)"
        )
    if requested != "flex" and batch_fits:
        return "batch", f"deadline {left} leaves room for {batch_need}"
    if flex_fits:
        if requested == "flex":
            return "flex", f"deadline {left} leaves room for flex (needs {human_duration(need_flex)})"
        return "flex", (f"deadline {left} is too short for {batch_need}; flex fits (needs {human_duration(need_flex)})")
    if requested == "flex" and batch_fits:
        return "batch", f"model has no flex tier; deadline {left} leaves room for {batch_need}"
    flex_note = (
        "model has no flex tier"
        if not lanes.supports_flex
        else f"too short for flex (needs {human_duration(need_flex)})"
    )
    if batch_fits:  # requested flex, model supports it, deadline too short for it but not for batch
        return "batch", f"deadline {left} is {flex_note}; batch fits ({batch_need})"
    no_batch = f"no batch lane ({lanes.no_batch_reason or NO_BATCH_API})" if not lanes.batchable else ""
    return "sync", f"{no_batch or f'deadline {left} is too short for {batch_need}'}; {flex_note}: sync at once"


def sync_reason(lane: ResolvedLane, lanes: LaneFacts) -> RescueReason | None:
    """Why a deferred call on `lane` is answered synchronously at once although its model could batch it."""
    return RescueReason.DEADLINE_TOO_SHORT if lane == "sync" and lanes.batchable else None


def _deadline(action: Action, client: datetime | None, default_seconds: float, now: datetime) -> tuple[datetime, str]:
    """The deadline of a deferred call, clamped to the action's bounds, and a note when it was changed."""
    low, high = action.min_deadline, action.max_deadline
    if client is None:
        seconds = action.deadline if action.deadline is not None else default_seconds
        if low is not None:
            seconds = max(seconds, low)
        if high is not None:
            seconds = min(seconds, high)
        return now + timedelta(seconds=seconds), ""
    asked = (client - now).total_seconds()
    if low is not None and asked < low:
        note = f"client deadline {human_duration(asked)} raised to min_deadline {human_duration(low)}; "
        return now + timedelta(seconds=low), note
    if high is not None and asked > high:
        note = f"client deadline {human_duration(asked)} lowered to max_deadline {human_duration(high)}; "
        return now + timedelta(seconds=high), note
    return client, ""


def _sync_reason(rule: object, action: Action) -> str:
    if rule is None:
        if action.lane == "sync":
            return "no rule matched; the default lane is sync"
        return "no rule matched and no X-Batch-Deadline header"
    if action.lane == "sync":
        return "the rule sets lane sync"
    return "the rule sets no lane and the call has no X-Batch-Deadline header"
