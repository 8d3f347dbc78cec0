"""A local Redis Cluster for tests: three masters (no replicas) as redis-server processes in a temporary directory."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import redis

from tests.support.servers import free_port, redis_server_binary

MASTERS = 3
STARTUP_TIMEOUT = 30.0


class RedisClusterServers:
    """Three cluster-mode redis-servers, their slots assigned with `redis-cli --cluster create`."""

    def __init__(self, directory: Path, *, masters: int = MASTERS) -> None:
        self.directory = directory
        self.ports = [free_port() for _ in range(masters)]
        self.bus_ports = [free_port() for _ in range(masters)]  # the default, port + 10000, may pass 65535
        self.processes: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        """How batchgate is told "this is a cluster": the `redis+cluster://` scheme, any node as the seed."""
        return f"redis+cluster://127.0.0.1:{self.ports[0]}"

    @property
    def node_urls(self) -> list[str]:
        return [f"redis://127.0.0.1:{port}" for port in self.ports]

    def start(self) -> RedisClusterServers:
        for port, bus_port in zip(self.ports, self.bus_ports, strict=True):
            node_dir = self.directory / str(port)
            node_dir.mkdir(parents=True, exist_ok=True)
            args = [
                redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(node_dir),
                "--cluster-enabled", "yes", "--cluster-port", str(bus_port), "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", "5000", "--logfile", str(node_dir / "redis.log"),
                "--appendonly", "no", "--save", "", "--protected-mode", "no",
            ]  # fmt: skip
            self.processes.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        try:
            for port, process in zip(self.ports, self.processes, strict=True):
                _wait_for_ping(port, process)
            nodes = [f"127.0.0.1:{port}" for port in self.ports]
            create = subprocess.run(
                ["redis-cli", "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"],
                capture_output=True,
                timeout=60,
                check=False,
            )
            if create.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed: {create.stdout.decode()[-2000:]}")
            for port in self.ports:
                _wait_for_cluster_ok(port)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes = []

    def master_holding(self, key: str) -> int:
        """The port of the master that serves `key`'s slot."""
        with redis.Redis(port=self.ports[0]) as client:
            slot = int(client.cluster("KEYSLOT", key))
            for start, end, primary, *_ in client.cluster("SLOTS"):
                if int(start) <= slot <= int(end):
                    return int(primary[1])
        raise LookupError(f"no master serves the slot of {key}")

    def keys_per_master(self) -> dict[int, list[str]]:
        """Every key, by the port of the master that stores it."""
        found: dict[int, list[str]] = {}
        for port in self.ports:
            with redis.Redis(port=port) as client:
                found[port] = [key.decode() for key in client.scan_iter(count=1000)]
        return found


def _wait_for_ping(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    with redis.Redis(port=port, socket_connect_timeout=0.5) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"cluster node on port {port} exited with status {process.returncode}")
            with contextlib.suppress(redis.ConnectionError, redis.BusyLoadingError):
                if client.ping():
                    return
            time.sleep(0.05)
    raise RuntimeError(f"cluster node on port {port} did not start")


def _wait_for_cluster_ok(port: int) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    with redis.Redis(port=port) as client:
        while time.monotonic() < deadline:
            info = client.execute_command("CLUSTER", "INFO")
            text = info.decode() if isinstance(info, bytes) else str(info)
            if "cluster_state:ok" in text:
                return
            time.sleep(0.1)
    raise RuntimeError(f"cluster node on port {port} never reached cluster_state:ok")


@contextlib.contextmanager
def running_cluster(directory: Path) -> Iterator[RedisClusterServers]:
    cluster = RedisClusterServers(directory).start()
    try:
        yield cluster
    finally:
        cluster.stop()
