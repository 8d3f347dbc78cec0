"""RFC 7240 Prefer parsing and Preference-Applied."""

from __future__ import annotations

import pytest

from proxy.delivery.preferences import Preferences, applied, parse_prefer


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], Preferences()),
        (["respond-async"], Preferences(respond_async=True)),
        (["wait=10"], Preferences(wait=10.0)),
        (["respond-async, wait=100"], Preferences(respond_async=True, wait=100.0)),
        (["Respond-Async", "WAIT=5"], Preferences(respond_async=True, wait=5.0)),
        (['wait="7"'], Preferences(wait=7.0)),
        (["wait=5, wait=9"], Preferences(wait=5.0)),  # the first occurrence wins
        (["wait=-1"], Preferences()),  # malformed: ignored, not refused
        (["wait=abc", "respond-async"], Preferences(respond_async=True)),
        (["handling=lenient; foo=bar, return=minimal"], Preferences()),
        (['foo="a,b", wait=3'], Preferences(wait=3.0)),
        (["wait=3; x=y"], Preferences(wait=3.0)),
    ],
)
def test_parse_prefer(values: list[str], expected: Preferences) -> None:
    assert parse_prefer(values) == expected


def test_preference_applied() -> None:
    assert applied() == {}
    assert applied(respond_async=True) == {"Preference-Applied": "respond-async"}
    assert applied(wait=30.0) == {"Preference-Applied": "wait=30"}
