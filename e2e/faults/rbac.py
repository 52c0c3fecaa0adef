"""The operator's ServiceAccount, bound to config/rbac only, as a kubeconfig.

What the Deployment gets in a cluster: config/manager's namespace, config/rbac's
ServiceAccount and bindings, and a token from the TokenRequest API.
"""

from __future__ import annotations

from pathlib import Path

import anyio

from e2e.harness import ROOT, WORKSPACE, eventually
from reconciler.client import Client
from reconciler.envtest.controlplane import ControlPlane
from reconciler.errors import Forbidden

NAMESPACE = "kaito-workspace-status"
SERVICE_ACCOUNT = "workspace-status-controller"
TOKEN_SECONDS = 3600


async def service_account_kubeconfig(plane: ControlPlane, admin: Client) -> tuple[Path, str]:
    """Install config/rbac, request a token for its ServiceAccount; (kubeconfig, token)."""

    def apply() -> None:
        plane.kubectl("apply", "-f", str(ROOT / "config" / "manager" / "namespace.yaml"))
        plane.kubectl("apply", "-k", str(ROOT / "config" / "rbac"))

    await anyio.to_thread.run_sync(apply)
    answer = await admin.raw(
        "POST",
        f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/{SERVICE_ACCOUNT}/token",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": TOKEN_SECONDS},
        },
    )
    token = str(answer["status"]["token"])
    path = plane.token_kubeconfig(SERVICE_ACCOUNT, token)

    # RBAC reaches the authorizer through the API server's informers: wait for it.
    async def authorized() -> bool:
        client = await Client.from_config(str(path))
        async with client:
            try:
                await client.list(WORKSPACE, limit=1)
            except Forbidden:
                return False
        return True

    await eventually(authorized, 30, "config/rbac to take effect")
    return path, token
