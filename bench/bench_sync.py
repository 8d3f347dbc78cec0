"""Synchronous path overhead: client -> gateway -> simulated upstream vs client -> simulated upstream.

Every target is measured in the same run, alternating, with wrk (a C load generator, so the client costs little
CPU) on loopback: sequentially (1 connection) and at 50 concurrent connections. Targets: the simulated upstream
directly, batchgate (`serve --no-worker`, `--workers N` processes), and LiteLLM's proxy when a separate venv
holds it (`--litellm /path/to/venv/bin/litellm`). Then streaming: sequential streamed calls through each target,
time to first byte and the gaps between SSE events as the client sees them. For every run, the CPU seconds each
process (with its children) used. Usage:

    python bench/bench_sync.py [--seconds 10] [--rounds 2] [--workers 1] [--litellm PATH] [--granian PATH] [--record]

Needs `wrk` (Debian package) on PATH. `--record` appends the tables to bench/RESULTS.md.
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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-bench-master-6f1c2a9e4b7d8035e1f2a3b4c5d6e7f8"  # LiteLLM refuses to start on a weak key
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
    deadline = time.monotonic() + 240  # importing litellm takes a minute on a loaded machine
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
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


@dataclass
class Target:
    name: str
    url: str
    pid: int


@dataclass
class Stack:
    upstream: Target
    gateways: list[Target] = field(default_factory=list)
    redis_url: str = ""

    @property
    def targets(self) -> list[Target]:
        return [self.upstream, *self.gateways]


def model_list(sim_url: str) -> list[dict[str, object]]:
    params = {"model": "openai/gpt-4o-mini", "api_base": sim_url + "/v1", "api_key": "sk-x-123456"}
    return [{"model_name": "gpt-4o-mini", "litellm_params": params}]


@contextlib.contextmanager
def full_stack(
    workdir: Path, *, workers: int = 1, litellm: str | None = None, granian: str | None = None
) -> Iterator[Stack]:
    """The simulated upstream, batchgate in front of it and, when `litellm` names its CLI, LiteLLM's proxy; when
    `granian` names granian's CLI (in a venv holding batchgate), batchgate's app served by granian too."""
    # Default log level: the proxy writes its one access line per request, as it would in production.
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "BATCHGATE_LOG_LEVEL": "INFO"}
    sim_port, proxy_port = free_port(), free_port()
    sim_url = f"http://127.0.0.1:{sim_port}"
    proxy_url = f"http://127.0.0.1:{proxy_port}"
    config = {"model_list": model_list(sim_url), "auth": {"master_key": KEY}}
    config_path = workdir / "bench.yaml"
    config_path.write_text(yaml.safe_dump(config))
    python = sys.executable
    with contextlib.ExitStack() as stack_:
        from proxy.embedded_redis import embedded_redis  # noqa: PLC0415

        redis_url = stack_.enter_context(embedded_redis(workdir / "redis"))
        sim = stack_.enter_context(
            process(
                [python, "-m", "proxy", "simulate-upstream", "--port", str(sim_port)],
                env,
                sim_url + "/_sim/config",
                workdir / "simulator.log",
            )
        )
        result = Stack(Target("direct", sim_url, sim.pid), redis_url=redis_url)
        proxy_env = {**env, "BATCHGATE_REDIS_URL": redis_url, "BATCHGATE_CONFIG": str(config_path)}
        serve = [python, "-m", "proxy", "serve", "--no-worker", "--port", str(proxy_port)]
        if workers > 1:
            serve += ["--workers", str(workers)]
        gate = stack_.enter_context(process(serve, proxy_env, proxy_url + "/healthz", workdir / "batchgate.log"))
        result.gateways.append(Target("batchgate" if workers == 1 else f"batchgate x{workers}", proxy_url, gate.pid))
        if granian:
            port = free_port()
            command = [granian, "--interface", "asgi", "--factory", "--host", "127.0.0.1", "--port", str(port)]
            command += ["--workers", "1", "--loop", "uvloop", "--log-level", "warning", "--no-ws", "granian_app:app"]
            served = stack_.enter_context(
                process(
                    command,
                    {**proxy_env, "PYTHONPATH": f"{ROOT / 'bench'}:{ROOT}"},
                    f"http://127.0.0.1:{port}/healthz",
                    workdir / "granian.log",
                )
            )
            result.gateways.append(Target("batchgate on granian", f"http://127.0.0.1:{port}", served.pid))
        if litellm:
            port = free_port()
            litellm_config = workdir / "litellm.yaml"
            litellm_config.write_text(
                yaml.safe_dump({"model_list": model_list(sim_url), "general_settings": {"master_key": KEY}})
            )
            child = stack_.enter_context(
                process(
                    [litellm, "--config", str(litellm_config), "--port", str(port), "--num_workers", "1"],
                    {**env, "LITELLM_LOG": "ERROR"},
                    f"http://127.0.0.1:{port}/health/liveliness",
                    workdir / "litellm.log",
                )
            )
            result.gateways.append(Target("litellm", f"http://127.0.0.1:{port}", child.pid))
        yield result


@contextlib.contextmanager
def stack(workdir: Path) -> Iterator[tuple[str, str, str]]:
    """The simulated upstream and batchgate: (upstream url, batchgate url, redis url)."""
    with full_stack(workdir) as running:
        yield running.upstream.url, running.gateways[0].url, running.redis_url


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) that `pid` and its live descendants have used so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
            for task in Path(f"/proc/{current}/task").iterdir():
                with contextlib.suppress(OSError):
                    pending.extend(int(child) for child in (task / "children").read_text().split())
    return total


class CpuMeter:
    """CPU used by the upstream and a gateway process during one measurement."""

    def __init__(self, pids: Sequence[int]) -> None:
        self.pids = list(pids)
        self.before = [cpu_seconds(pid) for pid in self.pids]

    def used(self) -> list[float]:
        return [cpu_seconds(pid) - before for pid, before in zip(self.pids, self.before, strict=True)]


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


@dataclass
class Run:
    """One gateway (or the upstream alone) at one concurrency: its wrk figures and the CPU each process used."""

    target: str
    connections: int
    sample: Sample
    upstream_cpu: float
    gateway_cpu: float


def measure(running: Stack, connections: int, seconds: int, rounds: int, script: Path) -> list[Run]:
    for target in running.targets:  # warm-up: connection pools, caches
        run_wrk(target.url, script, connections, 2)
    samples: dict[str, list[Sample]] = {t.name: [] for t in running.targets}
    cpu: dict[str, list[float]] = {t.name: [0.0, 0.0] for t in running.targets}
    for _ in range(rounds):
        for target in running.targets:
            gateway = target is not running.upstream
            meter = CpuMeter([running.upstream.pid, target.pid] if gateway else [running.upstream.pid])
            samples[target.name].append(run_wrk(target.url, script, connections, seconds))
            used = meter.used()
            cpu[target.name][0] += used[0]
            cpu[target.name][1] += used[1] if gateway else 0.0
    return [Run(t.name, connections, merge(samples[t.name]), cpu[t.name][0], cpu[t.name][1]) for t in running.targets]


@dataclass
class StreamFigures:
    target: str
    ttfb_ms: list[float]
    gap_ms: list[float]
    total_ms: list[float]
    events: int


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


async def stream_calls(url: str, calls: int) -> tuple[list[float], list[float], list[float], int]:
    """`calls` sequential streamed calls on one keep-alive connection: time to the first SSE event, the gaps
    between events, the time to the last, in ms; and the events seen."""
    import aiohttp  # noqa: PLC0415

    body = json.dumps({**BODY, "stream": True}).encode()
    headers = {"content-type": "application/json", "authorization": f"Bearer {KEY}"}
    ttfb, gaps, totals, events = [], [], [], 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
        for _ in range(calls):
            started = time.perf_counter()
            last = None
            async with session.post(url + "/v1/chat/completions", data=body, headers=headers) as response:
                response.raise_for_status()
                async for line in response.content:
                    if not line.startswith(b"data:"):
                        continue
                    now = time.perf_counter()
                    events += 1
                    if last is None:
                        ttfb.append((now - started) * 1000)
                    else:
                        gaps.append((now - last) * 1000)
                    last = now
            if last is not None:
                totals.append((last - started) * 1000)
    return ttfb, gaps, totals, events


def measure_streams(running: Stack, calls: int, rounds: int) -> list[StreamFigures]:
    import asyncio  # noqa: PLC0415

    figures = {t.name: StreamFigures(t.name, [], [], [], 0) for t in running.targets}
    for target in running.targets:
        asyncio.run(stream_calls(target.url, 20))  # warm-up
    for _ in range(rounds):
        for target in running.targets:
            ttfb, gaps, totals, events = asyncio.run(stream_calls(target.url, calls))
            figure = figures[target.name]
            figure.ttfb_ms += ttfb
            figure.gap_ms += gaps
            figure.total_ms += totals
            figure.events += events
    return list(figures.values())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1, help="batchgate serving processes (serve --workers)")
    parser.add_argument("--litellm", help="LiteLLM's CLI in its own venv (e.g. /work/bench-litellm/bin/litellm)")
    parser.add_argument("--granian", help="granian's CLI in a venv holding batchgate: its app served by granian too")
    parser.add_argument("--streams", type=int, default=300, help="streamed calls per target per round")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    with (
        tempfile.TemporaryDirectory() as tmp,
        full_stack(Path(tmp), workers=args.workers, litellm=args.litellm, granian=args.granian) as running,
    ):
        script = Path(tmp) / "post.lua"
        script.write_text(wrk_script(BODY))
        runs = [run for conns in (1, 50) for run in measure(running, conns, args.seconds, args.rounds, script)]
        streams = measure_streams(running, args.streams, args.rounds) if args.streams else []
    table = render(runs, streams, args)
    print(table)
    if args.record:
        with (ROOT / "bench" / "RESULTS.md").open("a", encoding="utf-8") as results:
            results.write("\n" + table + "\n")
    return 0


def render(runs: list[Run], streams: list[StreamFigures], args: argparse.Namespace) -> str:
    command = f"python bench/bench_sync.py --seconds {args.seconds} --rounds {args.rounds} --streams {args.streams}"
    if args.workers > 1:
        command += f" --workers {args.workers}"
    if args.litellm:
        command += f" --litellm {args.litellm}"
    if args.granian:
        command += f" --granian {args.granian}"
    lines = [
        f"### Sync path, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, {os.cpu_count()} cores",
        "",
        f"Command: `{command}`",
        "",
        "| connections | path | req/s | p50 ms | p90 ms | p99 ms | errors | upstream CPU s | gateway CPU s "
        "| gateway CPU ms/req |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    summary = []
    for run in runs:
        s = run.sample
        per_request = f"{run.gateway_cpu * 1000 / s.requests:.3f}" if run.gateway_cpu and s.requests else "-"
        lines.append(
            f"| {run.connections} | {run.target} | {s.rps:,.0f} | {s.p50_us / 1000:.2f} | {s.p90_us / 1000:.2f} | "
            f"{s.p99_us / 1000:.2f} | {s.errors} | {run.upstream_cpu:.1f} | "
            f"{run.gateway_cpu:.1f} | {per_request} |"
        )
    for connections in sorted({run.connections for run in runs}):
        of = [run for run in runs if run.connections == connections]
        direct = of[0].sample
        for run in of[1:]:
            s = run.sample
            summary.append(
                f"- {connections} connection(s), {run.target}: added p50 {(s.p50_us - direct.p50_us) / 1000:.2f} ms, "
                f"added p99 {(s.p99_us - direct.p99_us) / 1000:.2f} ms, throughput {s.rps / direct.rps:.0%} of direct"
            )
    if streams:
        lines += [
            "",
            "| streamed calls | path | TTFB p50 ms | TTFB p99 ms | gap p50 ms | gap p99 ms | last event p50 ms "
            "| events/call |",
            "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for figure in streams:
            calls = len(figure.ttfb_ms)
            lines.append(
                f"| {calls} | {figure.target} | {percentile(figure.ttfb_ms, 0.5):.2f} | "
                f"{percentile(figure.ttfb_ms, 0.99):.2f} | {percentile(figure.gap_ms, 0.5):.3f} | "
                f"{percentile(figure.gap_ms, 0.99):.3f} | {percentile(figure.total_ms, 0.5):.2f} | "
                f"{figure.events / max(calls, 1):.0f} |"
            )
        direct_ttfb = percentile(streams[0].ttfb_ms, 0.5)
        for figure in streams[1:]:
            summary.append(
                f"- streaming, {figure.target}: added TTFB p50 {percentile(figure.ttfb_ms, 0.5) - direct_ttfb:.2f} ms"
            )
    return "\n".join([*lines, "", *summary])


if __name__ == "__main__":
    raise SystemExit(main())
