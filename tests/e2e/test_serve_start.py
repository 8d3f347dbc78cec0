"""`batchgate serve` starting and stopping: refusing clearly (port taken, data directory in use), draining held
calls, and several serving processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import redis
import yaml

from proxy.data_lock import data_dir_lock
from tests.support.servers import child_environment, free_port, wait_for_http

START_TIMEOUT = 120  # the child imports the app: slow on a loaded machine, never a measure of success


def run_serve(
    repo_root: Path, tmp_path: Path, *, port: int, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {name: value for name, value in child_environment().items() if not name.startswith("BATCHGATE_")}
    env.update({"BATCHGATE_DATA_DIR": str(tmp_path / "data"), "BATCHGATE_PORT": str(port)})
    return subprocess.run(
        [sys.executable, "-m", "proxy", "serve"],
        cwd=cwd or repo_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
        check=False,
    )


def test_a_taken_port_is_a_clear_nonzero_exit_before_anything_starts(tmp_path: Path, repo_root: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_serve(repo_root, tmp_path, port=port)
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
    assert "listening on" not in result.stderr
    assert "EMBEDDED REDIS" not in result.stderr  # nothing was started for an API that cannot run
    assert not (tmp_path / "data").exists()


def test_a_second_serve_on_one_data_directory_refuses_naming_it_and_the_holder(tmp_path: Path, repo_root: Path) -> None:
    with data_dir_lock(tmp_path / "data" / "redis"):  # stands for a running `serve` (this test's own pid)
        result = run_serve(repo_root, tmp_path, port=0)
    assert result.returncode == 1
    assert f"data directory {(tmp_path / 'data' / 'redis').resolve()} is in use" in result.stderr
    assert f"(pid {os.getpid()})" in result.stderr
    assert "Traceback" not in result.stderr
    assert "listening on" not in result.stderr


def test_serve_from_any_directory_uses_the_config_shipped_in_the_package(tmp_path: Path, repo_root: Path) -> None:
    """No policies/default.yaml where it runs: the packaged default is read (and said); the taken port then ends
    the run, which proves the config was valid without starting anything."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = run_serve(repo_root, tmp_path, port=taken.getsockname()[1], cwd=elsewhere)
    assert "using the default config shipped with batchgate" in result.stderr
    assert "default_config.yaml" in result.stderr
    assert "invalid configuration" not in result.stderr
    assert result.returncode == 1
    assert "cannot listen on" in result.stderr


def test_stopping_serve_ends_a_held_connection_within_drain_timeout(
    tmp_path: Path, repo_root: Path, redis_url: str
) -> None:
    """SIGTERM with a call held open: the held connection is ended (the client sees the connection close, and
    its job stays in Redis), serve exits 0 within worker.drain_timeout plus start-up slack, with no traceback."""
    drain = 2.0
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model_list": [{"model_name": "gpt-4o-mini", "litellm_params": {"model": "openai/gpt-4o-mini"}}],
                "auth": {"master_key": "sk-test-master-0000"},
                "batching": {"max_wait": "1h"},  # the held job is never answered while the test runs
                "worker": {"drain_timeout": drain},
                "delivery": {"default": "hold", "hold_heartbeat": 0.5},
            }
        )
    )
    port = free_port()
    env = {name: value for name, value in child_environment().items() if not name.startswith("BATCHGATE_")}
    env.update({"BATCHGATE_CONFIG": str(config), "BATCHGATE_PORT": str(port), "BATCHGATE_REDIS_URL": redis_url})
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "proxy", "serve"], cwd=repo_root, env=env, stdout=log, stderr=log
        )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", timeout=START_TIMEOUT)
        with (
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http,
            http.stream(
                "POST",
                "/v1/chat/completions",
                json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "held"}]},
                headers={"authorization": "Bearer sk-test-master-0000", "X-Batch-Deadline": "24h"},
            ) as held,
        ):
            assert held.status_code == 200  # the hold committed its 200 and sends heartbeats
            job_id = held.headers["x-batchgate-job"]
            process.send_signal(signal.SIGTERM)
            stopped = time.monotonic()
            with pytest.raises(httpx.HTTPError):
                for _ in held.iter_bytes():
                    pass
        process.wait(timeout=drain + 30)
        assert time.monotonic() - stopped < drain + 30
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = log_path.read_text(errors="replace")
    assert process.returncode == 0, text[-2000:]
    assert "Traceback" not in text, text[-4000:]
    client = redis.Redis.from_url(redis_url)
    try:
        assert any(job_id.encode() in key for key in client.keys("*"))  # the job outlives the connection
    finally:
        client.close()


def _forked_servers(pid: int) -> list[int]:
    """The children of `pid` that run `serve` too (forked serving processes, not Redis or the simulator)."""
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(child) for child in (task / "children").read_text().split()]
    return [child for child in children if b"serve" in Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")]


def test_serve_with_two_processes_answers_and_stops_them_both(tmp_path: Path, repo_root: Path, redis_url: str) -> None:
    """`serve --workers 2`: one forked serving process beside the first; calls are answered; SIGTERM stops both
    (exit 0, no orphan left behind)."""
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model_list": [{"model_name": "gpt-4o-mini", "litellm_params": {"model": "openai/gpt-4o-mini"}}],
                "auth": {"master_key": "sk-test-master-0000"},
            }
        )
    )
    port = free_port()
    env = {name: value for name, value in child_environment().items() if not name.startswith("BATCHGATE_")}
    env.update({"BATCHGATE_CONFIG": str(config), "BATCHGATE_PORT": str(port), "BATCHGATE_REDIS_URL": redis_url})
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "proxy", "serve", "--no-worker", "--workers", "2"],
            cwd=repo_root,
            env=env,
            stdout=log,
            stderr=log,
        )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", timeout=START_TIMEOUT)
        forked = _forked_servers(process.pid)
        assert len(forked) == 1, forked
        for _ in range(6):  # a fresh connection each: either process may take it
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
                answer = http.post(
                    "/v1/chat/completions",
                    json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
                    headers={"authorization": "Bearer sk-test-master-0000"},
                )
            assert answer.status_code == 200, answer.text
            assert answer.json()["object"] == "chat.completion"
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = log_path.read_text(errors="replace")
    assert process.returncode == 0, text[-2000:]
    assert "Traceback" not in text, text[-4000:]
    assert not Path(f"/proc/{forked[0]}").exists()  # stopped and reaped by the first process before it exited
