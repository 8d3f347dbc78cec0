"""ConfigReloader on real files: a valid change is applied, an invalid one refused (old kept), SIGHUP reloads."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path

import pytest

from proxy.policy.reload import ConfigReloader
from proxy.settings import Config, load_config

BASE = """\
model_list:
  - model_name: gpt-4o-mini
    litellm_params: {model: openai/gpt-4o-mini}
policy:
  rules:
    - name: RULE
      lane: batch
"""


class Recorder:
    """Holds the config in force, as the Runtime would, and what the reloader reported."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.reloads = 0
        self.refusals: list[str] = []
        self.changed = asyncio.Event()

    def on_reload(self, config: Config) -> None:
        self.config = config
        self.reloads += 1
        self.changed.set()

    def on_refused(self, reason: str) -> None:
        self.refusals.append(reason)
        self.changed.set()

    async def next_change(self) -> None:
        await asyncio.wait_for(self.changed.wait(), timeout=5)
        self.changed.clear()

    @property
    def rule(self) -> str:
        return self.config.policy.rules[0].name


def write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def remove(path: Path) -> None:
    path.unlink()


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "batchgate.yaml"
    write(path, BASE.replace("RULE", "first"))
    return path


async def test_valid_change_is_applied(config_path: Path) -> None:
    recorder = Recorder(load_config(config_path))
    async with ConfigReloader(config_path, recorder.on_reload, on_refused=recorder.on_refused, poll_interval=0.05):
        await asyncio.sleep(0.2)
        assert recorder.reloads == 0  # an unchanged file is not reloaded
        write(config_path, BASE.replace("RULE", "second"))
        await recorder.next_change()
    assert (recorder.rule, recorder.reloads, recorder.refusals) == ("second", 1, [])


async def test_invalid_change_is_refused_once_and_the_old_config_stays(
    config_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = Recorder(load_config(config_path))
    reloader = ConfigReloader(config_path, recorder.on_reload, on_refused=recorder.on_refused, poll_interval=0.05)
    with caplog.at_level(logging.ERROR, logger="batchgate.policy.reload"):
        async with reloader:
            write(config_path, BASE.replace("RULE", "second").replace("lane: batch", "lane: cheap"))
            await recorder.next_change()
            await asyncio.sleep(0.3)  # several more polls of the same invalid file
            assert recorder.rule == "first"
            assert len(recorder.refusals) == 1
            assert str(config_path) in recorder.refusals[0]
            assert "policy.rules[0].lane" in recorder.refusals[0]

            write(config_path, BASE.replace("RULE", "third"))
            await recorder.next_change()
    assert (recorder.rule, recorder.reloads, len(recorder.refusals)) == ("third", 1, 1)
    assert any("refused" in record.getMessage() for record in caplog.records)


async def test_deleted_file_is_refused_and_old_config_stays(config_path: Path) -> None:
    recorder = Recorder(load_config(config_path))
    async with ConfigReloader(config_path, recorder.on_reload, on_refused=recorder.on_refused, poll_interval=0.05):
        remove(config_path)
        await recorder.next_change()
    assert recorder.rule == "first"
    assert "file not found" in recorder.refusals[0]


async def test_atomic_rename_is_seen(config_path: Path) -> None:
    recorder = Recorder(load_config(config_path))
    async with ConfigReloader(config_path, recorder.on_reload, poll_interval=0.05):
        staged = config_path.with_suffix(".new")
        write(staged, BASE.replace("RULE", "renamed"))
        staged.replace(config_path)
        await recorder.next_change()
    assert recorder.rule == "renamed"


async def test_sighup_reloads(config_path: Path) -> None:
    recorder = Recorder(load_config(config_path))
    # Polling is effectively off: only the signal can trigger the reload.
    async with ConfigReloader(config_path, recorder.on_reload, poll_interval=3600, handle_sighup=True):
        await asyncio.sleep(0)
        write(config_path, BASE.replace("RULE", "after-hup"))
        os.kill(os.getpid(), signal.SIGHUP)
        await recorder.next_change()
        assert recorder.rule == "after-hup"
        os.kill(os.getpid(), signal.SIGHUP)  # unchanged file: SIGHUP still reloads
        await recorder.next_change()
    assert recorder.reloads == 2


async def test_sighup_with_invalid_file_is_refused(config_path: Path) -> None:
    recorder = Recorder(load_config(config_path))
    async with ConfigReloader(
        config_path, recorder.on_reload, on_refused=recorder.on_refused, poll_interval=3600, handle_sighup=True
    ):
        write(config_path, "model_list: []\n")
        os.kill(os.getpid(), signal.SIGHUP)
        await recorder.next_change()
    assert recorder.rule == "first"
    assert "model_list" in recorder.refusals[0]


async def test_async_callback_is_awaited(config_path: Path) -> None:
    applied: list[str] = []

    async def on_reload(config: Config) -> None:
        await asyncio.sleep(0)
        applied.append(config.policy.rules[0].name)

    reloader = ConfigReloader(config_path, on_reload, poll_interval=3600)
    write(config_path, BASE.replace("RULE", "awaited"))
    assert await reloader.check_now() is True
    assert applied == ["awaited"]
    assert await reloader.check_now() is None
