"""docs/configuration.md names every setting and every config key outside the policy language."""

from __future__ import annotations

import typing
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel

from proxy.settings import Config, Settings

POLICY_LANGUAGE = "policy."  # documented field by field in docs/policies.md


def leaf_keys(model: type[BaseModel]) -> Iterator[str]:
    for name, field in model.model_fields.items():
        annotation = field.annotation
        candidates = [annotation, *typing.get_args(annotation)]
        for arg in list(candidates):
            candidates.extend(typing.get_args(arg))
        nested = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if nested:
            for key in leaf_keys(nested[0]):
                yield f"{name}.{key}"
        else:
            yield name


def test_every_environment_setting_is_documented(repo_root: Path) -> None:
    text = (repo_root / "docs" / "configuration.md").read_text()
    missing = [f"BATCHGATE_{name.upper()}" for name in Settings.model_fields if f"BATCHGATE_{name.upper()}" not in text]
    assert not missing


def test_every_config_key_is_documented(repo_root: Path) -> None:
    text = (repo_root / "docs" / "configuration.md").read_text()
    missing = [
        key for key in leaf_keys(Config) if not key.startswith(POLICY_LANGUAGE) and key.rsplit(".", 1)[-1] not in text
    ]
    assert not missing, f"docs/configuration.md does not mention: {missing}"
