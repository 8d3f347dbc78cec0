"""The `batchgate` command line itself: --version, help on every argument, one meaning per flag."""

from __future__ import annotations

import argparse
from importlib.metadata import version

import pytest

from proxy.cli import build_parser, main


def parsers(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    """The parser and every subcommand's, with their command paths."""
    found = [(parser.prog, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                found += parsers(child)
    return found


def test_version_is_the_installed_packages(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"batchgate {version('batchgate')}"


def test_every_argument_of_every_command_has_help_text() -> None:
    missing = [
        f"{prog} {action.option_strings or action.dest}"
        for prog, parser in parsers(build_parser())
        for action in parser._actions
        if not isinstance(action, argparse._SubParsersAction) and not (action.help or "").strip()
    ]
    assert missing == []


def test_key_means_a_secret_everywhere_and_explain_takes_a_key_name() -> None:
    """`--key` is the caller's secret (status, demo); `policy explain` names a key with `--key-name`."""
    by_prog = dict(parsers(build_parser()))
    for prog, parser in by_prog.items():
        for action in parser._actions:
            if "--key" in action.option_strings:
                assert "secret" in (action.help or ""), prog
    explain = by_prog["batchgate policy explain"]
    assert any("--key-name" in action.option_strings for action in explain._actions)
    assert not any("--key" in action.option_strings for action in explain._actions)
