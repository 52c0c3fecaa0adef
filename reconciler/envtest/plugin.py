"""pytest plugin: a real control plane for integration tests (our envtest).

Fixtures:
- ``control_plane`` (session): a started :class:`ControlPlane`, or ``None`` when
  ``E2E_KUBECONFIG`` points at an existing cluster (e.g. kind);
- ``kubeconfig`` (session): path of an admin kubeconfig for whichever cluster;
- ``k8s`` (function): a connected :class:`reconciler.Client`;
- ``namespace`` (function): a fresh namespace, deleted after the test.

And :func:`private_plane`, a control plane of a test's own, for tests that change
what the shared one must keep (its CRDs, its processes).

CRDs are installed from the ``envtest_crd_paths`` ini option (default
``config/crd`` when that folder exists). Binaries come from
``RECONCILER_ASSETS`` (default ``.cache/control-plane/bin``).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from reconciler.envtest.settings import EXISTING_KUBECONFIG_ENV, assets_dir

if TYPE_CHECKING:
    from reconciler.client import Client
    from reconciler.envtest.controlplane import ControlPlane


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "envtest_crd_paths", "CRD files or folders the control plane installs", type="paths"
    )
    parser.addini(
        "envtest_apiserver_args", "extra kube-apiserver flags", type="linelist", default=[]
    )


def _crd_paths(config: pytest.Config) -> list[Path]:
    paths = [Path(p) for p in config.getini("envtest_crd_paths")]
    if not paths and (config.rootpath / "config" / "crd").is_dir():
        paths = [config.rootpath / "config" / "crd"]
    return paths


@pytest.fixture(scope="session")
def control_plane(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlPlane | None]:
    if os.environ.get(EXISTING_KUBECONFIG_ENV):
        yield None
        return
    from reconciler.envtest.controlplane import ControlPlane

    plane = ControlPlane(
        assets_dir(),
        tmp_path_factory.mktemp("control-plane"),
        crd_paths=_crd_paths(request.config),
        apiserver_args=request.config.getini("envtest_apiserver_args"),
    )
    try:
        plane.start()
    except BaseException:
        _print_logs(plane)
        plane.stop()
        raise
    yield plane
    plane.stop()


@contextlib.contextmanager
def private_plane(
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    *,
    crd_paths: Sequence[Path] = (),
    apiserver_args: Sequence[str] = (),
    why: str = "needs a control plane of its own",
) -> Iterator[ControlPlane]:
    """A started control plane in a fresh folder named after ``name``, stopped on exit.
    Skips (saying ``why``) where ``E2E_KUBECONFIG`` points at an existing cluster."""
    if os.environ.get(EXISTING_KUBECONFIG_ENV):
        pytest.skip(f"{why} (E2E_KUBECONFIG is set)")
    from reconciler.envtest.controlplane import ControlPlane

    plane = ControlPlane(
        assets_dir(),
        tmp_path_factory.mktemp(name),
        crd_paths=crd_paths,
        apiserver_args=apiserver_args,
    )
    try:
        plane.start()
        yield plane
    finally:
        plane.stop()


def _print_logs(plane: ControlPlane) -> None:
    for log in (plane.etcd_log, plane.apiserver_log):
        if log.exists():
            print(f"--- {log} (last 40 lines) ---")
            print("\n".join(log.read_text(errors="replace").splitlines()[-40:]))


@pytest.fixture(scope="session")
def kubeconfig(control_plane: ControlPlane | None) -> Path:
    if control_plane is None:
        return Path(os.environ[EXISTING_KUBECONFIG_ENV])
    return control_plane.kubeconfig


@pytest.fixture
async def k8s(kubeconfig: Path) -> AsyncIterator[Client]:
    from reconciler.client import Client

    client = await Client.from_config(str(kubeconfig))
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def namespace(k8s: Client) -> AsyncIterator[str]:
    from reconciler.errors import NotFound
    from reconciler.resource import NAMESPACE

    name = f"t-{uuid.uuid4().hex[:10]}"
    await k8s.create(NAMESPACE, {"metadata": {"name": name}})
    try:
        yield name
    finally:
        with contextlib.suppress(NotFound):
            await k8s.delete(NAMESPACE, name)
