"""The parsers of header and query values are bounded: every malformed or out-of-range value is a ValueError
(or UnsafeCallback), never an OverflowError or a UnicodeError that would surface as a 500."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from proxy.delivery.preferences import MAX_DELTA_SECONDS, Preferences, parse_prefer
from proxy.delivery.ssrf import UnsafeCallback, parse_callback
from proxy.durations import MAX_DURATION, DurationOutOfRange, parse_duration, parse_instant
from proxy.errors import InvalidRequest
from proxy.headers import header_text
from proxy.routes.savings import parse_moment

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("text", ["1e12d", "inf", "1e400", "nan", "9" * 5000, "٣s", "²", "1e999"])
def test_a_duration_out_of_range_or_not_ascii_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_the_bound_is_its_own_error_and_configurable() -> None:
    assert parse_duration("7d", maximum=7 * 86400) == 7 * 86400
    with pytest.raises(DurationOutOfRange):
        parse_duration("8d", maximum=7 * 86400)
    with pytest.raises(DurationOutOfRange):
        parse_duration(MAX_DURATION + 1)
    assert parse_duration("1h30m") == 5400
    assert parse_duration("2.5") == 2.5


@pytest.mark.parametrize("text", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "2026-01-01T00:00:00²"])
def test_an_instant_outside_years_1_to_9999_in_utc_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message varies with the fault; the type is the contract
        parse_instant(text)


@pytest.mark.parametrize("text", ["1e12", "inf", "-inf", "nan", "0001-01-01T00:00:00+01:00", "9" * 5000])
def test_a_report_moment_out_of_range_is_a_400(text: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse_moment(text, NOW, param="since")
    assert refused.value.status == 400
    assert refused.value.param == "since"


def test_prefer_wait_is_ascii_delta_seconds() -> None:
    assert parse_prefer(["wait=" + "0" * 5000 + "7"]) == Preferences(wait=7.0)
    assert parse_prefer([f"wait={MAX_DELTA_SECONDS}"]) == Preferences(wait=float(MAX_DELTA_SECONDS))


# a superscript or Arabic-Indic digit is a digit to str.isdigit, not to delta-seconds (RFC 9110); past 2**31 is
# out of range: each a 400 naming Prefer, before any job is written
@pytest.mark.parametrize("value", ["wait=²", "wait=٣", "wait=" + "9" * 5000, f"wait={MAX_DELTA_SECONDS + 1}"])
def test_a_prefer_wait_that_is_not_delta_seconds_in_range_is_a_400(value: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse_prefer([value])
    assert (refused.value.status, refused.value.param) == (400, "Prefer")


@pytest.mark.parametrize(
    "url",
    [
        "http://127\u30020\u30020\u30021/hook",
        "http://\uff11\uff12\uff17.\uff10.\uff10.\uff11/hook",
        "http://169\uff0e254\uff0e169\uff0e254/latest",
        "http://\u24db\u24de\u24d2\u24d0\u24db\u24d7\u24de\u24e2\u24e3/",
        "http://a..b/",
        "http://" + "a" * 64 + ".example/",
    ],
)
def test_a_callback_host_is_idna_normalised_before_the_ssrf_check(url: str) -> None:
    with pytest.raises(UnsafeCallback):
        parse_callback(url, [])


def test_an_international_host_is_checked_as_its_a_label() -> None:
    assert parse_callback("https://m\u00fcnchen.example/hook", []).host == "xn--mnchen-3ya.example"


def test_header_text_is_the_utf8_the_caller_sent() -> None:
    sent = "http://m\u00fcnchen.example/".encode().decode("latin-1")  # as the ASGI server hands it over
    assert header_text(sent, param="X") == "http://m\u00fcnchen.example/"
    assert header_text("  ", param="X") is None
    with pytest.raises(InvalidRequest):
        header_text(b"\xff\xfe".decode("latin-1"), param="X")
    with pytest.raises(InvalidRequest):
        header_text("a" * 5000, param="X")
