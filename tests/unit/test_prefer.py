"""RFC 7240 Prefer parsing and Preference-Applied."""

from __future__ import annotations

import pytest

from proxy.delivery.preferences import MAX_DELTA_SECONDS, Preferences, applied, parse_prefer
from proxy.errors import InvalidRequest


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
        (["wait=0"], Preferences(wait=0.0)),
        (["wait=10, respond-async"], Preferences(respond_async=True, wait=10.0)),
        ([f"wait={MAX_DELTA_SECONDS}"], Preferences(wait=float(MAX_DELTA_SECONDS))),
        (["wait=" + "0" * 40 + "12"], Preferences(wait=12.0)),  # leading zeros do not count against the bound
        (["respond-async, wait=5", "wait=abc"], Preferences(respond_async=True, wait=5.0)),  # first wait wins
        (["handling=lenient; foo=bar, return=minimal"], Preferences()),
        (['foo="a,b", wait=3'], Preferences(wait=3.0)),
        (["wait=3; x=y"], Preferences(wait=3.0)),
    ],
)
def test_parse_prefer(values: list[str], expected: Preferences) -> None:
    assert parse_prefer(values) == expected


@pytest.mark.parametrize(
    "value",
    [
        "wait=\u00b2",  # a superscript two is a digit to str.isdigit, not to HTTP
        "wait=\u0661",  # an Arabic-Indic one
        "wait=" + "9" * 5000,
        f"wait={MAX_DELTA_SECONDS + 1}",
        "wait=-1",
        "wait=1.5",
        "wait=abc",
        "wait=",
        "wait",
        'wait="',
        "respond-async, wait=ten",
    ],
)
def test_a_malformed_or_out_of_range_wait_is_refused(value: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse_prefer([value])
    assert (refused.value.status, refused.value.param, refused.value.code) == (400, "Prefer", "invalid_prefer")


def test_preference_applied() -> None:
    assert applied() == {}
    assert applied(respond_async=True) == {"Preference-Applied": "respond-async"}
    assert applied(wait=30.0) == {"Preference-Applied": "wait=30"}
