"""Savings benchmark: a compressed simulated day of mixed traffic, fixed turnaround estimate against learned turnaround.

    LITELLM_LOCAL_MODEL_COST_MAP=True .venv/bin/python bench/bench_savings.py [--calls 2000] [--compression 400]

Each arm gets its own simulated upstream (same seed: the same batch turnarounds, stalls and line errors) and its own
Redis database, and runs at the same time in this process: the calls go through `proxy.jobs.service.accept` on the
lane the policy's `choose_lane` picks (what the chat route does, without HTTP), a worker answers them.

The clock is compressed by scaling every duration, the simulator's and the config's alike, by `--compression`
(400: a simulated day takes 216 s). The upstream: batch turnaround log-normal with median 15 min, p90 about 1 h,
p99 about 3 h (sigma 1.08), `--stall-rate` of batches stalled (no line finishes until expiry at 24 h), 1% of lines
answered 500, 5% of flex calls refused 429. The traffic: three teams, two models (gpt-5-mini has flex), arrivals
over the first 12 simulated hours; `--urgent` of the calls need an answer within 10-20 minutes (sync or flex at
once), the rest are deferrable with deadlines of 1-4 h (20%) or 4-24 h (80%), log-uniform.

Arms: `fixed` (turnaround_estimate 1 h + safety margin 10 min, batchgate's behaviour before issue 16: the learned
distribution never takes over), `learned` (the defaults: worker.lane_rule expected_cost, a late batch cancelled
cancel_lead before a job's last safe moment and its jobs rescued then) and `confidence99` (lane_rule confidence:
a call is batched only when the batch ends in time at 99%). Each arm prints its figures, the jobs that missed
their deadline (how late, in real and simulated seconds) and a verdict per target of issue 16.
Reported per arm: the share of the deferrable list cost saved, deadlines met, forfeited savings and waste, the
ledger against the simulator's bill, lanes, rescues and stalled batches. The figures are taken before the workers
are stopped; a worker that does not stop within STOP_WAIT is cancelled (a lease keeper whose cancellation was
swallowed by a Redis call can keep a finished batch look waiting: see bench/RESULTS.md).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from proxy.auth import Caller
from proxy.jobs.service import accept
from proxy.logs import JsonFormatter
from proxy.policy.decide import choose_lane, sync_reason
from proxy.policy.decision import Decision
from proxy.policy.lanes import lane_facts
from proxy.runtime import Runtime, build_runtime, close_runtime
from proxy.settings import Settings
from proxy.telemetry import Telemetry
from proxy.worker.runner import Worker
from tests.support.deferred_env import chat_body, write_config
from tests.support.servers import RedisServer, free_port, wait_for_http

MINUTE, HOUR = 60.0, 3600.0
DAY = 24 * HOUR
MODELS = ("gpt-4o-mini", "gpt-5-mini")
TEAMS = ("research", "support", "analytics")
URGENT_TEAM = "urgent"
# each arm's worker settings over the common ones (arm_sections)
ARMS: dict[str, dict[str, Any]] = {
    "fixed": {"turnaround_min_batches": 10**9, "lane_rule": "confidence"},  # never learned: the fixed estimate
    "learned": {},  # the defaults: lane_rule expected_cost, confidence 0.99
    "confidence99": {"lane_rule": "confidence"},  # issue 16's first learned rule: batch only at 99%
}
TARGETS = (  # (measure, comparison, bound), as in issue 16
    ("deferrable_saved_percent", ">=", 49.0),
    ("deadlines_met_percent", ">=", 100.0),
    ("forfeited_percent_of_list", "<=", 1.0),
    ("waste_percent_of_paid", "<=", 0.5),
    ("ledger_equals_bill", "==", True),
)
FLEX_429_RATE = 0.05
STOP_WAIT = 30.0
LEDGER_TIMEOUT = 600.0


@dataclass(frozen=True)
class Call:
    at: float  # simulated seconds after the start
    team: str
    model: str
    deadline: float  # simulated seconds after arrival
    urgent: bool
    text: str


def day_plan(calls: int, *, urgent_share: float, seed: int) -> list[Call]:
    dice = random.Random(seed)
    plan = []
    for number in range(calls):
        urgent = dice.random() < urgent_share
        if urgent:
            deadline = dice.uniform(10 * MINUTE, 20 * MINUTE)
        elif dice.random() < 0.2:
            deadline = math.exp(dice.uniform(math.log(1 * HOUR), math.log(4 * HOUR)))
        else:
            deadline = math.exp(dice.uniform(math.log(4 * HOUR), math.log(24 * HOUR)))
        plan.append(
            Call(
                at=dice.uniform(0, 12 * HOUR),
                team=URGENT_TEAM if urgent else dice.choice(TEAMS),
                model=dice.choice(MODELS),
                deadline=deadline,
                urgent=urgent,
                text=f"call {number}: summarise item {dice.randrange(10**6)} in {dice.randrange(20, 200)} words",
            )
        )
    return sorted(plan, key=lambda call: call.at)


def simulator_knobs(compression: float, *, stall_rate: float, seed: int) -> dict[str, Any]:
    return {
        "turnaround_s": 15 * MINUTE / compression,
        "turnaround_sigma": 1.08,
        "stall_rate": stall_rate,
        "validating_s": 0.05,
        "finalizing_s": 0.05,
        "expiry_s": DAY / compression,
        "cancel_delay_s": 0.2,
        "line_500_rate": 0.01,
        "flex_429_rate": FLEX_429_RATE,
        "flex_latency_s": 0.05,
        "seed": seed,
    }


def arm_sections(compression: float, overrides: dict[str, Any]) -> dict[str, Any]:
    worker: dict[str, Any] = {
        "poll_interval_min": 0.2,
        "poll_interval_max": max(0.2, 60 / compression),
        "tick": 0.1,
        "lease": 10,
        "safety_margin": 10 * MINUTE / compression,
        "cancel_lead": 10 * MINUTE / compression,
        "flex_turnaround": 15 * MINUTE / compression,
        "turnaround_half_life": 3 * DAY / compression,
        **overrides,
    }
    return {
        "batching": {"max_wait": 10 * MINUTE / compression, "turnaround_estimate": HOUR / compression},
        "worker": worker,
        "retry": {"max_attempts": 3, "base_delay": 0.05, "max_delay": 0.5, "budget": 5},
        "policy": {"flex_unavailable_rate": FLEX_429_RATE},  # what the operator knows of flex: priced in
    }


@dataclass
class Arm:
    name: str
    runtime: Runtime
    simulator_url: str
    jobs: list[tuple[Call, str, float]]  # call, job id, deadline (unix seconds)
    lanes: dict[str, int]


async def submit(arm: Arm, call: Call, compression: float) -> None:
    runtime = arm.runtime
    config = runtime.config
    book = runtime.turnarounds
    assert book is not None
    remaining = call.deadline / compression
    lanes = lane_facts(config, call.model, batch_turnaround=book.need(call.model), batch_level=book.level(call.model))
    lane, reason = choose_lane("batch", remaining, lanes)
    deadline = datetime.now(UTC) + timedelta(seconds=remaining)
    decision = Decision(
        deferred=True,
        lane=lane,
        rule="bench",
        reason=reason,
        deadline=deadline,
        rescue_reason=sync_reason(lane, lanes),
    )
    caller = Caller(f"{call.team}-key", call.team)
    view = await accept(
        runtime.store,
        config,
        caller,
        chat_body(call.model, call.text),
        decision,
        events=runtime.events,
        turnarounds=book,
    )
    arm.jobs.append((call, view.id, deadline.timestamp()))
    arm.lanes[lane] = arm.lanes.get(lane, 0) + 1


async def drive(arm: Arm, plan: list[Call], compression: float, started: float) -> None:
    for call in plan:
        delay = started + call.at / compression - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await submit(arm, call, compression)


async def all_final(arm: Arm) -> bool:
    views = await arm.runtime.store.jobs.get_many([job_id for _, job_id, _ in arm.jobs])
    return all(view is not None and view.is_final for view in views)


async def outcome(arm: Arm, compression: float) -> dict[str, Any]:
    runtime = arm.runtime
    assert isinstance(runtime.events, Telemetry)
    await runtime.events.flush()
    views = await runtime.store.jobs.get_many([job_id for _, job_id, _ in arm.jobs])
    met = missed = failed = rescued = 0
    finals: dict[str, int] = {}
    misses: list[dict[str, Any]] = []
    for (call, job_id, deadline), view in zip(arm.jobs, views, strict=True):
        assert view is not None
        finals[view.lane] = finals.get(view.lane, 0) + 1
        rescued += view.rescued
        if view.status != "completed":
            failed += 1
        elif view.finished_at is not None and view.finished_at <= deadline:
            met += 1
        else:
            missed += 1
            late = (view.finished_at or deadline) - deadline
            misses.append(
                {"job": job_id, "lane": view.lane, "rescued": view.rescued, "urgent": call.urgent,
                 "deadline_min": round(call.deadline / MINUTE, 1), "late_real_s": round(late, 3),
                 "late_simulated_s": round(late * compression, 1)}
            )  # fmt: skip
    now = datetime.now(UTC)
    report = (await runtime.accounting.report(now - timedelta(days=2), now + timedelta(hours=1))).to_json()
    deferrable = [row for row in report["by_team"] if row["team"] != URGENT_TEAM]
    list_usd = sum(Decimal(row["list_usd"]) for row in deferrable)
    paid_usd = sum(Decimal(row["paid_usd"]) for row in deferrable)
    waste_usd = sum(Decimal(row["waste_usd"]) for row in deferrable)
    forfeited_usd = sum(Decimal(row["forfeited_usd"]) for row in deferrable)
    totals = report["totals"]
    async with httpx.AsyncClient(timeout=LEDGER_TIMEOUT) as client:  # the simulator prices every line: slow
        bill = (await client.get(arm.simulator_url + "/_sim/ledger")).json()["totals"]["cost_usd"]
    charged = Decimal(totals["paid_usd"]) + Decimal(totals["waste_usd"])
    registry = runtime.metrics.registry
    stalled = sum(registry.get_sample_value("batchgate_batches_stalled_total", {"queue": m}) or 0 for m in MODELS)
    return {
        "calls": len(arm.jobs),
        "accepted_on": dict(sorted(arm.lanes.items())),
        "answered_on": dict(sorted(finals.items())),
        "deadlines_met": met,
        "deadlines_missed": missed,
        "deadlines_met_percent": round(met / len(arm.jobs) * 100, 2),
        "failed": failed,
        "rescued": rescued,
        "stalled_batches_cancelled": int(stalled),
        "deferrable_list_usd": str(list_usd),
        "deferrable_saved_percent": round(float((list_usd - paid_usd - waste_usd) / list_usd * 100), 2),
        "forfeited_percent_of_list": round(float(forfeited_usd / list_usd * 100), 2),
        "waste_percent_of_paid": round(float(Decimal(totals["waste_usd"]) / Decimal(totals["paid_usd"]) * 100), 3),
        "ledger_usd": str(charged),
        "simulator_bill_usd": str(bill),
        "ledger_equals_bill": charged == Decimal(bill),
        "misses": misses,
    }


def verdicts(result: dict[str, Any]) -> list[str]:
    """One line per target of issue 16: the measure, the bound, and whether it is met."""
    lines = []
    for measure, comparison, bound in TARGETS:
        value = result[measure]
        met = {">=": value >= bound, "<=": value <= bound, "==": value == bound}[comparison]
        lines.append(f"  {measure:28} {value!s:>8} (target {comparison} {bound}): {'MET' if met else 'NOT MET'}")
    return lines


def start_simulator(knobs: dict[str, Any]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "proxy", "simulate-upstream", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    wait_for_http(url + "/_sim/health")
    httpx.patch(url + "/_sim/config", json=knobs, timeout=10).raise_for_status()
    return process, url


async def main(args: argparse.Namespace) -> None:
    plan = day_plan(args.calls, urgent_share=args.urgent, seed=args.seed)
    names = args.arms.split(",")
    with tempfile.TemporaryDirectory() as scratch:
        redis = RedisServer(Path(scratch) / "redis").start()
        simulators = []
        arms = []
        try:
            for index, name in enumerate(names):
                process, url = start_simulator(
                    simulator_knobs(args.compression, stall_rate=args.stall_rate, seed=args.seed)
                )
                simulators.append(process)
                (Path(scratch) / name).mkdir()
                path, config = write_config(Path(scratch) / name, url, **arm_sections(args.compression, ARMS[name]))
                runtime = build_runtime(Settings(config=path, redis_url=f"{redis.url}/{index}"), config)
                arms.append(Arm(name, runtime, url, [], {}))
            stop = asyncio.Event()
            workers = [asyncio.create_task(Worker(arm.runtime, worker_id=arm.name).run(stop=stop)) for arm in arms]
            started = time.monotonic()
            await asyncio.gather(*(drive(arm, plan, args.compression, started) for arm in arms))
            arrivals = time.monotonic() - started
            for arm in arms:
                while not await all_final(arm):  # noqa: ASYNC110 - the jobs live in Redis: nothing to wait on here
                    await asyncio.sleep(1.0)
            elapsed = time.monotonic() - started
            print(
                f"calls {args.calls} per arm, compression {args.compression:g}x, seed {args.seed}, arrivals "
                f"{arrivals:.0f} s (planned {12 * HOUR / args.compression:.0f} s: the excess is event-loop lag), "
                f"all answered after {elapsed:.0f} s",
                flush=True,
            )
            for arm in arms:
                result = await outcome(arm, args.compression)
                print(arm.name, result, flush=True)
                print("\n".join(verdicts(result)), flush=True)
            stop.set()
            _, stuck = await asyncio.wait(workers, timeout=STOP_WAIT)
            for task in stuck:  # see the module docstring: a lease keeper can swallow its cancellation
                task.cancel()
        finally:
            for arm in arms:
                await close_runtime(arm.runtime)
            for process in simulators:
                process.terminate()
                process.wait()
            redis.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per arm over the simulated day")
    parser.add_argument("--compression", type=float, default=400.0, help="simulated seconds per real second")
    parser.add_argument("--urgent", type=float, default=0.15, help="share of calls with a 10-20 min deadline")
    parser.add_argument("--stall-rate", type=float, default=0.03, help="share of batches that stall")
    parser.add_argument("--arms", default="fixed,learned", help=f"comma-separated, of {', '.join(ARMS)}")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--log", type=Path, help="write the workers' log (guard decisions, batches) to this file")
    arguments = parser.parse_args()
    if arguments.log is not None:
        handler = logging.FileHandler(arguments.log)
        handler.setFormatter(JsonFormatter())
        logging.basicConfig(level=logging.INFO, handlers=[handler])
        logging.getLogger("httpx").setLevel(logging.WARNING)
    asyncio.run(main(arguments))
