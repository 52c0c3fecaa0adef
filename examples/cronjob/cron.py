"""Cron schedules as the kubebuilder book reads them: syntax, errors and meaning.

The book checks ``spec.schedule`` with ``cron.ParseStandard`` of ``github.com/robfig/cron``
v1.2.0 and runs it with that parser's ``Schedule.Next``. :func:`parse_cron` reads the same
language and refuses with the same messages, which the validating webhook shows to users
as the book's webhook does; :class:`Schedule` runs what it accepts, with the same meaning,
by handing croniter an equivalent expression. The controller and the webhook share it, so
a schedule the webhook lets through is one the controller can run.

What robfig/cron v1.2.0 accepts (read from its ``parser.go`` and ``spec.go``):

- a descriptor: ``@yearly`` = ``@annually``, ``@monthly``, ``@weekly``, ``@daily`` =
  ``@midnight``, ``@hourly``, matched exactly (no surrounding spaces);
- or exactly five whitespace-separated fields (Go's ``strings.Fields``): minute 0-59,
  hour 0-23, day of month 1-31, month 1-12 or ``jan``-``dec``, day of week 0-6 or
  ``sun``-``sat`` (names in any case; 7 is not Sunday);
- a field is a comma-separated list (empty items skipped) of ``*`` or ``?`` (every value),
  ``a``, ``a-b``, each optionally ``/step``; ``a/step`` means ``a-max/step``; numbers go
  through Go's ``strconv.Atoi`` (so ``+5`` is 5);
- days: when an item of the day-of-month or the day-of-week field is ``*`` or ``?`` (with
  or without a step) a day must match both fields; otherwise either (``0 0 1 * 1`` runs
  on the 1st and on Mondays, ``0 0 */2 * 1`` on Mondays with an odd date).

Two differences, both refusals of what the book's parser accepts: ``@every <duration>``
(an interval, where our controller counts runs on the calendar), and a field whose list
is empty (``,``), which selects no time at all (the book's controller never runs it). And
one in meaning: robfig gives up looking for the next run after five years; croniter
finds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

from croniter import CroniterError, croniter

__all__ = ["CronSpec", "Schedule", "ScheduleError", "parse_cron"]


class ScheduleError(ValueError):
    """``spec.schedule`` is not a schedule we can run; the message is the book's where
    the book refuses it too."""


class _Bounds(NamedTuple):
    name: str
    min: int
    max: int
    names: dict[str, int]


_MONTH_NAMES = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DAY_NAMES = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
_MINUTE = _Bounds("minute", 0, 59, {})
_HOUR = _Bounds("hour", 0, 23, {})
_DAY_OF_MONTH = _Bounds("day of month", 1, 31, {})
_MONTH = _Bounds("month", 1, 12, {n: i for i, n in enumerate(_MONTH_NAMES, 1)})
_DAY_OF_WEEK = _Bounds("day of week", 0, 6, {n: i for i, n in enumerate(_DAY_NAMES)})
_FIELDS = (_MINUTE, _HOUR, _DAY_OF_MONTH, _MONTH, _DAY_OF_WEEK)

DESCRIPTORS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
"""Each descriptor robfig/cron knows and the five fields that mean the same."""


@dataclass(frozen=True)
class CronSpec:
    """What a schedule selects: the values of each field, and how days combine.

    Two expressions with equal specs run at the same times (``@hourly`` and
    ``0 * * * *``; ``1-5`` and ``mon-fri``).
    """

    minute: frozenset[int]
    hour: frozenset[int]
    day_of_month: frozenset[int]
    month: frozenset[int]
    day_of_week: frozenset[int]
    days_match_both: bool
    """A day-of-month or day-of-week field started with ``*`` or ``?``: a day must be in
    both sets (robfig's star bit); otherwise in either, as classic cron."""


def parse_cron(spec: str) -> CronSpec:
    """Read ``spec`` as robfig/cron v1.2.0's ``ParseStandard`` does; raise
    :class:`ScheduleError` with its message where it refuses (and for the two
    refusals of our own in the module's docstring)."""
    if not spec:
        raise ScheduleError("Empty spec string")
    if spec[0] == "@":
        if spec.startswith("@every "):
            raise ScheduleError(
                f"Unsupported descriptor (schedules are calendar times, not intervals): {spec}"
            )
        if spec not in DESCRIPTORS:
            raise ScheduleError(f"Unrecognized descriptor: {spec}")
        spec = DESCRIPTORS[spec]
    fields = go_fields(spec)
    if len(fields) != len(_FIELDS):
        raise ScheduleError(f"Expected exactly 5 fields, found {len(fields)}: {spec}")
    values = [_parse_field(text, bounds) for text, bounds in zip(fields, _FIELDS, strict=True)]
    for (selected, _), bounds in zip(values, _FIELDS, strict=True):
        if not selected:
            raise ScheduleError(f"No value in the {bounds.name} field: {spec}")
    (minute, _), (hour, _), (dom, dom_star), (month, _), (dow, dow_star) = values
    return CronSpec(minute, hour, dom, month, dow, days_match_both=dom_star or dow_star)


def _parse_field(field: str, bounds: _Bounds) -> tuple[frozenset[int], bool]:
    """The values a field selects, and whether any of its items is ``*`` or ``?``."""
    selected: set[int] = set()
    starred = False
    for expr in (item for item in field.split(",") if item):
        selected |= _parse_range(expr, bounds)
        starred |= expr.split("/")[0].split("-")[0] in ("*", "?")
    return frozenset(selected), starred


def _parse_range(expr: str, bounds: _Bounds) -> set[int]:
    # The checks and their order are robfig's getRange: the first failure is reported.
    range_and_step = expr.split("/")
    low_and_high = range_and_step[0].split("-")
    if low_and_high[0] in ("*", "?"):
        start, end = bounds.min, bounds.max  # anything after "*-" is ignored, as there
    else:
        start = _int_or_name(low_and_high[0], bounds)
        if len(low_and_high) == 1:
            end = start
        elif len(low_and_high) == 2:
            end = _int_or_name(low_and_high[1], bounds)
        else:
            raise ScheduleError(f"Too many hyphens: {expr}")
    if len(range_and_step) == 1:
        step = 1
    elif len(range_and_step) == 2:
        step = _non_negative_int(range_and_step[1])
        if len(low_and_high) == 1:
            end = bounds.max  # "a/step" is "a-max/step"
    else:
        raise ScheduleError(f"Too many slashes: {expr}")
    if start < bounds.min:
        raise ScheduleError(f"Beginning of range ({start}) below minimum ({bounds.min}): {expr}")
    if end > bounds.max:
        raise ScheduleError(f"End of range ({end}) above maximum ({bounds.max}): {expr}")
    if start > end:
        raise ScheduleError(f"Beginning of range ({start}) beyond end of range ({end}): {expr}")
    if step == 0:
        raise ScheduleError(f"Step of range should be a positive number: {expr}")
    return set(range(start, end + 1, step))


def _int_or_name(expr: str, bounds: _Bounds) -> int:
    named = bounds.names.get(expr.lower())
    return named if named is not None else _non_negative_int(expr)


def _non_negative_int(expr: str) -> int:
    try:
        number = go_atoi(expr)
    except ValueError as err:
        raise ScheduleError(f"Failed to parse int from {expr}: {err}") from None
    if number < 0:
        raise ScheduleError(f"Negative number ({number}) not allowed: {expr}")
    return number


# -- the Go library functions the messages depend on ----------------------------------
# Go's unicode.IsSpace: Latin-1's six ASCII spaces, NEL and NBSP, then White_Space.
_GO_SPACES = frozenset(
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_INT64 = 1 << 63


def go_fields(s: str) -> list[str]:
    """Go's ``strings.Fields``: split around runs of Go's white space (Python's
    ``str.split`` also splits at U+001C..U+001F, which Go does not)."""
    out: list[str] = []
    start = -1
    for i, ch in enumerate(s):
        if ch in _GO_SPACES:
            if start >= 0:
                out.append(s[start:i])
                start = -1
        elif start < 0:
            start = i
    if start >= 0:
        out.append(s[start:])
    return out


def go_atoi(s: str) -> int:
    """Go's ``strconv.Atoi`` on a 64-bit machine: an optional sign, then decimal digits;
    raises ValueError with Go's message ("strconv.Atoi: parsing "x": invalid syntax")."""
    negative = s.startswith("-")
    digits = s[1:] if s.startswith(("+", "-")) else s
    bad = next((i for i, c in enumerate(digits) if not "0" <= c <= "9"), len(digits))
    # Go reads left to right: digits that overflow 64 bits are out of range before a bad
    # character after them is seen; a value past int64 is out of range at the end.
    if bad and int(digits[:bad]) >= 1 << 64:
        raise ValueError(f"strconv.Atoi: parsing {go_quote(s)}: value out of range")
    if not digits or bad < len(digits):
        raise ValueError(f"strconv.Atoi: parsing {go_quote(s)}: invalid syntax")
    value = int(digits)
    if value > _INT64 or (value == _INT64 and not negative):
        raise ValueError(f"strconv.Atoi: parsing {go_quote(s)}: value out of range")
    return -value if negative else value


def go_quote(s: str) -> str:
    """Go's ``strconv.Quote``: a double-quoted literal, printable characters as they are."""
    out = ['"']
    for ch in s:
        code = ord(ch)
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch.isprintable():
            out.append(ch)
        elif ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif 0xD800 <= code <= 0xDFFF:  # Go's JSON decoder has made it U+FFFD, printable
            out.append("\ufffd")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


_GO_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_GO_ESCAPES["\v"] = "\\v"


# -- running a schedule ----------------------------------------------------------------
# croniter's get_prev answers strictly before its start: a microsecond later includes it.
_TICK = timedelta(microseconds=1)


@dataclass(frozen=True)
class Schedule:
    """A schedule :func:`parse_cron` accepts, evaluated in UTC.

    croniter runs an expression that spells out the selected values, so croniter's own
    reading of names, ``?``, steps and day rules never decides what runs.
    """

    expression: str
    """As the user wrote it, for messages."""
    spec: CronSpec
    _croniter_expression: str
    _day_or: bool

    @classmethod
    def parse(cls, expression: str) -> Schedule:
        spec = parse_cron(expression)
        dom = _spell(spec.day_of_month, _DAY_OF_MONTH)
        dow = _spell(spec.day_of_week, _DAY_OF_WEEK)
        if not spec.days_match_both and "*" in (dom, dow):
            # Either set holds every day, so every day matches; croniter would take the
            # "*" as "no restriction" and apply the other set alone.
            dom = dow = "*"
        parts = [_spell(spec.minute, _MINUTE), _spell(spec.hour, _HOUR), dom]
        parts += [_spell(spec.month, _MONTH), dow]
        return cls(expression, spec, " ".join(parts), not spec.days_match_both)

    def next_after(self, t: datetime) -> datetime:
        """The first scheduled time strictly after ``t``."""
        return self._step(t, forward=True)

    def latest_until(self, t: datetime) -> datetime:
        """The last scheduled time at or before ``t``."""
        return self._step(t + _TICK, forward=False)

    def _step(self, t: datetime, *, forward: bool) -> datetime:
        try:
            it = croniter(self._croniter_expression, t, day_or=self._day_or)
            return it.get_next(datetime) if forward else it.get_prev(datetime)
        except CroniterError as err:  # e.g. "0 0 31 2 *" never comes
            raise ScheduleError(f"{self.expression!r}: {err}") from err


def _all(bounds: _Bounds) -> frozenset[int]:
    return frozenset(range(bounds.min, bounds.max + 1))


def _spell(values: frozenset[int], bounds: _Bounds) -> str:
    return "*" if values == _all(bounds) else ",".join(map(str, sorted(values)))
