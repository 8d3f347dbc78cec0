"""`batchgate policy check` and `batchgate policy explain`."""

from __future__ import annotations

import argparse
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from proxy.errors import ConfigError
from proxy.policy import cli
from proxy.settings import load_config

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
CONFIG = """\
model_list:
  - model_name: gpt-4o-mini
    litellm_params: {model: openai/gpt-4o-mini}
    supports_flex: true
auth:
  keys:
    - {name: research-bot, key: sk-research, team: research}
policy:
  rules:
    - name: nightly-evals
      match: {metadata: {purpose: "eval*"}}
      lane: batch
      deadline: 8h
    - name: research
      match: {teams: [research]}
      lane: auto
      min_deadline: 1h
      delivery: hold
      max_wait: 5m
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "batchgate.yaml"
    path.write_text(CONFIG, encoding="utf-8")
    return path


def run_explain(path: Path, **options: object) -> tuple[int, str]:
    out = io.StringIO()
    arguments: dict[str, object] = {
        "key": None,
        "team": None,
        "model": "gpt-4o-mini",
        "headers": [],
        "metadata": [],
        "user": None,
        "prompt_tokens": 0,
        "now": NOW,
        **options,
    }
    code = cli.explain(path, out=out, **arguments)  # type: ignore[arg-type]
    return code, out.getvalue()


def test_check_ok(config_file: Path) -> None:
    out = io.StringIO()
    assert cli.check(config_file, out) == 0
    assert out.getvalue() == f"OK: {config_file} (1 model(s), 2 rule(s))\n"


def test_check_names_file_key_path_and_expectation(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(CONFIG.replace("lane: auto", "lane: soon").replace("max_wait: 5m", "max_wiat: 5m"))
    out = io.StringIO()
    assert cli.check(path, out) == 1
    text = out.getvalue()
    assert text.startswith(f"INVALID: {path}: 2 problem(s)")
    assert "policy.rules[1].lane: Input should be 'sync', 'batch', 'flex' or 'auto'" in text
    assert "policy.rules[1].max_wiat: unknown key; expected one of: callback_url, deadline, delivery" in text


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("model_list: [\n", "not valid YAML"),
        ("- just a list\n", "expected a mapping at the top level"),
        ("policy: {}\n", "model_list: Field required"),
    ],
)
def test_check_refuses_broken_files(tmp_path: Path, content: str, fragment: str) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(content)
    out = io.StringIO()
    assert cli.check(path, out) == 1
    assert str(path) in out.getvalue()
    assert fragment in out.getvalue()


@pytest.mark.parametrize(
    ("keys", "fragment"),
    [
        (
            "    - {name: research-bot, key: sk-other, team: ops}\n",
            "auth: auth.keys[].name must be unique; repeated: research-bot",
        ),
        ("    - {name: master, key: sk-other}\n", "auth: auth.keys[].name 'master' is reserved for the master key"),
        ("    - {name: Master, key: sk-other}\n", "'Master' is reserved for the master key"),
        ("    - {name: other-bot, key: sk-research}\n", "auth: two keys (or a key and master_key) share one secret"),
    ],
)
def test_check_refuses_colliding_caller_keys(tmp_path: Path, keys: str, fragment: str) -> None:
    """A second key named like another team's key would read and cancel that team's jobs."""
    path = tmp_path / "keys.yaml"
    path.write_text(CONFIG.replace("team: research}\n", "team: research}\n" + keys, 1))
    out = io.StringIO()
    assert cli.check(path, out) == 1
    assert out.getvalue().startswith(f"INVALID: {path}: 1 problem(s)")
    assert fragment in out.getvalue()
    with pytest.raises(ConfigError, match="auth"):
        load_config(path)


def test_check_missing_file(tmp_path: Path) -> None:
    out = io.StringIO()
    assert cli.check(tmp_path / "nope.yaml", out) == 1
    assert "file not found" in out.getvalue()


def test_check_warns_about_unreachable_rules_and_unknown_models(tmp_path: Path) -> None:
    path = tmp_path / "warn.yaml"
    path.write_text(
        CONFIG
        + "    - name: everything\n      lane: batch\n"
        + "    - name: never\n      match: {models: [gpt-5*]}\n      lane: batch\n"
    )
    out = io.StringIO()
    assert cli.check(path, out) == 0
    text = out.getvalue()
    assert "policy.rules[3] (never) is never reached: everything matches all" in text
    assert "policy.rules[3].match.models: 'gpt-5*' names no model in model_list" in text


def test_explain_shows_decision_and_why_earlier_rules_missed(config_file: Path) -> None:
    code, text = run_explain(config_file, key="research-bot", headers=["X-Batch-Deadline: 30m"])
    assert code == 0
    lines = text.splitlines()
    assert lines[0] == "X-Batchgate-Decision: lane=flex; rule=research; deadline=2026-11-23T13:00:00Z"
    assert "  deferred:  yes" in lines
    assert "  delivery:  hold" in lines
    assert "  batching:  max_wait 5m" in lines
    assert any("raised to min_deadline 1h" in line for line in lines)
    assert "  1. nightly-evals: no match: metadata 'purpose' is absent" in lines
    assert "  2. research: MATCHED" in lines


def test_explain_without_header_uses_the_default_deadline(config_file: Path) -> None:
    code, text = run_explain(config_file, key="research-bot")
    assert code == 0
    assert text.splitlines()[0] == "X-Batchgate-Decision: lane=batch; rule=research; deadline=2026-11-24T12:00:00Z"


def test_explain_first_rule_wins_and_later_are_not_tried(config_file: Path) -> None:
    code, text = run_explain(config_file, key="research-bot", metadata=["purpose=eval-nightly"])
    assert code == 0
    assert "X-Batchgate-Decision: lane=batch; rule=nightly-evals; deadline=2026-11-23T20:00:00Z" in text
    assert "  1. nightly-evals: MATCHED" in text
    assert "  2. research: not tried" in text
    # the rule names no delivery and the caller asked for nothing: held (an unmodified client gets a ChatCompletion)
    assert "  delivery:  hold (config delivery.unrequested: no X-Batch-Deadline)" in text.splitlines()


def test_explain_names_the_delivery_default_for_a_caller_that_sent_a_deadline(config_file: Path) -> None:
    code, text = run_explain(
        config_file, key="research-bot", metadata=["purpose=eval-nightly"], headers=["X-Batch-Deadline: 9h"]
    )
    assert code == 0
    assert "  delivery:  async (config delivery.default)" in text.splitlines()


def test_explain_default(config_file: Path) -> None:
    code, text = run_explain(config_file, key="master")
    assert code == 0
    assert text.startswith("X-Batchgate-Decision: lane=sync; rule=default\n")
    assert "team 'master' matches none of ['research']" in text
    assert "no rule matched: the default action applied" in text
    assert "reason:    no rule matched and no X-Batch-Deadline header" in text


def test_explain_undeclared_key_uses_its_name(config_file: Path) -> None:
    code, text = run_explain(config_file, key="someone", team="research")
    assert code == 0
    assert "key 'someone' is not declared in auth.keys" in text
    assert "research: MATCHED" in text


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"headers": ["X-Batch-Deadline: yesterday"]}, "would be refused with 400: X-Batch-Deadline must be"),
        ({"headers": ["no colon"]}, "--header expects 'Name: value'"),
        ({"metadata": ["novalue"]}, "--metadata expects key=value"),
        ({"model": "gpt-9"}, "model 'gpt-9' is not in"),
    ],
)
def test_explain_errors(config_file: Path, options: dict[str, object], fragment: str) -> None:
    code, text = run_explain(config_file, **options)
    assert code == 1
    assert fragment in text


def test_argument_parsing_reaches_the_commands(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="batchgate")
    cli.add_arguments(parser.add_subparsers())
    args = parser.parse_args(["policy", "check", str(config_file)])
    assert args.handler(args) == 0
    assert capsys.readouterr().out.startswith("OK:")
    args = parser.parse_args(
        [
            "policy",
            "explain",
            str(config_file),
            "--model",
            "gpt-4o-mini",
            "--header",
            "X-Batch-Deadline: 4h",
            "--now",
            "2026-11-23T12:00:00Z",
        ]
    )
    assert args.handler(args) == 0
    assert capsys.readouterr().out.startswith(
        "X-Batchgate-Decision: lane=batch; rule=header; deadline=2026-11-23T16:00:00Z"
    )
    args = parser.parse_args(["policy"])
    assert args.handler(args) == 2


def test_explain_names_the_field_that_keeps_a_call_off_the_batch_lane(tmp_path: Path) -> None:
    path = tmp_path / "claude.yaml"
    path.write_text("model_list:\n  - model_name: claude\n    litellm_params: {model: anthropic/claude-haiku-4-5}\n")
    image = {"type": "image_url", "image_url": {"url": "http://images.internal/cat.png"}}
    body = tmp_path / "body.json"
    body.write_text(json.dumps({"messages": [{"role": "user", "content": [{"type": "text", "text": "?"}, image]}]}))
    deadline = ["X-Batch-Deadline: 24h"]
    code, text = run_explain(path, model="claude", headers=deadline, body=body)
    assert code == 0, text
    assert "lane=sync" in text
    assert "its batch lane cannot carry messages[0].content[1].image_url: an http:// image URL" in text
    body.write_text(json.dumps({"messages": [{"role": "user", "content": "?"}]}))
    code, text = run_explain(path, model="claude", headers=deadline, body=body)
    assert (code, "lane=batch" in text, "cannot carry" in text) == (0, True, False)


def test_explain_names_the_fields_claude_answers_without(tmp_path: Path) -> None:
    path = tmp_path / "claude.yaml"
    path.write_text("model_list:\n  - model_name: claude\n    litellm_params: {model: anthropic/claude-haiku-4-5}\n")
    body = tmp_path / "body.json"
    request = {"messages": [{"role": "user", "content": "?"}], "seed": 3, "response_format": {"type": "json_object"}}
    body.write_text(json.dumps(request))
    code, text = run_explain(path, model="claude", headers=["X-Batch-Deadline: 24h"], body=body)
    assert code == 0, text
    assert 'lane=batch; rule=header; dropped="seed, response_format.type=json_object"' in text.splitlines()[0]
    assert "  dropped:   seed: Anthropic has no seed, on every lane" in text
    code, text = run_explain(path, model="claude", body=body)
    assert (
        text.splitlines()[0]
        == 'X-Batchgate-Decision: lane=sync; rule=default; dropped="seed, response_format.type=json_object"'
    )
    body.write_text(json.dumps({**request, "response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}))
    code, text = run_explain(path, model="claude", body=body)
    assert 'dropped="seed"' in text
