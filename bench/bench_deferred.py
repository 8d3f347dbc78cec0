"""Deferred-lane benchmark: durable acceptance rate, building + uploading a 50,000-request batch, ingesting it.

    LITELLM_LOCAL_MODEL_COST_MAP=True /work/venv/bin/python bench/bench_deferred.py [--accept 20000] [--batch 50000]

Runs a private redis-server (append-only, fsync every second) and the simulated upstream as a child process.
Acceptance goes through `proxy.jobs.service.accept` (what the chat route calls) and the job store: the durable
write path without HTTP. The batch phase measures the submitter's flush (claim, stream the JSONL to disk,
upload) with tracemalloc for peak Python memory; the ingest phase measures the poller on the ended batch.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from local_stack import local_stack

from proxy.jobs.service import accept
from proxy.policy.decision import Decision
from proxy.store import keys
from proxy.worker.runner import Worker
from tests.support.deferred_env import ALICE, chat_body

MODEL_ACCEPT, MODEL_BATCH = "gpt-4o-mini", "gpt-5-mini"
CONCURRENCY = 64


async def accept_many(runtime, model: str, count: int, *, concurrency: int = CONCURRENCY) -> float:  # type: ignore[no-untyped-def]
    decision = Decision(deferred=True, lane="batch", rule="bench", reason="bench")
    queue = iter(range(count))

    async def client() -> None:
        for number in queue:
            body = chat_body(model, f"benchmark question {number}: what is {number} squared?")
            await accept(runtime.store, runtime.config, ALICE, body, decision)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return time.perf_counter() - started


async def ingest(runtime, worker: Worker, tag: str) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    """Wait for the group's open batch to end upstream, then time the poller ingesting it."""
    (batch_id,) = await worker.ctx.store.batches.open_ids(tag)
    record = await worker.ctx.store.batches.get(tag, batch_id)
    assert record is not None
    assert record.provider_batch_id is not None
    client = runtime.batch_client(MODEL_BATCH)
    while not (await client.retrieve(record.provider_batch_id)).state.is_terminal:  # noqa: ASYNC110
        await asyncio.sleep(0.5)
    await worker.ctx.store.batches.schedule(tag, batch_id, at=0)
    started = time.perf_counter()
    await worker.poller.visit(tag, batch_id)
    return time.perf_counter() - started, await worker.ctx.store.batches.remaining(tag, batch_id)


async def main(args: argparse.Namespace) -> None:
    sections = {
        "batching": {"max_wait": "1h", "max_requests": 50_000, "turnaround_estimate": "1h"},
        "worker": {"lease": 30, "safety_margin": 60, "poll_interval_min": 0.5},
    }
    with tempfile.TemporaryDirectory() as scratch:
        async with local_stack(Path(scratch), simulator_args=["--turnaround-s", "2"], **sections) as stack:
            runtime = stack.runtime
            seconds = await accept_many(runtime, MODEL_ACCEPT, args.accept)
            print(f"accepted durably: {args.accept} jobs in {seconds:.2f} s = {args.accept / seconds:,.0f} jobs/s "
                  f"(one process, {CONCURRENCY} concurrent callers, store path, no HTTP)")  # fmt: skip

            worker = Worker(runtime, worker_id="bench")
            tag = keys.group_tag(MODEL_BATCH)

            await accept_many(runtime, MODEL_BATCH, args.batch)
            started = time.perf_counter()
            await worker.submitter.flush(tag, MODEL_BATCH, drain=True)
            built = time.perf_counter() - started
            print(f"built + uploaded a {args.batch}-request batch: {built:.2f} s")
            ingested, left = await ingest(runtime, worker, tag)
            print(f"ingested {args.batch} results: {ingested:.2f} s ({args.batch / ingested:,.0f} results/s), "
                  f"jobs left unanswered: {left}")  # fmt: skip

            await accept_many(runtime, MODEL_BATCH, args.batch)
            tracemalloc.start()
            baseline = tracemalloc.get_traced_memory()[0]
            started = time.perf_counter()
            await worker.submitter.flush(tag, MODEL_BATCH, drain=True)
            traced = time.perf_counter() - started
            peak = tracemalloc.get_traced_memory()[1] - baseline
            tracemalloc.stop()
            print(f"the same again under tracemalloc: {traced:.2f} s, peak Python memory growth {peak / 1e6:.1f} MB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--accept", type=int, default=20_000, help="jobs for the acceptance-rate phase")
    parser.add_argument("--batch", type=int, default=50_000, help="requests in the batch phase")
    asyncio.run(main(parser.parse_args()))
