"""A control plane of this folder's own, for the tests that must not share the session's.

``test_main.py`` runs the operator's command against a cluster without the CronJob CRD
(the command installs it), and ``test_config.py`` installs cert-manager's CRDs to
dry-run ``examples/cronjob/config``: one plane serves both (a start costs ~10 s).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from reconciler.envtest.controlplane import ControlPlane
from reconciler.envtest.plugin import private_plane


@pytest.fixture(scope="session")
def bare_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A started control plane that the session's CRDs are not installed in."""
    why = "needs a control plane without the CronJob CRD"
    with private_plane(tmp_path_factory, "cronjob-plane", why=why) as plane:
        yield plane
