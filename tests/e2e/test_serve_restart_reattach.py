"""A held call survives a restart of `batchgate serve`: the unmodified openai client sees a retryable error when
serve stops, and its own automatic retry (same body, `x-stainless-retry-count`) re-attaches to the same job
after the restart and gets exactly one answer, billed once upstream."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import openai
import yaml

from proxy.simulator.engine import expected_content
from tests.support.servers import child_environment, free_port, wait_for_http
from tests.support.stack import simulator_server
from tests.support.waiting import wait_until_sync

START_TIMEOUT = 120  # a child imports the app: slow on a loaded machine, never a measure of success
MASTER = "sk-test-master-0000"
BODY: dict[str, Any] = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "held across a restart"}]}


class Serve:
    """`batchgate serve` as a child process on a fixed port, logging to a file."""

    def __init__(self, repo_root: Path, log: Path, env: dict[str, str], *, worker: bool) -> None:
        self.log = log
        with log.open("wb") as out:
            command = [sys.executable, "-m", "proxy", "serve", *([] if worker else ["--no-worker"])]
            self.process = subprocess.Popen(command, cwd=repo_root, env=env, stdout=out, stderr=out)

    def stop(self) -> str:
        """SIGTERM, wait for a clean exit; its log."""
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        finally:
            self.kill()
        text = self.log.read_text(errors="replace")
        assert self.process.returncode == 0, text[-3000:]
        assert "Traceback" not in text, text[-4000:]
        return text

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def test_a_held_call_cut_by_a_restart_reattaches_to_its_job_and_is_answered_once(
    tmp_path: Path, repo_root: Path, redis_url: str
) -> None:
    with simulator_server(turnaround_s=0.5, validating_s=0.1, finalizing_s=0.1) as upstream:
        config = tmp_path / "config.yaml"
        model = {"model": "openai/gpt-4o-mini", "api_base": upstream.url + "/v1", "api_key": "sk-upstream"}
        config.write_text(
            yaml.safe_dump(
                {
                    "model_list": [{"model_name": "gpt-4o-mini", "litellm_params": model}],
                    "auth": {"master_key": MASTER},
                    "batching": {"max_wait": "1s"},
                    "worker": {"drain_timeout": 2, "poll_interval_min": 0.2, "poll_interval_max": 0.5},
                    "delivery": {"default": "hold", "hold_heartbeat": 0.5},
                }
            )
        )
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = {name: value for name, value in child_environment().items() if not name.startswith("BATCHGATE_")}
        env.update({"BATCHGATE_CONFIG": str(config), "BATCHGATE_PORT": str(port), "BATCHGATE_REDIS_URL": redis_url})
        outcome: dict[str, Any] = {}

        def call() -> None:
            # the SDK's own retries bridge the restart (its backoff tops out at 8 s a try)
            client = openai.OpenAI(base_url=base + "/v1", api_key=MASTER, max_retries=40, timeout=120)
            try:
                outcome["raw"] = client.chat.completions.with_raw_response.create(
                    **BODY, extra_headers={"X-Batch-Deadline": "24h"}
                )
            except Exception as exc:  # handed to the test thread
                outcome["error"] = exc

        first = Serve(repo_root, tmp_path / "serve-1.log", env, worker=False)  # no worker: the job stays queued
        caller = threading.Thread(target=call, daemon=True)
        try:
            wait_for_http(base + "/healthz", timeout=START_TIMEOUT)
            caller.start()
            with httpx.Client(base_url=base, headers={"authorization": f"Bearer {MASTER}"}, timeout=30) as http:

                def held_job() -> str | None:
                    jobs = http.get("/v1/deferred").json()["data"]
                    return str(jobs[0]["id"]) if jobs else None

                job_id = wait_until_sync(held_job, timeout=60, what="the call accepted and held")
            first.stop()
        finally:
            first.kill()

        second = Serve(repo_root, tmp_path / "serve-2.log", env, worker=True)
        try:
            caller.join(timeout=START_TIMEOUT + 120)
            assert not caller.is_alive(), "the client's retries never got an answer"
            assert "error" not in outcome, repr(outcome.get("error"))
            raw = outcome["raw"]
            assert raw.status_code == 200
            assert raw.headers["x-batchgate-job"] == job_id  # the retry attached to the first job
            assert int(raw.http_request.headers["x-stainless-retry-count"]) >= 1
            assert raw.parse().choices[0].message.content == expected_content(BODY)
            with httpx.Client(base_url=base, headers={"authorization": f"Bearer {MASTER}"}, timeout=30) as http:
                assert [job["id"] for job in http.get("/v1/deferred").json()["data"]] == [job_id]
            ledger = httpx.get(upstream.url + "/_sim/ledger", timeout=30).json()
            assert ledger["totals"]["requests"] == 1  # billed once
            second.stop()
        finally:
            second.kill()
