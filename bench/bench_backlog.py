"""Backlog benchmark: how long a deferred backlog far over the provider's enqueued-token limit takes to drain, and
what share of it was paid at batch price.

    LITELLM_LOCAL_MODEL_COST_MAP=True .venv/bin/python bench/bench_backlog.py [--jobs 2000] [--over 10]

Runs a private redis-server and the strict simulated upstream as a child process, with the model's enqueued-token
limit set to 1/`--over` of the backlog's simulated prompt tokens (the simulator counts ceil(bytes / 4) a text plus
a few tokens a message). batchgate's budget is left at its tier default (2,000,000), far above that limit, so the
first batch is refused and the worker learns the limit from the provider's message. Every job has a one-hour
deadline. One worker drains the backlog; the figures are its wall time, the batches it submitted and refused, and
the simulator's ledger (requests billed at batch vs synchronous price).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from local_stack import local_stack

from proxy.jobs.service import accept
from proxy.policy.decision import Decision
from proxy.worker.runner import Worker
from tests.support.deferred_env import ALICE, chat_body

MODEL = "gpt-4o-mini"


def prompt(number: int, chars: int) -> str:
    head = f"backlog question {number}: "
    return head + ("lorem ipsum dolor sit amet " * (chars // 27 + 1))[: max(0, chars - len(head))]


def simulated_prompt_tokens(text: str) -> int:
    """The simulator's count for one user message (proxy/simulator/answers.py): 3 + 3 + tokens(role) + text."""
    return 3 + 3 + math.ceil(len(b"user") / 4) + math.ceil(len(text.encode()) / 4)


async def main(args: argparse.Namespace) -> None:
    texts = [prompt(number, args.prompt_chars) for number in range(args.jobs)]
    total = sum(simulated_prompt_tokens(text) for text in texts)
    limit = math.ceil(total / args.over)
    sections = {
        "batching": {"max_wait": "1s", "turnaround_estimate": "60s"},
        "worker": {"lease": 30, "safety_margin": 60, "poll_interval_min": 0.5, "poll_interval_max": 2, "tick": 0.2},
    }
    simulator_args = ["--turnaround-s", str(args.turnaround), "--enqueued-token-limit", str(limit)]
    with tempfile.TemporaryDirectory() as scratch:
        async with local_stack(Path(scratch), simulator_args=simulator_args, **sections) as stack:
            runtime = stack.runtime
            deadline = datetime.now(UTC) + timedelta(hours=1)
            decision = Decision(deferred=True, lane="batch", rule="bench", reason="bench", deadline=deadline)
            views = [await accept(runtime.store, runtime.config, ALICE, chat_body(MODEL, text), decision)
                     for text in texts]  # fmt: skip
            print(f"backlog: {args.jobs} jobs, {total:,} simulated prompt tokens; provider limit {limit:,} "
                  f"({args.over}x over); batchgate budget: tier default, learned from the first refusal")  # fmt: skip

            worker = Worker(runtime, worker_id="bench")
            started = time.perf_counter()
            await worker.run(burst=True)
            drained = time.perf_counter() - started

            finished = await runtime.store.jobs.get_many([view.id for view in views])
            statuses: dict[tuple[str, str], int] = {}
            for view in finished:
                key = (view.status, view.lane) if view else ("missing", "")
                statuses[key] = statuses.get(key, 0) + 1
            late = sum(1 for view in finished if view and view.finished_at and view.finished_at > deadline.timestamp())
            print(f"drained in {drained:.1f} s; jobs by (status, lane): {statuses}; answered after deadline: {late}")
            async with httpx.AsyncClient(base_url=stack.simulator_url, timeout=120) as http:
                ledger = (await http.get("/_sim/ledger")).json()["models"][MODEL]
                listing = await http.get("/v1/batches", params={"limit": 100}, headers={"authorization": "Bearer x"})
                batches = listing.json()["data"]
            refused = sum(1 for batch in batches if batch["status"] == "failed")
            billed_batch, billed_sync = ledger["batch"]["requests"], ledger["sync"]["requests"]
            print(f"provider batches: {len(batches)} ({refused} refused for the token limit); billed at batch price: "
                  f"{billed_batch} ({100 * billed_batch / max(1, billed_batch + billed_sync):.1f}%), "
                  f"at sync price: {billed_sync}")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=2000, help="deferred jobs in the backlog")
    parser.add_argument("--over", type=float, default=10.0, help="backlog tokens / provider limit")
    parser.add_argument("--prompt-chars", type=int, default=400, help="characters of each prompt")
    parser.add_argument("--turnaround", type=float, default=2.0, help="simulated batch turnaround, seconds")
    asyncio.run(main(parser.parse_args()))
