"""The chart, its alerts and dashboard as the tests use them: helm and promtool built by
``hack/tools/build.sh`` next to the control plane's binaries, the chart rendered into
objects, and the monitoring files of ``config/``."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from reconciler.envtest.settings import assets_dir

Obj = dict[str, Any]
ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "workspace-status-controller"
RULE = ROOT / "config" / "prometheus" / "prometheusrule.yaml"
RULE_TESTS = ROOT / "config" / "prometheus" / "alerts_test.yaml"
DASHBOARD = ROOT / "config" / "grafana" / "workspace-status.json"
COMMAND_TIMEOUT = 120.0


def tool(name: str) -> Path:
    """``helm``, ``promtool`` or ``prometheus-operator-crds`` from the assets folder."""
    path = assets_dir() / name
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: build it with hack/tools/build.sh {assets_dir()}"
        )
    return path


def run(
    args: Sequence[str | Path],
    *,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command; with ``check``, fail with its output when it exits non-zero."""
    done = subprocess.run(
        [str(a) for a in args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        env={**os.environ, **(env or {})},
        check=False,
    )
    if check and done.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, args))} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        )
    return done


def helm_env(home: Path) -> dict[str, str]:
    """Helm's cache, configuration and data under ``home``, not the user's."""
    return {
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }


def render(
    values: Mapping[str, Any] | None = None,
    *,
    release: str = "workspace-status-controller",
    namespace: str = "kaito-workspace-status",
) -> list[Obj]:
    """``helm template`` of the chart with ``values``: the objects it would install."""
    done = run(
        [tool("helm"), "template", release, CHART, "--namespace", namespace, "--values", "-"],
        stdin=json.dumps(values or {}),
    )
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def only(objs: Sequence[Obj], kind: str) -> Obj:
    """The one object of ``kind``; fails when there are none or several."""
    found = [o for o in objs if o["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind} objects: {[o['metadata']['name'] for o in found]}"
    return found[0]


def config_object(path: Path, kind: str) -> Obj:
    """The object of ``kind`` in a file of ``config/``."""
    for doc in yaml.safe_load_all(path.read_text()):
        if doc and doc.get("kind") == kind:
            return dict(doc)
    raise ValueError(f"no {kind} in {path}")


def rule_groups() -> Obj:
    """The rule groups of ``config/prometheus``'s PrometheusRule, as promtool reads them."""
    return dict(config_object(RULE, "PrometheusRule")["spec"])


def alerts() -> list[Obj]:
    return [r for g in rule_groups()["groups"] for r in g["rules"] if "alert" in r]


def dashboard_exprs() -> list[str]:
    """Every PromQL expression of the Grafana dashboard: its panels' targets and the
    series its template variables read (``label_values(SERIES, LABEL)``)."""
    board = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", ())]
    for var in board["templating"]["list"]:
        query = var.get("query")
        if isinstance(query, dict):
            series = re.fullmatch(r"label_values\((.*),\s*\w+\)", query["query"])
            exprs.append(series.group(1) if series else query["query"])
    return exprs
