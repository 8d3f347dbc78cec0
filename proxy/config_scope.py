"""Which config keys a reload may change (live) and which are fixed at start (static), read from the `LIVE`
marks on the fields of proxy/settings.py.

Static: the models and the provider clients built from them, limits, retry, batching and worker settings.
Live: the policy, caller keys (`auth`), prices (`pricing`, `model_list[].litellm_params.*cost*`) and delivery.
A reload whose static part differs from the running config is refused as a whole (RestartRequired).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from proxy.errors import ConfigError
from proxy.settings import LIVE, Config, nested_model


class RestartRequired(ConfigError):
    """A reloaded config whose static keys differ from the running one; `keys` are their paths."""

    def __init__(self, keys: list[str]) -> None:
        self.keys = keys
        super().__init__(
            f"keys that are fixed at start differ from the running config: {', '.join(keys)}; "
            "a restart is needed to apply them (nothing of this file was applied)"
        )


def is_live_field(field: FieldInfo) -> bool:
    extra = field.json_schema_extra
    return isinstance(extra, dict) and extra.get("reload") == LIVE["reload"]


def key_is_live(path: str, model: type[BaseModel] = Config) -> bool:
    """Whether the key at `path` (dotted, without list indices: `model_list.litellm_params.api_base`) may be
    changed by a reload. Raises KeyError for a path the config does not have."""
    current: type[BaseModel] | None = model
    for part in path.split("."):
        if current is None or part not in current.model_fields:
            raise KeyError(path)
        field = current.model_fields[part]
        if is_live_field(field):
            return True
        current = nested_model(field.annotation)
    return False


def static_difference(old: BaseModel, new: BaseModel) -> list[str]:
    """The paths of the static keys whose values differ between two configs of the same model, as the YAML reads
    them (`worker.lease`, `model_list[0].litellm_params.api_base`; `model_list[2]` for an entry only one side has).
    Empty when a reload may swap `new` in. Pure."""
    return _model_difference(old, new, "")


def _model_difference(old: BaseModel, new: BaseModel, prefix: str) -> list[str]:
    differences: list[str] = []
    for name, field in type(old).model_fields.items():
        if not is_live_field(field):
            differences += _value_difference(getattr(old, name), getattr(new, name), _join(prefix, name))
    old_extra, new_extra = old.model_extra or {}, new.model_extra or {}
    for name in sorted(old_extra.keys() | new_extra.keys()):
        if old_extra.get(name, _ABSENT) != new_extra.get(name, _ABSENT):
            differences.append(_join(prefix, name))
    return differences


def _value_difference(old: Any, new: Any, path: str) -> list[str]:
    if isinstance(old, BaseModel) and type(old) is type(new):
        return _model_difference(old, new, path)
    if isinstance(old, list) and isinstance(new, list):
        differences: list[str] = []
        for index in range(max(len(old), len(new))):
            item = f"{path}[{index}]"
            if index >= len(old) or index >= len(new):
                differences.append(item)
            else:
                differences += _value_difference(old[index], new[index], item)
        return differences
    return [] if old == new else [path]


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


_ABSENT = object()
