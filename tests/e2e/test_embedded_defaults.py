"""The README's run command: `batchgate serve` with no Redis URL and no provider key, driven by the openai client."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import redis

from proxy.settings import DEV_MASTER_KEY
from proxy.simulator.engine import expected_content
from tests.support.servers import child_environment, free_port, wait_for_http
from tests.support.waiting import wait_until_sync


def test_serve_on_embedded_defaults_answers_the_openai_client(tmp_path: Path, repo_root: Path) -> None:
    port = free_port()
    env = child_environment()
    for name in list(env):
        if name.startswith("BATCHGATE_"):
            del env[name]
    env.update({"BATCHGATE_DATA_DIR": str(tmp_path / "data"), "BATCHGATE_PORT": str(port)})
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "proxy", "serve"], cwd=repo_root, env=env, stdout=log, stderr=log
        )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", timeout=60)
        health = httpx.get(f"http://127.0.0.1:{port}/healthz").json()
        assert health["upstream"] == "simulated"
        assert "SIMULATED" in health["warning"]

        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=DEV_MASTER_KEY, max_retries=0)
        messages = [{"role": "user", "content": "Say hello"}]
        completion = client.chat.completions.create(model="gpt-4o-mini", messages=messages)  # type: ignore[arg-type]
        assert completion.choices[0].message.content == expected_content({"model": "gpt-4o-mini", "messages": messages})
        assert httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        exit_code = process.wait(timeout=45)
    output = log_path.read_text()
    assert exit_code == 0, output
    assert "EMBEDDED REDIS" in output
    assert "SIMULATED UPSTREAM" in output
    assert (tmp_path / "data" / "redis").is_dir()
    assert any((tmp_path / "data" / "redis").iterdir()), "the embedded Redis keeps an append-only file"
    assert_embedded_redis_stopped(output)


def assert_embedded_redis_stopped(output: str) -> None:
    url = next(word for word in output.split() if word.startswith("redis://127.0.0.1:")).rstrip(",")
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5)

    def stopped() -> bool:
        try:
            client.ping()
        except redis.ConnectionError:
            return True
        return False

    wait_until_sync(stopped, timeout=10, what=f"the embedded Redis at {url} to stop after batchgate exited")


def test_an_invalid_config_stops_the_start_naming_file_key_and_expectation(tmp_path: Path, repo_root: Path) -> None:
    config = tmp_path / "broken.yaml"
    config.write_text(
        "model_list:\n  - model_name: m\n    litellm_params: {model: no-provider-prefix}\n"
        "worker: {safety_margin: soon}\n"
    )
    env = {**child_environment(), "BATCHGATE_CONFIG": str(config), "BATCHGATE_DATA_DIR": str(tmp_path / "d")}
    result = subprocess.run(
        [sys.executable, "-m", "proxy", "serve"],
        cwd=repo_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert str(config) in result.stderr
    assert "model_list[0].litellm_params.model" in result.stderr
    assert "provider/model" in result.stderr
    assert "worker.safety_margin" in result.stderr
    assert "duration" in result.stderr
    assert "Traceback" not in result.stderr
    assert os.path.exists(config)
