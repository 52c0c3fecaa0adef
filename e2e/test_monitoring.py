"""The alerts (config/prometheus) and the dashboard (config/grafana): promtool checks the
rules and runs their unit tests, the unit tests cover every alert both ways and catch a
broken alert, and every metric, label and label value the rules and the dashboard
select is served by the running operator."""

from __future__ import annotations

import re
import shutil
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from e2e.chart import RULE_TESTS, alerts, dashboard_exprs, rule_groups, run, tool
from e2e.conftest import OperatorFactory
from e2e.harness import TUNING_EXAMPLE, Operator, create_workspace, eventually, walk_inference
from reconciler.client import Client

STARTUP_TIMEOUT = 60.0
# Labels Prometheus adds to every series it scrapes (the ServiceMonitor's target labels),
# which rules and dashboard may select on though the operator does not export them.
TARGET_LABELS = frozenset(
    {"namespace", "pod", "instance", "job", "service", "container", "endpoint"}
)


# -- reading PromQL -------------------------------------------------------------------
@dataclass(frozen=True)
class Selector:
    """A vector selector: a metric name and its label matchers (label, op, value)."""

    name: str
    matchers: tuple[tuple[str, str, str], ...]


_STRING = r'"(?:[^"\\]|\\.)*"'
_SELECTOR = re.compile(
    rf"(?P<name>[A-Za-z_:][\w:]*)?\s*\{{(?P<matchers>(?:[^{{}}\"]|{_STRING})*)\}}"
)
_MATCHER = re.compile(rf"\s*([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*({_STRING})\s*,?")
_STRINGS = re.compile(rf"{_STRING}|'(?:[^'\\]|\\.)*'|`[^`]*`")
_RANGES = re.compile(r"\[[^\]]*\]")  # ranges and subqueries, with $__rate_interval
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_NUMBERS = re.compile(r"(?<![\w:$])\d[\w.]*")  # 0.99, 15m, 1e3
_IDENT = re.compile(r"(?<![\w:$])[A-Za-z_:][\w:]*")
_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "atan2", "group_left", "group_right", "inf", "nan"}
)


def selectors(expr: str) -> list[Selector]:
    """Every vector selector of a PromQL expression: identifiers that are not functions,
    aggregations, keywords, grouping labels, numbers or durations, with the matchers
    written beside them. A selector without a name (``{__name__=…}``) is refused."""
    found: list[Selector] = []

    def take(match: re.Match[str]) -> str:
        name = match.group("name")
        if name is None or name in _KEYWORDS:
            raise ValueError(f"a selector without a metric name in {expr!r}")
        body = match.group("matchers")
        matchers = tuple(
            (m.group(1), m.group(2), m.group(3)[1:-1]) for m in _MATCHER.finditer(body)
        )
        if "".join(m.group(0) for m in _MATCHER.finditer(body)).strip() != body.strip():
            raise ValueError(f"unreadable matchers {{{body}}} in {expr!r}")
        found.append(Selector(name, matchers))
        return " "

    rest = _SELECTOR.sub(take, expr)
    for pattern in (_STRINGS, _RANGES, _GROUPING, _NUMBERS):
        rest = pattern.sub(" ", rest)
    found.extend(
        Selector(m.group(0), ())
        for m in _IDENT.finditer(rest)
        if m.group(0) not in _KEYWORDS and not rest[m.end() :].lstrip().startswith("(")
    )
    return found


def test_selectors_reads_names_and_matchers_and_nothing_else() -> None:
    expr = """
        histogram_quantile(0.99, sum by (le, controller) (rate(
          controller_runtime_reconcile_time_seconds_bucket{namespace="$namespace",
            controller=~"a|b"}[$__rate_interval])))
        / on (namespace) group_left ()
        max without (pod) (x_total offset 15m) > bool 1e3
        and label_replace(up_one, "dst", "$1", "src", "(.*)")
        unless min_over_time(y{state!="a,b}"}[30m:1m])
    """
    assert selectors(expr) == [
        Selector(
            "controller_runtime_reconcile_time_seconds_bucket",
            (("namespace", "=", "$namespace"), ("controller", "=~", "a|b")),
        ),
        Selector("y", (("state", "!=", "a,b}"),)),
        Selector("x_total", ()),
        Selector("up_one", ()),
    ]
    with pytest.raises(ValueError, match="without a metric name"):
        selectors('sum({__name__="x"})')


# -- what the operator serves -------------------------------------------------------------
def served(exposition: str) -> dict[str, dict[str, set[str]]]:
    """Sample name → label → the values seen, for every sample in a scrape."""
    names: dict[str, dict[str, set[str]]] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            labels = names.setdefault(sample.name, defaultdict(set))
            for label, value in sample.labels.items():
                labels[label].add(value)
    return names


def _problems(
    where: str, selector: Selector, served: dict[str, dict[str, set[str]]]
) -> Iterator[str]:
    labels = served.get(selector.name)
    if labels is None:
        yield f"{where}: {selector.name} is not served"
        return
    for label, op, value in selector.matchers:
        if label in TARGET_LABELS:
            continue
        if label not in labels:
            yield f"{where}: {selector.name} has no label {label!r} (it has {sorted(labels)})"
            continue
        if "$" in value or op.startswith("!"):
            continue  # a dashboard variable, or a negation that any value satisfies
        seen = labels[label]
        if op == "=":
            wanted = [value]
        elif re.fullmatch(r"[\w.-]+(?:\|[\w.-]+)*", value):
            wanted = value.split("|")  # an alternation of values: each must exist
        else:
            if not any(re.fullmatch(value, v) for v in seen):
                yield f"{where}: {selector.name}{{{label}=~{value!r}}} matches none of {seen}"
            continue
        for v in wanted:
            if v not in seen:
                yield f"{where}: {selector.name}{{{label}={v!r}}} is never served ({sorted(seen)})"


def _uses() -> list[tuple[str, Selector]]:
    uses = [(f"alert {a['alert']}", s) for a in alerts() for s in selectors(a["expr"])]
    uses += [(f"dashboard {e[:60]!r}", s) for e in dashboard_exprs() for s in selectors(e)]
    return uses


async def _operator_with_every_series(
    start_operator: OperatorFactory, k8s: Client, namespace: str
) -> Operator:
    """A leader-elected operator that has reconciled, queued, watched a workspace leave
    Pending and a tuning workspace appear: so every histogram has observations."""
    op = start_operator(
        f"--namespace={namespace}", "--leader-elect", f"--leader-election-namespace={namespace}"
    )
    await op.wait_ready(STARTUP_TIMEOUT)
    await walk_inference(k8s, namespace, "inference")
    await create_workspace(k8s, namespace, "tuning", TUNING_EXAMPLE)

    def left_pending() -> bool:
        return op.metric("kaito_workspace_status_pending_seconds_count") >= 1

    await eventually(left_pending, 20, "the pending-seconds histogram to have an observation")
    return op


async def test_every_metric_the_alerts_and_dashboard_use_is_served(
    start_operator: OperatorFactory, k8s: Client, namespace: str
) -> None:
    uses = _uses()
    names = {s.name for _, s in uses}
    # The parser found what is surely there: a sanity floor, not the list under test.
    assert {
        "kaito_workspace_status_workspaces",
        "kaito_workspace_status_pending_seconds_bucket",
        "controller_runtime_reconcile_errors_total",
        "leader_election_master_status",
        "workqueue_depth",
    } <= names, names
    op = await _operator_with_every_series(start_operator, k8s, namespace)
    scrape = served(op.metrics())
    problems = [p for where, s in uses for p in _problems(where, s, scrape)]
    assert not problems, "\n".join(problems)


def test_a_misspelt_metric_or_label_value_is_caught() -> None:
    scrape = served(
        "# TYPE workqueue_depth gauge\n"
        'workqueue_depth{name="workspace-status",controller="workspace-status"} 0\n'
    )
    ok = Selector("workqueue_depth", (("name", "=~", "workspace-status"),))
    assert list(_problems("t", ok, scrape)) == []
    for wrong in (
        Selector("workqueue_depths", ()),
        Selector("workqueue_depth", (("queue", "=", "workspace-status"),)),
        Selector("workqueue_depth", (("name", "=", "workspace"),)),
        Selector("workqueue_depth", (("name", "=~", "workspace-status|workspace-crd"),)),
    ):
        assert list(_problems("t", wrong, scrape)) != [], wrong


# -- promtool -------------------------------------------------------------------------
def _promtool_dir(tmp_path: Path, groups: dict[str, Any]) -> Path:
    """The rule groups as alerts.rules.yaml beside a copy of the unit tests."""
    (tmp_path / "alerts.rules.yaml").write_text(yaml.safe_dump(groups, sort_keys=False))
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    return tmp_path


def test_promtool_accepts_the_rules(tmp_path: Path) -> None:
    folder = _promtool_dir(tmp_path, rule_groups())
    done = run([tool("promtool"), "check", "rules", folder / "alerts.rules.yaml"])
    assert f"SUCCESS: {len(alerts())} rules found" in done.stdout, done.stdout


def test_the_alerts_pass_their_promtool_unit_tests(tmp_path: Path) -> None:
    folder = _promtool_dir(tmp_path, rule_groups())
    done = run([tool("promtool"), "test", "rules", folder / RULE_TESTS.name])
    assert "SUCCESS" in done.stdout, done.stdout


def test_every_alert_has_a_case_that_fires_and_one_that_does_not() -> None:
    cases: dict[str, set[bool]] = defaultdict(set)
    for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for case in test.get("alert_rule_test") or ():
            cases[case["alertname"]].add(bool(case.get("exp_alerts")))
    assert {a["alert"]: {True, False} for a in alerts()} == dict(cases)


@pytest.mark.parametrize(
    ("broken", "expr"), [("never fires", "vector(1) < 0"), ("always fires", "vector(1)")]
)
def test_the_unit_tests_catch_a_broken_alert(tmp_path: Path, broken: str, expr: str) -> None:
    groups = rule_groups()
    for group in groups["groups"]:
        for rule in group["rules"]:
            rule["expr"] = expr
    folder = _promtool_dir(tmp_path, groups)
    done = run([tool("promtool"), "test", "rules", folder / RULE_TESTS.name], check=False)
    assert done.returncode != 0, f"an alert that {broken} passed:\n{done.stdout}"
    output = done.stdout + done.stderr
    missed = [a["alert"] for a in alerts() if f"alertname: {a['alert']}," not in output]
    assert missed == [], f"no test failed for these alerts when they {broken}"
