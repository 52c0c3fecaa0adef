"""e2e fixtures: the operator binary as a subprocess and the transition auditor."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import anyio.from_thread
import pytest

from e2e.harness import Operator, TransitionAuditor
from reconciler.client import Client

OperatorFactory = Callable[..., Operator]


def pytest_addoption(parser: pytest.Parser) -> None:
    # Here rather than in e2e/faults/conftest.py: pytest reads options only from the
    # conftest files of the folders named on the command line and their parents.
    parser.addoption(
        "--long",
        action="store_true",
        default=False,
        help="also run the long fault-injection variants (more load, more faults)",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/e2e/" in str(item.path):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture
def start_operator(
    kubeconfig: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[OperatorFactory]:
    """Start ``workspace-operator`` processes; each is SIGTERMed at teardown and must exit 0."""
    started: list[Operator] = []

    def start(
        *args: str, kubeconfig_path: Path | None = None, env: dict[str, str] | None = None
    ) -> Operator:
        op = Operator(
            kubeconfig_path or kubeconfig,
            tmp_path / f"operator-{len(started)}.log",
            list(args),
            env or {},
        )
        started.append(op.start())
        return op

    yield start
    failed = request.node.rep_call.failed if hasattr(request.node, "rep_call") else False
    for op in started:
        if op.proc is not None and op.proc.poll() is None:
            code = op.stop()
            if not failed:
                assert code == 0, f"operator exited {code} on SIGTERM:\n{op.log()[-4000:]}"
        if failed:
            print(f"--- {op.log_path} ---\n{op.log()[-8000:]}")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    return rep


@pytest.fixture
def auditor(kubeconfig: Path, namespace: str) -> Iterator[TransitionAuditor]:
    """Records every status.status change in the test's namespace; fails on an illegal one."""
    with anyio.from_thread.start_blocking_portal() as portal:
        client = portal.call(Client.from_config, str(kubeconfig))
        audit = TransitionAuditor(client, namespace)
        future, _ = portal.start_task(audit.run)
        yield audit
        # An auditor that died would have seen nothing since: say why.
        if future.done() and not future.cancelled():
            future.result()
        future.cancel()
        portal.call(client.close)
    assert audit.illegal == [], f"illegal transitions: {audit.illegal}"
