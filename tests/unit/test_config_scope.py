"""static_difference and key_is_live: which keys a reload may change, and which need a restart."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from proxy.config_scope import RestartRequired, key_is_live, static_difference
from proxy.settings import Config

BASE: dict[str, Any] = {
    "model_list": [
        {"model_name": "gpt-4o-mini", "litellm_params": {"model": "openai/gpt-4o-mini", "api_key": "sk-a"}},
        {"model_name": "gpt-5-mini", "litellm_params": {"model": "openai/gpt-5-mini"}, "supports_flex": True},
    ],
    "auth": {"master_key": "sk-master", "keys": [{"name": "alice", "key": "sk-alice", "team": "alpha"}]},
    "worker": {"lease": 30},
    "policy": {"rules": [{"name": "first", "lane": "batch"}]},
}


def config(**changes: Any) -> Config:
    """BASE with `changes` applied, each a dotted path (list indices as numbers) to a new value."""
    document = copy.deepcopy(BASE)
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        node: Any = document
        for part in parents:
            node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
        if leaf.isdigit():
            node[int(leaf)] = value
        else:
            node[leaf] = value
    return Config.model_validate(document)


def test_the_same_file_has_no_static_difference() -> None:
    assert static_difference(config(), config()) == []


@pytest.mark.parametrize(
    "changes",
    [
        {"policy": {"rules": [{"name": "second", "lane": "sync"}]}},
        {"auth__keys": [{"name": "bob", "key": "sk-bob"}]},
        {"auth__master_key": "sk-other"},
        {"delivery": {"default": "hold", "webhook": {"secret": "whsec_x"}}},
        {"model_list__0__litellm_params__input_cost_per_token": 1e-6},
        {"model_list__1__litellm_params__output_cost_per_token_batches": 2e-6},
        {"model_list__0__litellm_params__cache_read_input_token_cost": 1e-7},
    ],
)
def test_live_keys_may_change(changes: dict[str, Any]) -> None:
    assert static_difference(config(), config(**changes)) == []


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"worker__lease": 45}, ["worker.lease"]),
        ({"limits": {"max_body_bytes": 2048}}, ["limits.max_body_bytes"]),
        ({"retry": {"max_attempts": 5}}, ["retry.max_attempts"]),
        ({"batching": {"max_wait": "1m"}}, ["batching.max_wait"]),
        ({"model_list__0__litellm_params__api_base": "http://other/v1"}, ["model_list[0].litellm_params.api_base"]),
        ({"model_list__0__litellm_params__api_key": "sk-b"}, ["model_list[0].litellm_params.api_key"]),
        ({"model_list__0__litellm_params__api_version": "2025"}, ["model_list[0].litellm_params.api_version"]),
        ({"model_list__1__supports_flex": False}, ["model_list[1].supports_flex"]),
        ({"model_list__1__batch": {"max_wait": "5m"}}, ["model_list[1].batch"]),
        (
            {"model_list__0": {"model_name": "renamed", "litellm_params": {"model": "openai/gpt-4o"}}},
            ["model_list[0].model_name", "model_list[0].litellm_params.model", "model_list[0].litellm_params.api_key"],
        ),
    ],
)
def test_static_keys_are_named(changes: dict[str, Any], expected: list[str]) -> None:
    assert static_difference(config(), config(**changes)) == expected


def test_an_added_or_removed_model_is_named_by_its_index() -> None:
    added = [*copy.deepcopy(BASE["model_list"]), {"model_name": "new", "litellm_params": {"model": "openai/new"}}]
    assert static_difference(config(), config(model_list=added)) == ["model_list[2]"]
    assert static_difference(config(model_list=added), config()) == ["model_list[2]"]


def test_a_live_change_beside_a_static_one_still_names_only_the_static_key() -> None:
    changed = config(worker__lease=10, policy={"rules": [{"name": "other", "lane": "sync"}]})
    assert static_difference(config(), changed) == ["worker.lease"]


def test_restart_required_names_the_keys_and_says_a_restart_is_needed() -> None:
    message = str(RestartRequired(["model_list[2]", "worker.lease"]))
    assert "model_list[2], worker.lease" in message
    assert "restart" in message


@pytest.mark.parametrize(
    ("path", "live"),
    [
        ("policy", True),
        ("auth.keys.team", True),
        ("delivery.webhook.secret", True),
        ("model_list.litellm_params.input_cost_per_token", True),
        ("model_list.litellm_params.api_key", False),
        ("model_list.batch.max_wait", False),
        ("worker.lease", False),
        ("limits.max_body_bytes", False),
    ],
)
def test_key_is_live(path: str, live: bool) -> None:
    assert key_is_live(path) is live


def test_key_is_live_refuses_an_unknown_path() -> None:
    with pytest.raises(KeyError):
        key_is_live("worker.no_such_key")
