"""Synchronous path overhead: client -> batchgate -> simulated upstream vs client -> simulated upstream.

Both paths are measured in the same run, alternating, with wrk (a C load generator, so the client costs little
CPU) on loopback: sequentially (1 connection) and at 50 concurrent connections. Reports added latency (p50, p99)
and the throughput ratio. Usage:

    python bench/bench_sync.py [--seconds 10] [--rounds 2] [--record]

Needs `wrk` (Debian package) on PATH. `--record` appends the table to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-bench-master"
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Summarise the plot of Hamlet."}]}
WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = [[%s]]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %s"
done = function(summary, latency, requests)
  local shape = 'RESULT {"requests": %%d, "errors": %%d, "seconds": %%f, '
    .. '"p50": %%d, "p90": %%d, "p99": %%d}\\n'
  io.write(string.format(shape,
    summary.requests, summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.timeout, summary.duration / 1e6, latency:percentile(50), latency:percentile(90),
    latency:percentile(99)))
end
"""


@dataclass
class Sample:
    requests: int
    errors: int
    seconds: float
    p50_us: int
    p90_us: int
    p99_us: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def free_port() -> int:
    import socket  # noqa: PLC0415

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code < 500:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


@contextlib.contextmanager
def process(args: list[str], env: dict[str, str], ready_url: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as sink:
        child = subprocess.Popen(args, env=env, cwd=ROOT, stdout=sink, stderr=sink)
    try:
        wait_for(ready_url)
        yield child
    finally:
        child.terminate()
        child.wait(timeout=20)


@contextlib.contextmanager
def stack(workdir: Path) -> Iterator[tuple[str, str, str]]:
    # Default log level: the proxy writes its one access line per request, as it would in production.
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "BATCHGATE_LOG_LEVEL": "INFO"}
    sim_port, proxy_port = free_port(), free_port()
    sim_url = f"http://127.0.0.1:{sim_port}"
    proxy_url = f"http://127.0.0.1:{proxy_port}"
    config = {
        "model_list": [
            {
                "model_name": "gpt-4o-mini",
                "litellm_params": {
                    "model": "openai/gpt-4o-mini",
                    "api_base": sim_url + "/v1",
                    "api_key": "sk-x-123456",
                },
            }
        ],
        "auth": {"master_key": KEY},
    }
    config_path = workdir / "bench.yaml"
    config_path.write_text(yaml.safe_dump(config))
    python = sys.executable
    with contextlib.ExitStack() as stack_:
        from proxy.embedded_redis import embedded_redis  # noqa: PLC0415

        redis_url = stack_.enter_context(embedded_redis(workdir / "redis"))
        stack_.enter_context(
            process(
                [python, "-m", "proxy", "simulate-upstream", "--port", str(sim_port)],
                env,
                sim_url + "/_sim/config",
                workdir / "simulator.log",
            )
        )
        proxy_env = {**env, "BATCHGATE_REDIS_URL": redis_url, "BATCHGATE_CONFIG": str(config_path)}
        stack_.enter_context(
            process(
                [python, "-m", "proxy", "serve", "--no-worker", "--port", str(proxy_port)],
                proxy_env,
                proxy_url + "/healthz",
                workdir / "batchgate.log",
            )
        )
        yield sim_url, proxy_url, redis_url


def wrk_script(body: dict[str, object], *, headers: dict[str, str] | None = None) -> str:
    extra = "".join(f'wrk.headers["{name}"] = "{value}"\n' for name, value in (headers or {}).items())
    return WRK_SCRIPT % (json.dumps(body), KEY) + extra


def run_wrk(url: str, script: Path, connections: int, seconds: int) -> Sample:
    threads = 1 if connections == 1 else 2
    output = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds}s",
            "-s",
            str(script),
            url + "/v1/chat/completions",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = next(line for line in output.splitlines() if line.startswith("RESULT "))
    data = json.loads(line.removeprefix("RESULT "))
    return Sample(data["requests"], data["errors"], data["seconds"], data["p50"], data["p90"], data["p99"])


def merge(samples: list[Sample]) -> Sample:
    """Requests and time add up; percentiles are the median across rounds (wrk gives no raw latencies)."""

    def median(values: list[int]) -> int:
        return sorted(values)[len(values) // 2]

    return Sample(
        sum(s.requests for s in samples),
        sum(s.errors for s in samples),
        sum(s.seconds for s in samples),
        median([s.p50_us for s in samples]),
        median([s.p90_us for s in samples]),
        median([s.p99_us for s in samples]),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    rows = []
    with tempfile.TemporaryDirectory() as tmp, stack(Path(tmp)) as (sim_url, proxy_url, _redis_url):
        script = Path(tmp) / "post.lua"
        script.write_text(wrk_script(BODY))
        for connections in (1, 50):
            run_wrk(proxy_url, script, connections, 2)  # warm-up: connection pools, caches
            run_wrk(sim_url, script, connections, 2)
            direct, proxied = [], []
            for _ in range(args.rounds):
                direct.append(run_wrk(sim_url, script, connections, args.seconds))
                proxied.append(run_wrk(proxy_url, script, connections, args.seconds))
            rows.append((connections, merge(direct), merge(proxied)))
    table = render(rows, args)
    print(table)
    if args.record:
        with (ROOT / "bench" / "RESULTS.md").open("a", encoding="utf-8") as results:
            results.write("\n" + table + "\n")
    return 0


def render(rows: list[tuple[int, Sample, Sample]], args: argparse.Namespace) -> str:
    lines = [
        f"### Sync path, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, {os.cpu_count()} cores",
        "",
        f"Command: `python bench/bench_sync.py --seconds {args.seconds} --rounds {args.rounds}`",
        "",
        "| connections | path | req/s | p50 ms | p90 ms | p99 ms | errors |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    summary = []
    for connections, direct, proxied in rows:
        for name, sample in (("direct", direct), ("batchgate", proxied)):
            lines.append(
                f"| {connections} | {name} | {sample.rps:,.0f} | {sample.p50_us / 1000:.2f} | "
                f"{sample.p90_us / 1000:.2f} | {sample.p99_us / 1000:.2f} | {sample.errors} |"
            )
        summary.append(
            f"- {connections} connection(s): added p50 {(proxied.p50_us - direct.p50_us) / 1000:.2f} ms, "
            f"added p99 {(proxied.p99_us - direct.p99_us) / 1000:.2f} ms, "
            f"throughput {proxied.rps / direct.rps:.0%} of direct"
        )
    return "\n".join([*lines, "", *summary])


if __name__ == "__main__":
    raise SystemExit(main())
