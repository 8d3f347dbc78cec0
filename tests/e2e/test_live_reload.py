"""A running `batchgate serve` reloads its config on SIGHUP and on a file change, and refuses an invalid one."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support.servers import child_environment, free_port, wait_for_http
from tests.support.stack import MASTER_KEY, config_document, simulator_server

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "reload me"}]}
DEFER_EVERYTHING = {"rules": [{"name": "defer-everything", "match": {"models": ["gpt-*"]}, "lane": "batch"}]}
SYNC_TEAM_RULE = {"rules": [{"name": "alpha-sync", "match": {"teams": ["alpha"]}, "lane": "sync"}]}


@pytest.fixture
def serving(tmp_path: Path, redis_url: str, repo_root: Path) -> Iterator[tuple[str, Path, subprocess.Popen[bytes]]]:
    with simulator_server() as upstream:
        config_path = tmp_path / "config.yaml"
        config_path.write_text(yaml.safe_dump(config_document(upstream.url)))
        port = free_port()
        env = {
            **child_environment(),
            "BATCHGATE_CONFIG": str(config_path),
            "BATCHGATE_REDIS_URL": redis_url,
            "BATCHGATE_PORT": str(port),
        }
        log = (tmp_path / "serve.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "proxy", "serve", "--no-worker"], cwd=repo_root, env=env, stdout=log, stderr=log
        )
        try:
            wait_for_http(f"http://127.0.0.1:{port}/healthz", timeout=60)
            yield f"http://127.0.0.1:{port}", config_path, process
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=45)
            log.close()


def decision(url: str) -> str:
    # respond-async: a deferred call would otherwise be held until its answer, and this server runs no worker
    headers = {"authorization": f"Bearer {MASTER_KEY}", "prefer": "respond-async"}
    response = httpx.post(url + "/v1/chat/completions", json=BODY, headers=headers)
    assert response.status_code in (200, 202), response.text
    return response.headers["x-batchgate-decision"]


def eventually(check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError("condition not reached in time")


def write_policy(path: Path, policy: dict[str, object]) -> None:
    document = yaml.safe_load(path.read_text())
    document["policy"] = policy
    path.write_text(yaml.safe_dump(document))


def reloads(url: str, result: str) -> float:
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith(f'batchgate_config_reloads_total{{result="{result}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_sighup_and_file_changes_reload_and_an_invalid_file_is_refused(
    serving: tuple[str, Path, subprocess.Popen[bytes]],
) -> None:
    url, config_path, process = serving
    original = config_path.read_text()
    assert decision(url).startswith("lane=sync; rule=default")

    write_policy(config_path, DEFER_EVERYTHING)
    process.send_signal(signal.SIGHUP)
    eventually(lambda: "rule=defer-everything" in decision(url))
    assert decision(url).startswith("lane=batch")
    assert reloads(url, "applied") >= 1

    config_path.write_text("model_list: [this is: not valid\n")
    process.send_signal(signal.SIGHUP)
    eventually(lambda: reloads(url, "refused") >= 1)
    assert "rule=defer-everything" in decision(url), "the config in force stays after a refused reload"
    assert process.poll() is None

    applied_before = reloads(url, "applied")
    config_path.write_text(original)
    write_policy(config_path, SYNC_TEAM_RULE)
    eventually(lambda: reloads(url, "applied") > applied_before)  # no signal this time: the file change alone
    assert decision(url).startswith("lane=sync; rule=default")
