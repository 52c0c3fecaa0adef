"""Fixtures of the fault suite: the ``--long`` switch, the figures report, the etcd-fed
transition auditor and the scenario that bundles them.

Long variants carry the ``long`` marker and are skipped unless pytest runs with
``--long`` (the option is declared in ``e2e/conftest.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future

import anyio.from_thread
import pytest

from e2e.conftest import OperatorFactory
from e2e.faults.audit import EtcdTransitionAuditor, assert_clean
from e2e.faults.figures import Figures
from e2e.faults.scenario import Scenario
from e2e.faults.scenario import StartAudit as StartAudit  # re-exported: tests import it here
from reconciler.client import Client
from reconciler.envtest.controlplane import ControlPlane

FIGURES = pytest.StashKey[Figures]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("long", default=False):
        return
    skip = pytest.mark.skip(reason="long variant: run with --long")
    for item in items:
        if item.get_closest_marker("long") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def figures(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Figures:
    stash = request.config.stash
    if FIGURES not in stash:
        stash[FIGURES] = Figures(tmp_path_factory.getbasetemp() / "fault-report.md")
    return stash[FIGURES]


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    report = config.stash.get(FIGURES, None)
    if report is None or not (report.scenarios or report.bad_input):
        return
    terminalreporter.section("fault-injection figures")
    terminalreporter.write_line(report.render())
    terminalreporter.write_line(f"(written to {report.path})")


@pytest.fixture
def local_plane(control_plane: ControlPlane | None) -> ControlPlane:
    """The envtest plane: auditors read its etcd and proxies sit in front of its API server,
    neither of which a remote cluster offers."""
    if control_plane is None:
        pytest.skip("fault injection needs the local control plane (E2E_KUBECONFIG is set)")
    return control_plane


@pytest.fixture
def start_audit() -> Iterator[StartAudit]:
    """Start :class:`EtcdTransitionAuditor`s on their own event loop thread.

    At teardown each must have found no illegal edge, no stale write and no gap.
    """
    started: list[EtcdTransitionAuditor] = []
    futures: list[Future[None]] = []
    with anyio.from_thread.start_blocking_portal() as portal:

        def start(plane: ControlPlane, namespace: str | None = None) -> EtcdTransitionAuditor:
            auditor = EtcdTransitionAuditor(plane.etcd_url, namespace)
            future, _ = portal.start_task(auditor.run)
            futures.append(future)
            started.append(auditor)
            return auditor

        yield start
        for future in futures:
            future.cancel()
    for auditor in started:
        assert_clean(auditor)
        assert auditor.gaps == 0, "the audit missed versions (etcd compacted them first)"


@pytest.fixture
def scenario(
    local_plane: ControlPlane,
    k8s: Client,
    namespace: str,
    start_operator: OperatorFactory,
    start_audit: StartAudit,
    figures: Figures,
) -> Scenario:
    """The shared plane's scenario: the test's namespace, its operators and auditors."""
    return Scenario(local_plane, k8s, namespace, start_operator, start_audit, figures)
