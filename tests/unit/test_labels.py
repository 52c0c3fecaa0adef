"""Label selectors: apimachinery's grammar, validation and matching.

The cases come from reading k8s.io/apimachinery pkg/labels/selector.go; the
integration test tests/integration/test_cache.py checks the same selectors against
kube-apiserver's own answers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.labels import Operator, Requirement, Selector, SelectorError, parse_selector

Labels = Mapping[str, str]


def req(key: str, op: Operator, *values: str) -> Requirement:
    return Requirement(key, op, tuple(sorted(set(values))))


# -- parsing --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("", ()),
        ("  \t\n", ()),
        ("a=b", (req("a", Operator.EQUALS, "b"),)),
        ("a==b", (req("a", Operator.DOUBLE_EQUALS, "b"),)),
        ("a!=b", (req("a", Operator.NOT_EQUALS, "b"),)),
        ("a = b , c != d", (req("a", Operator.EQUALS, "b"), req("c", Operator.NOT_EQUALS, "d"))),
        ("a", (req("a", Operator.EXISTS),)),
        ("!a", (req("a", Operator.DOES_NOT_EXIST),)),
        ("! a", (req("a", Operator.DOES_NOT_EXIST),)),
        ("a in (x,y)", (req("a", Operator.IN, "x", "y"),)),
        ("a in (y, x, y)", (req("a", Operator.IN, "x", "y"),)),
        ("a notin (x)", (req("a", Operator.NOT_IN, "x"),)),
        ("a in ()", (req("a", Operator.IN, ""),)),
        ("a in (,x)", (req("a", Operator.IN, "", "x"),)),
        ("a in (x,)", (req("a", Operator.IN, "", "x"),)),
        ("a in (x,,y)", (req("a", Operator.IN, "", "x", "y"),)),
        ("a=", (req("a", Operator.EQUALS, ""),)),
        ("a=,b", (req("a", Operator.EQUALS, ""), req("b", Operator.EXISTS))),
        ("a>5", (req("a", Operator.GREATER_THAN, "5"),)),
        ("a<05", (req("a", Operator.LESS_THAN, "05"),)),
        # Keywords are names wherever a name or value is expected.
        ("in in (notin)", (req("in", Operator.IN, "notin"),)),
        ("notin", (req("notin", Operator.EXISTS),)),
        ("a=in", (req("a", Operator.EQUALS, "in"),)),
        # Sorted by key, as apimachinery sorts them.
        (
            "z,a=1,m",
            (req("a", Operator.EQUALS, "1"), req("m", Operator.EXISTS), req("z", Operator.EXISTS)),
        ),
        (
            "kaito.sh/workload=inference,app.kubernetes.io/name",
            (
                req("app.kubernetes.io/name", Operator.EXISTS),
                req("kaito.sh/workload", Operator.EQUALS, "inference"),
            ),
        ),
        ("a=" + "v" * 63, (req("a", Operator.EQUALS, "v" * 63),)),
        ("k" * 63, (req("k" * 63, Operator.EXISTS),)),
    ],
)
def test_parses_what_apimachinery_parses(text: str, want: tuple[Requirement, ...]) -> None:
    assert parse_selector(text) == Selector(want)


@pytest.mark.parametrize(
    "text",
    [
        ",",
        "a,",
        ",a",
        "a,,b",
        "a b",
        "a=b=c",
        "a=(b)",
        "a in b",
        "a in (b",
        "a in (b c)",
        "a notin",
        "a in",
        "=b",
        "!",
        "!a=b",
        "!a in (b)",
        "!!a",
        "a!b",
        "a>",
        "a>b",
        "a<1.5",
        "a>-1",  # an integer, but not a label value
        "a>+1",
        "a=-b",
        "a=b_",
        "a=" + "v" * 64,
        "k" * 64,
        "-a",
        "a/b/c",
        "/a",
        "A.B/c",  # the prefix is a lower-case DNS subdomain
        "a./b",
        "a=é",
        "(",
        "a)",
        "a in (b))",
    ],
)
def test_refuses_what_apimachinery_refuses(text: str) -> None:
    with pytest.raises(SelectorError):
        parse_selector(text)


# -- matching -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "labels", "matches"),
    [
        ("", {}, True),
        ("a=b", {"a": "b"}, True),
        ("a=b", {"a": "c"}, False),
        ("a=b", {}, False),
        ("a!=b", {}, True),  # inequality matches objects without the label
        ("a!=b", {"a": "b"}, False),
        ("a notin (b)", {}, True),
        ("a notin (b,c)", {"a": "c"}, False),
        ("a in (b,c)", {"a": "c"}, True),
        ("a in (b,c)", {}, False),
        ("a", {"a": ""}, True),
        ("!a", {"a": ""}, False),
        ("a=", {"a": ""}, True),
        ("a=", {}, False),
        ("a in ()", {"a": ""}, True),
        ("a>5", {"a": "6"}, True),
        ("a>5", {"a": "5"}, False),
        ("a>5", {"a": "x"}, False),
        ("a>5", {}, False),
        ("a<5", {"a": "-7"}, True),
        ("a<5", {"a": "1_0"}, False),  # Go's ParseInt has no digit separators
        ("a>5", {"a": "99999999999999999999"}, False),  # beyond int64: no match
        ("a=b,c", {"a": "b"}, False),
        ("a=b,c", {"a": "b", "c": "x"}, True),
    ],
)
def test_matches_as_apimachinery_matches(text: str, labels: Labels, matches: bool) -> None:
    assert parse_selector(text).matches(labels) is matches


# -- properties -----------------------------------------------------------------------------

KEYS = st.sampled_from(["a", "b", "app.kubernetes.io/name", "in", "x-1_2.z"])
VALUES = st.sampled_from(["", "x", "y", "1", "10", "-3", "in", "notin"])
INTEGER_VALUES = st.sampled_from(["0", "1", "10", "007"])


@st.composite
def requirements(draw: st.DrawFn) -> Requirement:
    key = draw(KEYS)
    op = draw(st.sampled_from(list(Operator)))
    if op in (Operator.EXISTS, Operator.DOES_NOT_EXIST):
        return req(key, op)
    if op in (Operator.GREATER_THAN, Operator.LESS_THAN):
        return req(key, op, draw(INTEGER_VALUES))
    if op in (Operator.IN, Operator.NOT_IN):
        return req(
            key, op, *draw(st.lists(VALUES.filter(lambda v: v != "-3"), min_size=1, max_size=3))
        )
    return req(key, op, draw(VALUES.filter(lambda v: v != "-3")))


SPACE = st.sampled_from(["", " ", "  ", "\t"])


def spell(r: Requirement, space: Callable[[], str]) -> str:
    """A requirement in one of the ways a person may write it."""
    s = space
    if r.operator is Operator.EXISTS:
        return f"{s()}{r.key}{s()}"
    if r.operator is Operator.DOES_NOT_EXIST:
        return f"{s()}!{s()}{r.key}{s()}"
    if r.operator in (Operator.IN, Operator.NOT_IN):
        inner = ",".join(f"{s()}{v}{s()}" for v in r.values)
        return f"{s()}{r.key} {r.operator.value}{s()}({inner}){s()}"
    symbol = {Operator.GREATER_THAN: ">", Operator.LESS_THAN: "<"}.get(r.operator, r.operator.value)
    return f"{s()}{r.key}{s()}{symbol}{s()}{r.values[0]}{s()}"


def model_matches(r: Requirement, labels: Labels) -> bool:
    """The specification, written independently of the implementation."""
    present = r.key in labels
    value = labels.get(r.key, "")
    match r.operator:
        case Operator.EXISTS:
            return present
        case Operator.DOES_NOT_EXIST:
            return not present
        case Operator.EQUALS | Operator.DOUBLE_EQUALS | Operator.IN:
            return present and value in r.values
        case Operator.NOT_EQUALS | Operator.NOT_IN:
            return not present or value not in r.values
        case Operator.GREATER_THAN | Operator.LESS_THAN:
            try:
                have, want = int(value.replace("_", "x")), int(r.values[0])
            except ValueError:
                return False
            return have > want if r.operator is Operator.GREATER_THAN else have < want
    raise AssertionError(r.operator)


LABEL_SETS = st.dictionaries(KEYS, VALUES, max_size=4)


@settings(max_examples=500, deadline=None)
@given(
    st.lists(requirements(), max_size=4), st.data(), st.lists(LABEL_SETS, min_size=1, max_size=5)
)
def test_any_spelling_parses_to_the_requirements_and_matches_like_the_model(
    reqs: list[Requirement], data: st.DataObject, label_sets: list[Labels]
) -> None:
    text = ",".join(spell(r, lambda: data.draw(SPACE)) for r in reqs)
    selector = parse_selector(text)
    assert sorted(selector.requirements, key=str) == sorted(reqs, key=str)
    for labels in label_sets:
        assert selector.matches(labels) is all(model_matches(r, labels) for r in reqs)


@settings(max_examples=300, deadline=None)
@given(st.lists(requirements(), max_size=4))
def test_the_canonical_form_parses_back_to_the_same_selector(reqs: list[Requirement]) -> None:
    selector = parse_selector(",".join(spell(r, lambda: "") for r in reqs))
    assert parse_selector(str(selector)) == selector


@settings(max_examples=1000, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab=!(),<> \tin1-./_")), max_size=20))
def test_any_text_parses_or_is_refused_with_a_selector_error(text: str) -> None:
    try:
        selector = parse_selector(text)
    except SelectorError:
        return
    assert parse_selector(str(selector)) == selector
