"""`batchgate demo`: a mixed sample workload through the official openai client, then a receipt.

It sends urgent calls (answered at once, list price), deferrable calls (`X-Batch-Deadline`, answered through a
provider batch at batch price) and, for models with a flex tier, calls whose deadline is minutes away (flex).
Deadlines are picked from the server's own batching knobs (`GET /v1/status`): just long enough for the batch
lane, so the queue is flushed within seconds by its deadline slack instead of waiting `max_wait`.
While jobs run it prints their progress; at the end, a receipt whose money comes from the server's savings
ledger (`GET /v1/savings` before and after: other traffic sent meanwhile would be counted too).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

import httpx

from proxy.settings import DEV_MASTER_KEY
from proxy.status import DEFAULT_URL, KEY_ENV, URL_ENV, percent, usd

DEFAULT_CALLS = 24
BATCH_SLACK = 10.0  # seconds of deadline beyond what the batch lane needs: the queue flushes ~8 s after the call
FLEX_SLACK = 60.0
POLL_SECONDS = 1.0
LEDGER_WAIT = 20.0
FALLBACK_MODELS = ("gpt-4o-mini", "gpt-5-mini")
PROMPTS = (
    "Summarise why batch APIs cost half as much, in one sentence.",
    "Classify the sentiment of: 'the delivery was late but the support was great'.",
    "Translate 'good morning' into French, German and Spanish.",
    "Give three names for a proxy that saves money on LLM calls.",
    "Extract the date from: 'the invoice is due on 3 March 2026'.",
    "Write a haiku about queues.",
)
Kind = Literal["urgent", "deferrable", "soon"]


@dataclass
class Call:
    index: int
    model: str
    kind: Kind
    deadline_header: str | None = None
    lane: str | None = None
    status: str = "sending"
    job_id: str | None = None
    deadline_at: float | None = None
    finished_at: float | None = None
    rescued: bool = False

    @property
    def final(self) -> bool:
        return self.status in ("completed", "failed", "cancelled", "error")


@dataclass(frozen=True)
class ModelKnobs:
    model: str
    supports_flex: bool
    batch_needs: float  # turnaround estimate + safety margin: the shortest deadline the batch lane takes
    flex_needs: float


def plan(models: list[ModelKnobs], calls: int) -> list[Call]:
    """A quarter urgent, half deferrable to the batch lane, a quarter due in minutes (flex where it exists)."""
    flex_models = [m for m in models if m.supports_flex and m.flex_needs + FLEX_SLACK < m.batch_needs]
    planned: list[Call] = []
    for index in range(calls):
        knobs = models[index % len(models)]
        slot = index % 4
        if slot == 0:
            planned.append(Call(index, knobs.model, "urgent"))
        elif slot == 3 and flex_models:
            flex = flex_models[index % len(flex_models)]
            planned.append(Call(index, flex.model, "soon", f"{int(flex.flex_needs + FLEX_SLACK)}s"))
        else:
            planned.append(Call(index, knobs.model, "deferrable", f"{int(knobs.batch_needs + BATCH_SLACK)}s"))
    return planned


class Demo:
    def __init__(self, url: str, key: str, *, out: Any = None) -> None:
        self.url = url.rstrip("/")
        self.key = key
        self.out = out
        self.http = httpx.AsyncClient(base_url=self.url, headers={"authorization": f"Bearer {key}"}, timeout=60)
        self.started = time.monotonic()

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    async def run(self, calls: int, *, patience: float) -> int:
        import openai  # noqa: PLC0415 - the official client, as any caller of batchgate

        models = await self.models()
        since = (datetime.now(UTC) - timedelta(hours=1)).replace(minute=0, second=0, microsecond=0)
        before = await self.savings(since)
        planned = plan(models, calls)
        kinds = Counter(call.kind for call in planned)
        self.say(
            f"batchgate demo: {calls} calls to {self.url} on {', '.join(m.model for m in models)}"
            f" ({kinds['urgent']} urgent, {kinds['deferrable']} deferrable, {kinds['soon']} due in minutes)"
        )
        client = openai.AsyncOpenAI(base_url=self.url + "/v1", api_key=self.key, max_retries=2)
        try:
            await asyncio.gather(*(self.send(client, call) for call in planned))
        finally:
            await client.close()
        await self.follow(planned, patience=patience)
        after = await self.wait_for_ledger(since, before, len(planned))
        self.receipt(planned, before, after)
        return 0 if all(call.status == "completed" for call in planned) else 1

    async def models(self) -> list[ModelKnobs]:
        response = await self.http.get("/v1/status", params={"since": "1h"})
        response.raise_for_status()
        found = [
            ModelKnobs(
                model=entry["model"],
                supports_flex=bool(entry["supports_flex"]),
                batch_needs=entry["turnaround_estimate_seconds"] + entry["safety_margin_seconds"],
                flex_needs=entry["flex_turnaround_seconds"] + entry["safety_margin_seconds"],
            )
            for entry in response.json()["models"]
        ]
        preferred = [m for m in found if m.model in FALLBACK_MODELS] or found
        return preferred[:2]

    async def savings(self, since: datetime) -> dict[str, Any]:
        response = await self.http.get("/v1/savings", params={"since": since.isoformat().replace("+00:00", "Z")})
        response.raise_for_status()
        totals: dict[str, Any] = response.json()["totals"]
        return totals

    async def send(self, client: Any, call: Call) -> None:
        headers = {"Idempotency-Key": str(uuid.uuid4())}
        if call.deadline_header:
            headers["X-Batch-Deadline"] = call.deadline_header
        try:
            raw = await client.chat.completions.with_raw_response.create(
                model=call.model,
                messages=[{"role": "user", "content": PROMPTS[call.index % len(PROMPTS)]}],
                max_tokens=64,
                extra_headers=headers,
            )
        except Exception as exc:  # a failed call is shown in the receipt, not raised
            call.status = "error"
            self.say(f"  call {call.index} ({call.model}) failed: {exc}")
            return
        if raw.http_response.status_code == 202:
            job = raw.http_response.json()
            call.job_id, call.status, call.lane = job["id"], job["status"], job.get("lane")
            return
        decision = raw.headers.get("x-batchgate-decision", "")
        call.lane = _decision_lane(decision) or "sync"
        call.status = "completed"

    async def follow(self, calls: list[Call], *, patience: float) -> None:
        """Poll the deferred jobs until every one is answered, printing their progress as it changes."""
        jobs = [call for call in calls if call.job_id]
        if not jobs:
            return
        end = time.monotonic() + patience
        shown = ""
        while True:
            waiting = [call for call in jobs if not call.final]
            await asyncio.gather(*(self.refresh(call) for call in waiting))
            line = self.progress_line(jobs) + await self.batches_line()
            if line != shown:
                self.say(f"  [{time.monotonic() - self.started:5.1f}s] {line}")
                shown = line
            if all(call.final for call in jobs) or time.monotonic() > end:
                return
            await asyncio.sleep(POLL_SECONDS)

    async def refresh(self, call: Call) -> None:
        response = await self.http.get(f"/v1/deferred/{call.job_id}")
        if response.status_code != 200:
            return
        job = response.json()
        call.status, call.lane = job["status"], job.get("lane", call.lane)
        call.rescued = bool(job.get("rescued"))
        call.finished_at = job.get("finished_at")
        if job.get("deadline"):
            call.deadline_at = datetime.fromisoformat(job["deadline"].replace("Z", "+00:00")).timestamp()

    @staticmethod
    def progress_line(jobs: list[Call]) -> str:
        counts = Counter(call.status for call in jobs)
        order = ("queued", "submitted", "completed", "failed", "cancelled")
        return "deferred calls: " + ", ".join(f"{counts[s]} {s}" for s in order if counts[s])

    async def batches_line(self) -> str:
        response = await self.http.get("/v1/status", params={"since": "1h"})
        if response.status_code != 200:
            return ""
        batches = [batch for queue in response.json()["queues"] for batch in queue["batches"]]
        if not batches:
            return ""
        parts = [
            f"{b['model']} {b['state']}"
            + (f" {b['progress_percent']:.0f}%" if b["progress_percent"] is not None else "")
            for b in batches
        ]
        return " | batches: " + ", ".join(parts)

    async def wait_for_ledger(self, since: datetime, before: dict[str, Any], calls: int) -> dict[str, Any]:
        """The ledger is written just after each answer: wait until it counts every call of the demo."""
        end = time.monotonic() + LEDGER_WAIT
        while True:
            after = await self.savings(since)
            if after["requests"] - before["requests"] >= calls or time.monotonic() > end:
                return after
            await asyncio.sleep(0.2)

    def receipt(self, calls: list[Call], before: dict[str, Any], after: dict[str, Any]) -> None:
        lanes = Counter(call.lane or "unanswered" for call in calls)
        with_deadline = [call for call in calls if call.job_id]
        met = [
            call
            for call in with_deadline
            if call.status == "completed"
            and call.finished_at is not None
            and call.deadline_at is not None
            and call.finished_at <= call.deadline_at
        ]
        rescued = sum(call.rescued for call in calls)
        failed = sum(call.status != "completed" for call in calls)
        list_usd = _delta(after, before, "list_usd")
        paid_usd = _delta(after, before, "paid_usd")
        saved_usd = list_usd - paid_usd
        share = float(saved_usd * 100 / list_usd) if list_usd else None
        lane_text = ", ".join(
            f"{lane} {lanes[lane]}" for lane in ("sync", "batch", "flex", "unanswered") if lanes[lane]
        )
        self.say("")
        self.say("Receipt")
        self.say(f"  calls           {len(calls)}  ({lane_text})")
        if rescued or failed:
            self.say(f"  rescued         {rescued}   not answered {failed}")
        self.say(f"  deadlines met   {len(met)} of {len(with_deadline)} deferred calls")
        self.say(f"  list cost       {usd(list_usd)}")
        self.say(f"  paid cost       {usd(paid_usd)}")
        self.say(f"  saved           {usd(saved_usd)} ({percent(share)})")
        self.say(f"  took            {time.monotonic() - self.started:.1f}s")
        self.say("See GET /v1/savings and `batchgate status` for the running totals.")

    async def aclose(self) -> None:
        await self.http.aclose()


def _delta(after: dict[str, Any], before: dict[str, Any], field: str) -> Decimal:
    return Decimal(after[field]) - Decimal(before[field])


def _decision_lane(header: str) -> str | None:
    for part in header.split(";"):
        name, _, value = part.strip().partition("=")
        if name == "lane":
            return value
    return None


def add_arguments(commands: Any) -> None:
    """Register `batchgate demo` on the CLI's subcommands."""
    parser = commands.add_parser("demo", help="send a mixed sample workload to a running batchgate; print a receipt")
    parser.add_argument("--url", default=os.environ.get(URL_ENV, DEFAULT_URL), help=f"batchgate URL ({URL_ENV})")
    parser.add_argument(
        "--key", default=os.environ.get(KEY_ENV), help=f"API key, a secret ({KEY_ENV}; default: dev key)"
    )
    parser.add_argument("--calls", type=int, default=DEFAULT_CALLS, help=f"how many calls (default {DEFAULT_CALLS})")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the deferred calls")
    parser.set_defaults(handler=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    if args.calls < 1:
        print("batchgate demo: --calls must be at least 1")
        return 2
    return asyncio.run(_main(args.url, args.key or DEV_MASTER_KEY, args.calls, args.timeout))


async def _main(url: str, key: str, calls: int, patience: float) -> int:
    demo = Demo(url, key)
    try:
        return await demo.run(calls, patience=patience)
    except httpx.HTTPError as exc:
        print(f"batchgate demo: cannot talk to {url}: {exc}")
        return 1
    finally:
        await demo.aclose()
