"""The `policy:` section: what validates, what is refused and how the refusal reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from proxy.errors import ConfigError
from proxy.policy.model import PolicyConfig
from proxy.settings import load_config

MODEL_LIST = "model_list:\n  - {model_name: gpt-4o-mini, litellm_params: {model: openai/gpt-4o-mini}}\n"


def refusal(policy: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as caught:
        PolicyConfig.model_validate(policy)
    return str(caught.value)


@pytest.mark.parametrize(
    ("policy", "fragment"),
    [
        ({"rules": [{"name": "r", "lane": "cheap"}]}, "'sync', 'batch', 'flex' or 'auto'"),
        ({"rules": [{"name": "r", "delivery": "email"}]}, "'hold', 'async' or 'webhook'"),
        (
            {"rules": [{"name": "r", "min_deadline": "4h", "max_deadline": "1h"}]},
            "min_deadline must not exceed",
        ),
        (
            {"rules": [{"name": "r", "deadline": "30m", "min_deadline": "1h"}]},
            "between min_deadline and max_deadline",
        ),
        ({"rules": [{"name": "r", "deadline": "soon"}]}, "expected a duration"),
        ({"rules": [{"name": "r", "callback_url": "ftp://x"}]}, "http(s) URL"),
        (
            {"rules": [{"name": "r", "delivery": "async", "callback_url": "https://x"}]},
            "only used with delivery",
        ),
        ({"rules": [{"name": "r"}, {"name": "r"}]}, "repeated: r"),
        ({"rules": [{"name": "default"}]}, "not 'default' or 'header'"),
        ({"rules": [{"name": "has space"}]}, "letters, digits"),
        ({"rules": [{"name": "r", "max_requests": 100}]}, "set model_list[].batch.max_requests"),
        ({"rules": [{"name": "r", "max_wait": 0}]}, "greater than 0"),
        ({"rules": [{"name": "r", "match": {"modles": ["x"]}}]}, "Extra inputs"),
        ({"rules": [{"name": "r", "match": {"prompt_tokens": {"min": 10, "max": 5}}}]}, "must not exceed"),
        ({"rules": [{"name": "r", "match": {"windows": [{"timezone": "Mars/Base"}]}}]}, "IANA time zone"),
        ({"rules": [{"name": "r", "match": {"windows": [{"start": "25:00"}]}}]}, "between 00:00 and 23:59"),
        ({"rules": [{"name": "r", "match": {"windows": [{"start": "9h"}]}}]}, "time of day"),
        ({"rules": [{"name": "r", "match": {"windows": [{"start": "10:00", "end": "10:00"}]}}]}, "empty"),
        ({"rules": [{"name": "r", "match": {"windows": [{"days": ["funday"]}]}}]}, "day names"),
        ({"rules": [{"name": "r", "match": {"windows": [{"days": []}]}}]}, "at least one day"),
        ({"rules": [{"name": "r", "match": {"windows": [{"start": 5000}]}}]}, "quote it"),
        ({"default_deadline": "0s"}, "greater than 0"),
    ],
)
def test_refused(policy: dict[str, Any], fragment: str) -> None:
    assert fragment in refusal(policy)


@pytest.mark.parametrize(
    ("days", "expected"),
    [
        (["mon"], [0]),
        ("weekdays", [0, 1, 2, 3, 4]),
        ("weekend", [5, 6]),
        (["mon-wed", "sun"], [0, 1, 2, 6]),
        (["fri-mon"], [0, 4, 5, 6]),
        (["Saturday"], [5]),
    ],
)
def test_day_names(days: Any, expected: list[int]) -> None:
    config = PolicyConfig.model_validate({"rules": [{"name": "r", "match": {"windows": [{"days": days}]}}]})
    assert config.rules[0].match.windows[0].days == expected


def test_single_glob_may_be_written_without_a_list() -> None:
    config = PolicyConfig.model_validate({"rules": [{"name": "r", "match": {"models": "gpt-*", "users": "u"}}]})
    assert config.rules[0].match.models == ["gpt-*"]
    assert config.rules[0].match.users == ["u"]


def test_config_file_errors_name_file_key_path_and_expectation(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        MODEL_LIST
        + "policy:\n"
        + "  rules:\n"
        + "    - name: nightly\n"
        + "      lane: cheap\n"
        + "      match: {modles: [x]}\n"
        + "  defualt: {}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert str(path) in message
    assert "policy.rules[0].lane: Input should be 'sync', 'batch', 'flex' or 'auto'" in message
    assert (
        "policy.rules[0].match.modles: unknown key; expected one of: endpoints, headers, keys, metadata, models"
        in message
    )
    expected = "default, default_deadline, flex_unavailable_rate, rules, venues"
    assert f"policy.defualt: unknown key; expected one of: {expected}" in message


def test_unquoted_yaml_time_is_read_as_the_clock_time(tmp_path: Path) -> None:
    path = tmp_path / "windows.yaml"
    path.write_text(
        MODEL_LIST
        + "policy:\n  rules:\n    - name: nights\n"
        + "      match: {windows: [{start: 22:00, end: 06:00}]}\n",
        encoding="utf-8",
    )
    window = load_config(path).policy.rules[0].match.windows[0]
    assert (window.start, window.end) == (22 * 3600, 6 * 3600)
