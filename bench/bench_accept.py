"""Deferred requests accepted durably per second, through HTTP, by one `batchgate serve --no-worker` process.

Each request carries `X-Batch-Deadline: 4h`, so it is written to Redis (append-only file, fsync every second)
before its 202 is sent. wrk drives it over loopback at 50 connections; afterwards the jobs in Redis are counted
and must equal the 202s wrk saw. Usage:

    python bench/bench_accept.py [--seconds 10]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import redis
from bench_sync import BODY, run_wrk, stack, wrk_script

from proxy.store import keys

CONNECTIONS = 50


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, stack(Path(tmp)) as (_sim_url, proxy_url, redis_url):
        script = Path(tmp) / "defer.lua"
        script.write_text(wrk_script(BODY, headers={"X-Batch-Deadline": "4h", "Prefer": "respond-async"}))
        sample = run_wrk(proxy_url, script, CONNECTIONS, args.seconds)
        client = redis.Redis.from_url(redis_url)
        stored = client.zcard(keys.pending(keys.group_tag("gpt-4o-mini")))
        client.close()
    print(
        f"### Deferred acceptance over HTTP, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
        f"{os.cpu_count()} cores\n"
    )
    print(f"Command: `python bench/bench_accept.py --seconds {args.seconds}`\n")
    print("| connections | accepted/s | p50 ms | p99 ms | non-2xx or socket errors | jobs in Redis |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    print(
        f"| {CONNECTIONS} | {sample.rps:,.0f} | {sample.p50_us / 1000:.2f} | {sample.p99_us / 1000:.2f} | "
        f"{sample.errors} | {stored:,} (wrk counted {sample.requests:,} responses) |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
