"""Label selectors in Kubernetes syntax: parsed and matched as the API server does.

The grammar, the validation and the matching follow k8s.io/apimachinery's
``pkg/labels/selector.go`` (read at 2026-07, the parser kube-apiserver 1.36 applies
to a list's ``labelSelector``), so a selector string means the same to
``InformerCache.list`` as to a list request, and one the server refuses is refused
here too:

- requirements are separated by ``,`` and all must hold (there is no "or");
- ``k=v``, ``k==v``, ``k!=v``; ``k in (a,b)``, ``k notin (a,b)``; ``k`` (exists),
  ``!k`` (does not exist); ``k>n``, ``k<n`` (the label's value read as a 64-bit
  integer; a label that is not one does not match);
- ``!=`` and ``notin`` match objects without the label; ``=`` / ``in`` need it;
- an empty value is allowed: ``k=`` matches ``k: ""``, ``k in ()`` is ``k in ("")``;
- ``in`` and ``notin`` are keywords only where an operator is expected: elsewhere they
  are names (``in in (notin)`` is valid);
- keys are qualified names (an optional DNS-subdomain prefix and ``/``, then at most
  63 of ``[-A-Za-z0-9_.]`` starting and ending alphanumeric); values are empty or at
  most 63 such characters; ``>``/``<`` need one value that is a decimal integer;
- whitespace (space, tab, CR, LF) separates tokens and is otherwise ignored; the empty
  string selects everything.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

__all__ = ["Operator", "Requirement", "Selector", "SelectorError", "parse_selector"]


class SelectorError(ValueError):
    """A label selector that the API server would refuse."""


class Operator(Enum):
    EQUALS = "="
    DOUBLE_EQUALS = "=="
    NOT_EQUALS = "!="
    IN = "in"
    NOT_IN = "notin"
    EXISTS = "exists"
    DOES_NOT_EXIST = "!"
    GREATER_THAN = "gt"
    LESS_THAN = "lt"


_INT64 = (-(2**63), 2**63 - 1)
_DECIMAL = re.compile(r"[+-]?[0-9]+")


def _int64(text: str) -> int | None:
    """Go's ``strconv.ParseInt(text, 10, 64)``: Python's ``int`` would also take
    surrounding spaces and ``_`` separators."""
    if not _DECIMAL.fullmatch(text):
        return None
    value = int(text)
    return value if _INT64[0] <= value <= _INT64[1] else None


@dataclass(frozen=True, slots=True)
class Requirement:
    """One condition on one label; ``values`` sorted, as apimachinery keeps them."""

    key: str
    operator: Operator
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        op = self.operator
        if op is Operator.EXISTS:
            return self.key in labels
        if op is Operator.DOES_NOT_EXIST:
            return self.key not in labels
        value = labels.get(self.key)
        if op in (Operator.NOT_EQUALS, Operator.NOT_IN):
            return value is None or value not in self.values
        if value is None:
            return False
        if op in (Operator.GREATER_THAN, Operator.LESS_THAN):
            have, want = _int64(value), _int64(self.values[0])
            if have is None or want is None:
                return False
            return have > want if op is Operator.GREATER_THAN else have < want
        return value in self.values

    def __str__(self) -> str:
        op = self.operator
        if op is Operator.EXISTS:
            return self.key
        if op is Operator.DOES_NOT_EXIST:
            return f"!{self.key}"
        if op in (Operator.IN, Operator.NOT_IN):
            return f"{self.key} {op.value} ({','.join(self.values)})"
        symbol = {Operator.GREATER_THAN: ">", Operator.LESS_THAN: "<"}.get(op, op.value)
        return f"{self.key}{symbol}{self.values[0]}"


@dataclass(frozen=True, slots=True)
class Selector:
    """Requirements that must all hold, sorted by key. The empty selector matches
    everything."""

    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    @property
    def empty(self) -> bool:
        return not self.requirements

    def __str__(self) -> str:
        """The canonical form, which parses back to an equal selector."""
        return ",".join(str(r) for r in self.requirements)


def parse_selector(text: str) -> Selector:
    """Parse a label selector; raises :class:`SelectorError` where the API server
    would answer 400."""
    return Selector(tuple(sorted(_Parser(text).parse(), key=lambda r: r.key)))


# -- the lexer --------------------------------------------------------------------------

_WHITESPACE = " \t\r\n"
_SPECIAL = "=!(),><"
_TWO_CHAR = ("==", "!=")
_KEYWORDS = ("in", "notin")
_EOS = ""  # the token kind of the end of the string


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # a symbol from _SPECIAL or _TWO_CHAR, a keyword, "id", or _EOS
    text: str


def _lex(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i] in _WHITESPACE:
            i += 1
        if i == n:
            tokens.append(_Token(_EOS, ""))
            return tokens
        if text[i] in _SPECIAL:
            symbol = text[i : i + 2] if text[i : i + 2] in _TWO_CHAR else text[i]
            tokens.append(_Token(symbol, symbol))
            i += len(symbol)
            continue
        start = i
        while i < n and text[i] not in _SPECIAL and text[i] not in _WHITESPACE:
            i += 1
        word = text[start:i]
        tokens.append(_Token(word if word in _KEYWORDS else "id", word))


# -- the parser -------------------------------------------------------------------------

_OPERATORS = {
    "in": Operator.IN,
    "notin": Operator.NOT_IN,
    "=": Operator.EQUALS,
    "==": Operator.DOUBLE_EQUALS,
    "!=": Operator.NOT_EQUALS,
    ">": Operator.GREATER_THAN,
    "<": Operator.LESS_THAN,
}


class _Parser:
    """apimachinery's recursive-descent parser. Where a value or a key is expected the
    keywords ``in``/``notin`` are plain names (its ``Values`` context)."""

    def __init__(self, text: str) -> None:
        self._tokens = _lex(text)
        self._pos = 0

    def _peek(self, *, values: bool = True) -> _Token:
        return self._as(self._tokens[self._pos], values)

    def _next(self, *, values: bool = True) -> _Token:
        token = self._tokens[self._pos]
        self._pos += 1
        return self._as(token, values)

    @staticmethod
    def _as(token: _Token, values: bool) -> _Token:
        return _Token("id", token.text) if values and token.kind in _KEYWORDS else token

    def parse(self) -> list[Requirement]:
        requirements: list[Requirement] = []
        while True:
            token = self._peek()
            if token.kind == _EOS:
                return requirements
            if token.kind not in ("id", "!"):
                raise SelectorError(f"found {token.text!r}, expected: !, identifier, or end")
            requirements.append(self._requirement())
            token = self._next()
            if token.kind == _EOS:
                return requirements
            if token.kind != ",":
                raise SelectorError(f"found {token.text!r}, expected: ',' or end")
            if self._peek().kind not in ("id", "!"):
                raise SelectorError(f"found {self._peek().text!r}, expected: identifier after ','")

    def _requirement(self) -> Requirement:
        negated = False
        token = self._next()
        if token.kind == "!":
            negated = True
            token = self._next()
        if token.kind != "id":
            raise SelectorError(f"found {token.text!r}, expected: identifier")
        key = token.text
        _check_key(key)
        if negated:
            # "!k" stands alone; whatever follows must be "," or the end (parse checks).
            return Requirement(key, Operator.DOES_NOT_EXIST)
        if self._peek().kind in (_EOS, ","):
            return Requirement(key, Operator.EXISTS)
        token = self._next(values=False)
        op = _OPERATORS.get(token.kind)
        if op is None:
            raise SelectorError(
                f"found {token.text!r}, expected: in, notin, =, ==, !=, gt, lt after {key!r}"
            )
        values = self._set() if op in (Operator.IN, Operator.NOT_IN) else self._exact()
        if op in (Operator.GREATER_THAN, Operator.LESS_THAN) and _int64(values[0]) is None:
            raise SelectorError(f"{key}: for 'gt', 'lt' the value must be an integer")
        for value in values:
            _check_value(key, value)
        return Requirement(key, op, values)

    def _set(self) -> tuple[str, ...]:
        token = self._next()
        if token.kind != "(":
            raise SelectorError(f"found {token.text!r}, expected: '('")
        found: set[str] = set()
        token = self._peek()
        if token.kind == ")":
            self._next()
            return ("",)
        if token.kind not in ("id", ","):
            raise SelectorError(f"found {token.text!r}, expected: ',', ')' or identifier")
        # Empty items between commas are the empty value: "(,a)" is {"", "a"}.
        while True:
            token = self._next()
            if token.kind == "id":
                found.add(token.text)
                after = self._peek()
                if after.kind == ")":
                    break
                if after.kind != ",":
                    raise SelectorError(f"found {after.text!r}, expected: ',' or ')'")
            elif token.kind == ",":
                after = self._peek()
                if not found or after.kind in (")", ","):
                    found.add("")
                if after.kind == ")":
                    break
            else:
                raise SelectorError(f"found {token.text!r}, expected: ',' or identifier")
        self._next()  # ")"
        return tuple(sorted(found))

    def _exact(self) -> tuple[str]:
        if self._peek().kind in (_EOS, ","):
            return ("",)
        token = self._next()
        if token.kind != "id":
            raise SelectorError(f"found {token.text!r}, expected: identifier")
        return (token.text,)


# -- validation (apimachinery's content.IsLabelKey and IsLabelValue) --------------------

_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS_SUBDOMAIN = re.compile(rf"{_DNS_LABEL}(\.{_DNS_LABEL})*")
_NAME_MAX = 63
_PREFIX_MAX = 253


def _check_key(key: str) -> None:
    parts = key.split("/")
    if len(parts) > 2:
        raise SelectorError(f"invalid label key {key!r}: at most one '/'")
    name = parts[-1]
    if len(parts) == 2:
        prefix = parts[0]
        if not prefix or len(prefix) > _PREFIX_MAX or not _DNS_SUBDOMAIN.fullmatch(prefix):
            raise SelectorError(
                f"invalid label key {key!r}: the prefix must be a DNS subdomain "
                f"(lower-case, at most {_PREFIX_MAX} characters)"
            )
    if not name or len(name) > _NAME_MAX or not _NAME.fullmatch(name):
        raise SelectorError(
            f"invalid label key {key!r}: the name must be 1-{_NAME_MAX} characters of "
            "[-A-Za-z0-9_.], starting and ending with a letter or digit"
        )


def _check_value(key: str, value: str) -> None:
    if value and (len(value) > _NAME_MAX or not _NAME.fullmatch(value)):
        raise SelectorError(
            f"invalid value {value!r} for label {key!r}: at most {_NAME_MAX} characters "
            "of [-A-Za-z0-9_.], starting and ending with a letter or digit"
        )
