"""What a fault scenario works with, bundled: the plane, a client, the namespace, the
operator factory, the etcd-fed auditor and the figures report.

The ``scenario`` fixture (``conftest.py``) builds one on the shared plane; modules with a
plane of their own build theirs with :func:`scenario_on`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest

from e2e.conftest import OperatorFactory
from e2e.faults.audit import EtcdTransitionAuditor
from e2e.faults.figures import Figures
from e2e.faults.load import create_many, load_names
from e2e.faults.planes import client_for
from e2e.harness import TUNING_EXAMPLE
from reconciler.client import Client
from reconciler.envtest.controlplane import ControlPlane
from reconciler.resource import NAMESPACE

StartAudit = Callable[..., EtcdTransitionAuditor]


def ci_and_long(ci: object, long: object) -> pytest.MarkDecorator:
    """Parametrize ``load`` with the CI variant and the long one (marked ``long``)."""
    return pytest.mark.parametrize(
        "load", [pytest.param(ci, id="ci"), pytest.param(long, id="long", marks=pytest.mark.long)]
    )


@dataclass(frozen=True)
class Scenario:
    plane: ControlPlane
    k8s: Client
    namespace: str
    start_operator: OperatorFactory
    start_audit: StartAudit
    figures: Figures

    def audit(self, plane: ControlPlane | None = None) -> EtcdTransitionAuditor:
        """Start the etcd-fed auditor on the namespace (on ``plane``, default the scenario's)."""
        return self.start_audit(self.plane if plane is None else plane, self.namespace)

    async def populate(
        self, prefix: str, inference: int, tuning: int = 0
    ) -> tuple[list[str], list[str]]:
        """Create ``inference`` + ``tuning`` workspaces named by ``load_names``; their names."""
        inference_names, tuning_names = load_names(prefix, inference, tuning)
        await create_many(self.k8s, self.namespace, inference_names)
        if tuning_names:
            await create_many(self.k8s, self.namespace, tuning_names, TUNING_EXAMPLE)
        return inference_names, tuning_names


@asynccontextmanager
async def scenario_on(
    plane: ControlPlane,
    namespace: str,
    start_operator: OperatorFactory,
    start_audit: StartAudit,
    figures: Figures,
) -> AsyncIterator[Scenario]:
    """A scenario on a plane of the module's own: ``namespace`` is created there and the
    client, closed on exit, talks to that plane."""
    async with client_for(plane.kubeconfig) as k8s:
        await k8s.create(NAMESPACE, {"metadata": {"name": namespace}})
        yield Scenario(plane, k8s, namespace, start_operator, start_audit, figures)
