"""The `batchgate` command: serve | worker | simulate-upstream | policy | status | demo."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from proxy.errors import ConfigError
from proxy.settings import DEFAULT_CONFIG_PATH, Config, Settings, load_config

logger = logging.getLogger("batchgate")
BANNER_RULE = "=" * 78
PACKAGED_CONFIG = "default_config.yaml"  # the config `serve` uses when policies/default.yaml is not found


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    result: int = args.handler(args)
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="batchgate", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}", help="print the version")
    commands = parser.add_subparsers(title="commands")

    serve = commands.add_parser("serve", help="run the API (and, unless --no-worker, the worker) in one process")
    _add_common(serve)
    serve.add_argument("--host", help="bind address (BATCHGATE_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (BATCHGATE_PORT, default 8080)")
    serve.add_argument("--no-worker", action="store_true", help="run the API only")
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="serving processes sharing the port (default 1); the batch worker still runs once, in the first",
    )
    serve.set_defaults(handler=run_serve)

    worker = commands.add_parser("worker", help="run the worker only (submitter, poller, rescuer, deliveries)")
    _add_common(worker)
    worker.add_argument("--burst", action="store_true", help="exit once nothing is left to do")
    worker.set_defaults(handler=run_worker_command)

    simulate = commands.add_parser("simulate-upstream", help="run the simulated OpenAI-compatible provider")
    from proxy.simulator import cli as simulator_cli  # noqa: PLC0415

    simulate.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    simulate.add_argument("--port", type=int, default=8001, help="port (default 8001)")
    simulator_cli.add_arguments(simulate)
    simulate.set_defaults(handler=run_simulator)

    from proxy.policy import cli as policy_cli  # noqa: PLC0415

    policy_cli.add_arguments(commands)
    from proxy import demo, status  # noqa: PLC0415

    status.add_arguments(commands)
    demo.add_arguments(commands)
    from proxy import quote_cli  # noqa: PLC0415

    quote_cli.add_arguments(commands)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        return version("batchgate")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML config file (BATCHGATE_CONFIG)")
    parser.add_argument("--redis-url", help="Redis URL (BATCHGATE_REDIS_URL); embedded Redis when unset")


def settings_from(args: argparse.Namespace) -> Settings:
    overrides = {
        name: getattr(args, name)
        for name in ("config", "redis_url", "host", "port")
        if getattr(args, name, None) is not None
    }
    if getattr(args, "no_worker", False):
        overrides["worker"] = False
    return Settings(**overrides)


def with_packaged_config(settings: Settings) -> Settings:
    """`settings` reading the config shipped inside the package when the default path does not exist here
    (`batchgate serve` from any directory); said in the log."""
    if settings.config != DEFAULT_CONFIG_PATH or settings.config.exists():
        return settings
    from importlib.resources import files  # noqa: PLC0415

    packaged = Path(str(files("proxy") / PACKAGED_CONFIG))
    logger.warning(
        "no %s in %s: using the default config shipped with batchgate (%s); set BATCHGATE_CONFIG or --config "
        "to use your own",
        DEFAULT_CONFIG_PATH,
        Path.cwd(),
        packaged,
    )
    return settings.model_copy(update={"config": packaged})


def load_or_exit(settings: Settings) -> Config:
    try:
        return load_config(settings.config)
    except ConfigError as exc:
        print(f"batchgate: invalid configuration\n{exc}", file=sys.stderr)
        raise SystemExit(2) from None


def run_serve(args: argparse.Namespace) -> int:
    from proxy.data_lock import DataDirInUse  # noqa: PLC0415
    from proxy.logs import configure_logging  # noqa: PLC0415
    from proxy.serve import PortUnavailable, bind_listener, serve  # noqa: PLC0415

    settings = settings_from(args)
    configure_logging(settings.log_level, json_lines=settings.log_json)
    settings = with_packaged_config(settings)
    config = load_or_exit(settings)
    try:
        listener = bind_listener(settings.host, settings.port)  # before Redis, the simulator or any worker
    except PortUnavailable as exc:
        print(f"batchgate: {exc}", file=sys.stderr)
        return 1
    exit_on_signal()
    try:
        with listener, embedded_defaults(settings, config) as effective:
            serve(effective, config, listener, processes=max(1, args.workers))
    except DataDirInUse as exc:
        print(f"batchgate: {exc}", file=sys.stderr)
        return 1
    return 0


def exit_on_signal() -> None:
    """uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown; turn that into a normal exit so that the
    embedded Redis and the simulated upstream are stopped by their context managers."""

    def leave(signum: int, _frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, leave)
    signal.signal(signal.SIGINT, leave)


def run_worker_command(args: argparse.Namespace) -> int:
    import asyncio  # noqa: PLC0415

    from proxy.data_lock import DataDirInUse  # noqa: PLC0415
    from proxy.logs import configure_logging  # noqa: PLC0415
    from proxy.worker.process import run_worker_process  # noqa: PLC0415

    settings = settings_from(args)
    configure_logging(settings.log_level, json_lines=settings.log_json)
    settings = with_packaged_config(settings)
    config = load_or_exit(settings)
    try:
        with embedded_defaults(settings, config) as effective:
            asyncio.run(run_worker_process(effective, config, burst=args.burst))
    except DataDirInUse as exc:
        print(f"batchgate: {exc}", file=sys.stderr)
        return 1
    return 0


def run_simulator(args: argparse.Namespace) -> int:
    from proxy.simulator import cli as simulator_cli  # noqa: PLC0415

    simulator_cli.serve(simulator_cli.options_from_args(args), args.host, args.port)
    return 0


@contextlib.contextmanager
def embedded_defaults(settings: Settings, config: Config) -> Iterator[Settings]:
    """Fill in what was not given: an embedded Redis, and the simulated upstream for models with no key."""
    from proxy.embedded_redis import embedded_redis  # noqa: PLC0415
    from proxy.providers.registry import is_simulated  # noqa: PLC0415

    with contextlib.ExitStack() as stack:
        updates: dict[str, object] = {}
        if not settings.redis_url:
            data_dir = settings.data_dir / "redis"
            updates["redis_url"] = stack.enter_context(embedded_redis(data_dir))
            _announce(
                "EMBEDDED REDIS: no BATCHGATE_REDIS_URL was given.",
                f"Started redis-server at {updates['redis_url']}, append-only data in {data_dir.resolve()}.",
                "Set BATCHGATE_REDIS_URL to use your own Redis (required when running several processes).",
            )
        simulated = [d.model_name for d in config.model_list if is_simulated(d)]
        if simulated and not settings.simulator_url:
            updates["simulator_url"] = stack.enter_context(simulated_upstream(settings.simulator_port))
            _announce(
                "SIMULATED UPSTREAM: no provider key is set for " + ", ".join(simulated) + ".",
                f"Their calls go to the simulated provider at {updates['simulator_url']}: answers are FAKE.",
                "Set the provider key (e.g. OPENAI_API_KEY) named in the config to reach the real provider.",
            )
        yield settings.model_copy(update=updates)


@contextlib.contextmanager
def simulated_upstream(port: int) -> Iterator[str]:
    """Run `batchgate simulate-upstream` as a child process for as long as the caller needs it."""
    from proxy.embedded_redis import _free_port, die_with_parent  # noqa: PLC0415

    chosen = port or _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "proxy", "simulate-upstream", "--port", str(chosen)],
        env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
        preexec_fn=die_with_parent,  # noqa: PLW1509 - async-signal-safe: a single prctl call
    )
    url = f"http://127.0.0.1:{chosen}"
    try:
        _wait_for(url + "/_sim/config", process)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def _wait_for(url: str, process: subprocess.Popen[bytes]) -> None:
    import httpx  # noqa: PLC0415

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the simulated upstream exited during start-up")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError("the simulated upstream did not start")


def _announce(*lines: str) -> None:
    logger.warning("\n%s\n%s\n%s", BANNER_RULE, "\n".join(f"  {line}" for line in lines), BANNER_RULE)


if __name__ == "__main__":
    raise SystemExit(main())
