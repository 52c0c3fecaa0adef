"""Specification of ``examples/cronjob/cron.py``: the book's cron syntax, its messages and
its meaning.

``REFUSALS`` and ``RUNS`` are what robfig/cron v1.2.0 answers (``cron.ParseStandard``,
then ``Schedule.Next`` from T0, in UTC), recorded from a Go program that calls it. The
same comparison over 33,000 generated expressions (7,500 of them valid) found no
difference in message or in the next twelve runs.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from examples.cronjob.cron import (
    DESCRIPTORS,
    CronSpec,
    Schedule,
    ScheduleError,
    go_atoi,
    go_fields,
    go_quote,
    parse_cron,
)

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday, on the hour
MIN = timedelta(minutes=1)

REFUSALS = [
    ("", "Empty spec string"),
    ("bad", "Expected exactly 5 fields, found 1: bad"),
    ("* * * *", "Expected exactly 5 fields, found 4: * * * *"),
    ("* * * * * *", "Expected exactly 5 fields, found 6: * * * * * *"),
    ("0 0 1 1 * 2030", "Expected exactly 5 fields, found 6: 0 0 1 1 * 2030"),
    ("@reboot", "Unrecognized descriptor: @reboot"),
    ("@hourly ", "Unrecognized descriptor: @hourly "),
    (" @hourly", "Expected exactly 5 fields, found 1:  @hourly"),
    ("60 * * * *", "End of range (60) above maximum (59): 60"),
    ("* 24 * * *", "End of range (24) above maximum (23): 24"),
    ("* * 0 * *", "Beginning of range (0) below minimum (1): 0"),
    ("* * 32 * *", "End of range (32) above maximum (31): 32"),
    ("* * * 13 *", "End of range (13) above maximum (12): 13"),
    ("* * * * 7", "End of range (7) above maximum (6): 7"),
    ("*/0 * * * *", "Step of range should be a positive number: */0"),
    ("5-3 * * * *", "Beginning of range (5) beyond end of range (3): 5-3"),
    ("1-2-3 * * * *", "Too many hyphens: 1-2-3"),
    ("1/2/3 * * * *", "Too many slashes: 1/2/3"),
    ("a * * * *", 'Failed to parse int from a: strconv.Atoi: parsing "a": invalid syntax'),
    ("-1 * * * *", 'Failed to parse int from : strconv.Atoi: parsing "": invalid syntax'),
    ("*/-1 * * * *", "Negative number (-1) not allowed: -1"),
    ("1- * * * *", 'Failed to parse int from : strconv.Atoi: parsing "": invalid syntax'),
    ("* * * foo *", 'Failed to parse int from foo: strconv.Atoi: parsing "foo": invalid syntax'),
    (
        "* * * * mon-sunday",
        'Failed to parse int from sunday: strconv.Atoi: parsing "sunday": invalid syntax',
    ),
    (
        "99999999999999999999 * * * *",
        "Failed to parse int from 99999999999999999999: "
        'strconv.Atoi: parsing "99999999999999999999": value out of range',
    ),
    (
        "99999999999999999999x * * * *",
        "Failed to parse int from 99999999999999999999x: "
        'strconv.Atoi: parsing "99999999999999999999x": value out of range',
    ),
    (
        "9223372036854775808 * * * *",
        "Failed to parse int from 9223372036854775808: "
        'strconv.Atoi: parsing "9223372036854775808": value out of range',
    ),
    (
        'a"b\\c * * * *',
        'Failed to parse int from a"b\\c: strconv.Atoi: parsing "a\\"b\\\\c": invalid syntax',
    ),
    (
        "é\x01 * * * *",
        'Failed to parse int from é\x01: strconv.Atoi: parsing "é\\x01": invalid syntax',
    ),
    (
        "* * * * *\x1c",
        'Failed to parse int from *\x1c: strconv.Atoi: parsing "*\\x1c": invalid syntax',
    ),
]

RUNS = [
    ("*\xa0*\u3000* * *", ["03-02 09:01", "03-02 09:02", "03-02 09:03", "03-02 09:04"]),
    ("*-9 ? * JAN-mar,dec Mon-FRI/2", ["03-02 09:01", "03-02 09:02", "03-02 09:03", "03-02 09:04"]),
    ("+5 */15 1,15 * *", ["03-15 00:05", "03-15 15:05", "04-01 00:05", "04-01 15:05"]),
    ("0 0 1 * 1", ["03-09 00:00", "03-16 00:00", "03-23 00:00", "03-30 00:00"]),
    ("0 0 */2 * 1", ["03-09 00:00", "03-23 00:00", "04-13 00:00", "04-27 00:00"]),
    ("0 0 1-31 * 1", ["03-03 00:00", "03-04 00:00", "03-05 00:00", "03-06 00:00"]),
    ("0 9-17/2 * * 1-5", ["03-02 11:00", "03-02 13:00", "03-02 15:00", "03-02 17:00"]),
    ("@weekly", ["03-08 00:00", "03-15 00:00", "03-22 00:00", "03-29 00:00"]),
]


@pytest.mark.parametrize(("expression", "message"), REFUSALS)
def test_a_refusal_has_the_books_message(expression: str, message: str) -> None:
    with pytest.raises(ScheduleError) as refused:
        parse_cron(expression)
    assert str(refused.value) == message


@pytest.mark.parametrize(("expression", "runs"), RUNS)
def test_a_schedule_runs_when_the_books_runs(expression: str, runs: list[str]) -> None:
    schedule, t, got = Schedule.parse(expression), T0, []
    for _ in runs:
        t = schedule.next_after(t)
        got.append(t.strftime("%m-%d %H:%M"))
    assert got == runs


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        (
            "@every 5m",
            "Unsupported descriptor (schedules are calendar times, not intervals): @every 5m",
        ),
        ("0 , * * *", "No value in the hour field: 0 , * * *"),
    ],
)
def test_what_the_book_accepts_and_cannot_run_is_refused(expression: str, message: str) -> None:
    with pytest.raises(ScheduleError) as refused:
        parse_cron(expression)
    assert str(refused.value) == message


@pytest.mark.parametrize("descriptor", sorted(DESCRIPTORS))
def test_a_descriptor_means_its_five_fields(descriptor: str) -> None:
    assert parse_cron(descriptor) == parse_cron(DESCRIPTORS[descriptor])


def test_equal_specs_for_names_numbers_and_question_marks() -> None:
    assert parse_cron("0 0 ? jan-MAR mon-fri") == parse_cron("0 0 * 1-3 1-5")
    assert parse_cron("0 0 1,* * 1") == parse_cron("0 0 * * 1")  # "*" anywhere: both
    assert parse_cron("0 0 1-31 * 1") != parse_cron("0 0 * * 1")  # no "*": either


def test_a_schedule_that_never_comes_fails_when_evaluated() -> None:
    feb31 = Schedule.parse("0 0 31 2 *")
    with pytest.raises(ScheduleError):
        feb31.next_after(T0)


# -- the meaning, against a brute-force walk --------------------------------------------
def _matches(spec: CronSpec, t: datetime) -> bool:
    """robfig's SpecSchedule.Next, one minute at a time (its ``dayMatches`` for days)."""
    dom, dow = t.day in spec.day_of_month, (t.isoweekday() % 7) in spec.day_of_week
    days = (dom and dow) if spec.days_match_both else (dom or dow)
    return t.minute in spec.minute and t.hour in spec.hour and t.month in spec.month and days


def _item(low: int, high: int, names: list[str]) -> st.SearchStrategy[str]:
    def value(v: int) -> str:
        return names[v - low] if names and v % 2 else str(v)

    single = st.integers(low, high).map(value)
    ranged = st.tuples(st.integers(low, high), st.integers(low, high)).map(
        lambda r: f"{value(min(r))}-{value(max(r))}"
    )
    base = st.one_of(st.sampled_from(["*", "?"]), single, ranged)
    step = st.one_of(st.just(""), st.integers(1, 9).map(lambda s: f"/{s}"))
    return st.tuples(base, step).map("".join)


def _field(low: int, high: int, names: list[str] = []) -> st.SearchStrategy[str]:  # noqa: B006
    return st.lists(_item(low, high, names), min_size=1, max_size=3).map(",".join)


MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
DAYS = ["SUN", "Mon", "tue", "Wed", "thu", "Fri", "sat"]
expressions = st.tuples(
    _field(0, 59), _field(0, 23), _field(1, 31), _field(1, 12, MONTHS), _field(0, 6, DAYS)
).map(" ".join)


@settings(max_examples=200, deadline=None)
@given(expression=expressions)
def test_runs_are_exactly_the_minutes_the_spec_selects(expression: str) -> None:
    """croniter runs an expression of our spelling; every minute of three days it must
    start exactly the minutes robfig's rules select."""
    schedule = Schedule.parse(expression)
    end = T0 + timedelta(days=3)
    walked = [T0 + i * MIN for i in range(1, 3 * 24 * 60 + 1)]
    expected = [t for t in walked if _matches(schedule.spec, t)]
    got, t = [], T0
    while (t := schedule.next_after(t)) <= end:
        got.append(t)
    assert got == expected
    if expected:
        assert schedule.latest_until(expected[-1]) == expected[-1]


# -- the Go library functions the messages depend on ------------------------------------
def test_go_fields_splits_where_go_does() -> None:
    assert go_fields(" a\u00a0b\u3000c\t") == ["a", "b", "c"]
    assert go_fields("a\x1cb") == ["a\x1cb"]  # Python's str.split() would split here


@pytest.mark.parametrize(
    ("text", "value"),
    [("0", 0), ("+5", 5), ("-0", 0), ("007", 7), ("-9223372036854775808", -(2**63))],
)
def test_go_atoi_reads(text: str, value: int) -> None:
    assert go_atoi(text) == value


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "invalid syntax"),
        ("+", "invalid syntax"),
        ("1_000", "invalid syntax"),
        ("9223372036854775807x", "invalid syntax"),
        ("9223372036854775808", "value out of range"),
        ("-9223372036854775809", "value out of range"),
        ("18446744073709551616x", "value out of range"),
    ],
)
def test_go_atoi_refuses_as_go_does(text: str, reason: str) -> None:
    with pytest.raises(ValueError) as refused:
        go_atoi(text)
    assert str(refused.value) == f"strconv.Atoi: parsing {go_quote(text)}: {reason}"


def test_go_quote_escapes_as_go_does() -> None:
    # Checked against Go 1.26's strconv.Quote.
    quoted = go_quote('a"\\é\x01\x7f\n\u200b\U000e0001')
    assert quoted == '"a\\"\\\\é\\x01\\x7f\\n\\u200b\\U000e0001"'
