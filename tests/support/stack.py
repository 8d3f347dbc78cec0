"""The whole batchgate stack on loopback for tests: the simulated upstream and the proxy, over real HTTP."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import yaml

from proxy.app import BackgroundService, create_app
from proxy.settings import Settings, load_config
from proxy.simulator.app import create_simulator_app
from proxy.simulator.options import SimulatorOptions
from tests.support.servers import ServerThread
from tests.support.waiting import wait_until_sync

MASTER_KEY = "sk-test-master-0000"
TEAM_KEYS = {"alpha": "sk-test-alpha-1111", "beta": "sk-test-beta-2222"}
PROVIDER_KEY = "sk-provider-secret-must-never-leak-9999"
MODELS = ("gpt-4o-mini", "gpt-5-mini")


def config_document(
    simulator_url: str,
    *,
    provider_key: str = PROVIDER_KEY,
    models: Mapping[str, str] | None = None,
    **sections: Any,
) -> dict[str, Any]:
    """`models`: model_name -> litellm model (default: MODELS at OpenAI), each served by the simulator."""
    models = models or {name: f"openai/{name}" for name in MODELS}
    document: dict[str, Any] = {
        "model_list": [
            {
                "model_name": name,
                "litellm_params": {
                    "model": model,
                    "api_base": simulator_url + "/v1",
                    "api_key": provider_key,
                },
                "supports_flex": name == "gpt-5-mini",
            }
            for name, model in models.items()
        ],
        "auth": {
            "master_key": MASTER_KEY,
            "keys": [{"name": f"{team}-key", "key": key, "team": team} for team, key in TEAM_KEYS.items()],
        },
        "retry": {"max_attempts": 3, "base_delay": 0.05, "max_delay": 0.5, "budget": 5},
        "batching": {"max_wait": "1s", "turnaround_estimate": "5s"},
        "worker": {
            "poll_interval_min": 0.2,
            "poll_interval_max": 1.0,
            "tick": 0.1,
            "safety_margin": 2,
            "lease": 5,
        },
        "delivery": {"webhook": {"allow_hosts": ["127.0.0.1", "localhost"]}},
    }
    for name, value in sections.items():
        if isinstance(value, dict) and isinstance(document.get(name), dict):
            document[name] = {**document[name], **value}
        else:
            document[name] = value
    return document


@dataclass
class Stack:
    url: str
    simulator_url: str
    config_path: Path
    settings: Settings

    def client(self, key: str = MASTER_KEY, **options: Any) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0, **options)

    def async_client(self, key: str = MASTER_KEY, **options: Any) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0, **options)

    def simulator(self) -> httpx.Client:
        return httpx.Client(base_url=self.simulator_url, timeout=30)

    def configure_simulator(self, **knobs: Any) -> None:
        with self.simulator() as client:
            client.patch("/_sim/config", json=knobs).raise_for_status()

    def ledger(self) -> dict[str, Any]:
        with self.simulator() as client:
            response = client.get("/_sim/ledger")
            response.raise_for_status()
            ledger: dict[str, Any] = response.json()
            return ledger

    def final_jobs(self, job_ids: list[str], *, timeout: float = 40) -> list[dict[str, Any]]:
        """The job objects once every one of them is final (completed, failed or cancelled)."""
        with httpx.Client(base_url=self.url, headers={"authorization": f"Bearer {MASTER_KEY}"}, timeout=10) as http:

            def all_final() -> list[dict[str, Any]] | None:
                jobs = [http.get(f"/v1/deferred/{job_id}").json() for job_id in job_ids]
                return jobs if all(job["status"] in ("completed", "failed", "cancelled") for job in jobs) else None

            return wait_until_sync(all_final, timeout=timeout, interval=0.1, what=f"{len(job_ids)} jobs final")


@contextlib.contextmanager
def simulator_server(**knobs: Any) -> Iterator[ServerThread]:
    with ServerThread(create_simulator_app(SimulatorOptions(**knobs))) as server:
        yield server


@contextlib.contextmanager
def running_stack(
    tmp_path: Path,
    redis_url: str,
    *,
    background: list[BackgroundService] | None = None,
    simulator: dict[str, Any] | None = None,
    provider_key: str = PROVIDER_KEY,
    models: Mapping[str, str] | None = None,
    **sections: Any,
) -> Iterator[Stack]:
    """Simulator + batchgate (API, plus whatever `background` services are given), both on loopback."""
    with simulator_server(**(simulator or {})) as upstream:
        document = config_document(upstream.url, provider_key=provider_key, models=models, **sections)
        with serving(document, tmp_path, redis_url, upstream.url, background, worker=background is not None) as stack:
            yield stack


@contextlib.contextmanager
def serving(
    document: dict[str, Any],
    tmp_path: Path,
    redis_url: str,
    upstream_url: str,
    background: list[BackgroundService] | None,
    **settings: Any,
) -> Iterator[Stack]:
    """batchgate serving the config `document` (written to tmp_path/config.yaml) on loopback, in front of the
    simulator at `upstream_url`, with the `background` services (run_in_app: the in-process worker)."""
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(document))
    options = Settings(config=config_path, redis_url=redis_url, **settings)
    app = create_app(options, load_config(config_path), background=background)
    with ServerThread(app) as proxy:
        yield Stack(url=proxy.url, simulator_url=upstream_url, config_path=config_path, settings=options)
