"""docs/configuration.md names every setting and every config key outside the policy language."""

from __future__ import annotations

import re
import typing
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel

from proxy.config_scope import key_is_live
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


def documented_reload_markers(text: str) -> dict[str, str]:
    """Each key of the config tables with its `reload` column, as a full path (`worker.lease`, `auth.keys.team`).

    A row's key is relative to its section (the first name in the `## ` heading) unless it already starts with
    one of the heading's names (`## limits and retry` rows read `limits.max_body_bytes`)."""
    markers: dict[str, str] = {}
    names: list[str] = []
    column: int | None = None
    for line in text.splitlines():
        if line.startswith("## "):
            names, column = re.findall(r"`([^`]+)`", line), None
        elif line.startswith("| key |"):
            headers = [cell.strip() for cell in line.strip("|").split("|")]
            column = headers.index("reload") if "reload" in headers else None
        elif line.startswith("| `") and names and column is not None:
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            for key in re.findall(r"`([^`]+)`", cells[0]):
                path = key.replace("[]", "")
                full = path if path.split(".")[0] in names else f"{names[0]}.{path}"
                markers[full] = cells[column]
    return markers


def test_each_config_key_has_a_reload_marker_that_matches_the_code(repo_root: Path) -> None:
    markers = documented_reload_markers((repo_root / "docs" / "configuration.md").read_text())
    assert set(markers.values()) == {"live", "restart"}
    wrong = {key: marker for key, marker in markers.items() if key_is_live(key) != (marker == "live")}
    assert not wrong, f"docs/configuration.md marks these keys wrongly: {wrong}"
    unmarked = [
        key
        for key in leaf_keys(Config)
        if not key.startswith(POLICY_LANGUAGE)
        and not any(key == marked or key.startswith(marked + ".") for marked in markers)
    ]
    assert not unmarked, f"docs/configuration.md gives no reload marker for: {unmarked}"
    assert key_is_live("policy")
