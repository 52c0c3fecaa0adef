"""``examples/cronjob/config``, the operator for a real cluster: rendered by kustomize, its
parts agree with each other and with the code, and the API server accepts all of it
(server-side dry run; cert-manager's CRDs installed for its Issuer and Certificate).

cert-manager's CRDs come from its Go module (``deploy/crds``): ``hack/tools/build.sh``
copies them to ``cert-manager-crds/`` beside the control plane's binaries; else they
are found in ``$CERT_MANAGER_CRDS`` or the Go module cache::

    GOMODCACHE=… go mod download -json github.com/cert-manager/cert-manager@v1.21.0

Without them the cert-manager objects are left out of the dry run, and the test that
applies them is skipped.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from examples.cronjob.api import CRONJOB
from reconciler.envtest.controlplane import ControlPlane
from reconciler.envtest.settings import assets_dir
from reconciler.webhook import CONVERT_PATH, DEFAULT_CERT_DIR, defaulting_path, validating_path

ROOT = Path(__file__).parents[3]
CONFIG = ROOT / "examples" / "cronjob" / "config"
CERT_MANAGER_VERSION = "v1.21.0"
CERT_MANAGER_CRDS_ENV = "CERT_MANAGER_CRDS"
INJECT_CA_FROM = "cert-manager.io/inject-ca-from"

Obj = dict[str, Any]


def kustomize() -> list[Obj]:
    kubectl = assets_dir() / "kubectl"
    out = subprocess.run(
        [str(kubectl if kubectl.exists() else "kubectl"), "kustomize", str(CONFIG)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.fixture(scope="module")
def rendered() -> list[Obj]:
    return kustomize()


def one(objs: list[Obj], kind: str) -> Obj:
    found = [o for o in objs if o["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind}s"
    return found[0]


def cert_manager_crds() -> Path | None:
    """cert-manager's deploy/crds folder, if this machine has it."""
    if os.environ.get(CERT_MANAGER_CRDS_ENV):
        return Path(os.environ[CERT_MANAGER_CRDS_ENV])
    if (assets_dir() / "cert-manager-crds").is_dir():
        return assets_dir() / "cert-manager-crds"
    caches = [Path.home() / "go" / "pkg" / "mod"]
    if os.environ.get("GOMODCACHE"):
        caches.insert(0, Path(os.environ["GOMODCACHE"]))
    for cache in caches:
        crds = cache / "github.com" / "cert-manager" / f"cert-manager@{CERT_MANAGER_VERSION}"
        if (crds / "deploy" / "crds").is_dir():
            return crds / "deploy" / "crds"
    return None


# -- rendered, the parts agree ---------------------------------------------------------------
def test_the_ca_injection_names_the_serving_certificate(rendered: list[Obj]) -> None:
    cert = one(rendered, "Certificate")
    want = f"{cert['metadata']['namespace']}/{cert['metadata']['name']}"
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        assert one(rendered, kind)["metadata"]["annotations"] == {INJECT_CA_FROM: want}
    assert one(rendered, "CustomResourceDefinition")["metadata"]["annotations"] == {
        INJECT_CA_FROM: want
    }
    issuer = one(rendered, "Issuer")
    assert issuer["spec"] == {"selfSigned": {}}
    assert cert["spec"]["issuerRef"] == {"kind": "Issuer", "name": issuer["metadata"]["name"]}


def test_the_certificate_is_for_the_service_the_api_server_calls(rendered: list[Obj]) -> None:
    service = one(rendered, "Service")
    name, namespace = service["metadata"]["name"], service["metadata"]["namespace"]
    assert one(rendered, "Certificate")["spec"]["dnsNames"] == [
        f"{name}.{namespace}.svc",
        f"{name}.{namespace}.svc.cluster.local",
    ]
    conversion = one(rendered, "CustomResourceDefinition")["spec"]["conversion"]
    assert conversion["strategy"] == "Webhook"
    assert conversion["webhook"]["clientConfig"] == {
        "service": {"name": name, "namespace": namespace, "path": CONVERT_PATH}
    }
    paths = {
        "MutatingWebhookConfiguration": defaulting_path(CRONJOB),
        "ValidatingWebhookConfiguration": validating_path(CRONJOB),
    }
    for kind, path in paths.items():
        (hook,) = one(rendered, kind)["webhooks"]
        assert hook["clientConfig"] == {
            "service": {"name": name, "namespace": namespace, "path": path}
        }
        assert hook["rules"][0]["apiVersions"] == ["v1"]
        assert hook["matchPolicy"] == "Equivalent"


def test_the_deployment_serves_the_certificate_on_the_services_port(rendered: list[Obj]) -> None:
    deployment, service = one(rendered, "Deployment"), one(rendered, "Service")
    pod = deployment["spec"]["template"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    (container,) = pod["spec"]["containers"]
    (secret_volume,) = [v for v in pod["spec"]["volumes"] if "secret" in v]
    secret = one(rendered, "Certificate")["spec"]["secretName"]
    assert secret_volume["secret"] == {"secretName": secret}
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == secret_volume["name"]]
    assert (mount["mountPath"], mount["readOnly"]) == (str(DEFAULT_CERT_DIR), True)
    port = service["spec"]["ports"][0]["targetPort"]
    assert f"--webhook-cert-dir={DEFAULT_CERT_DIR}" in container["args"]
    assert f"--webhook-port={port}" in container["args"]
    assert {"name": "webhook-server", "containerPort": port, "protocol": "TCP"} in container[
        "ports"
    ]
    assert "--no-install-crd" in container["args"]


def test_every_namespaced_object_is_in_the_operators_namespace(rendered: list[Obj]) -> None:
    namespace = one(rendered, "Namespace")["metadata"]["name"]
    cluster_wide = {
        "Namespace",
        "CustomResourceDefinition",
        "ClusterRole",
        "ClusterRoleBinding",
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    }
    for obj in rendered:
        if obj["kind"] not in cluster_wide:
            assert obj["metadata"]["namespace"] == namespace, obj["kind"]


# -- accepted by the API server --------------------------------------------------------------
@pytest.fixture(scope="module")
def plane(bare_plane: ControlPlane) -> ControlPlane:
    """The folder's spare plane with the operator's namespace (a dry run creates none)."""
    namespace = one(kustomize(), "Namespace")
    bare_plane.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump(namespace))
    return bare_plane


def dry_run(plane: ControlPlane, objs: list[Obj]) -> str:
    return plane.kubectl(
        "apply",
        "--server-side",
        "--dry-run=server",
        "--field-manager=cronjob-config-test",
        "-f",
        "-",
        input=yaml.safe_dump_all(objs),
    )


def test_the_api_server_accepts_everything_but_cert_managers_objects(
    plane: ControlPlane, rendered: list[Obj]
) -> None:
    ours = [o for o in rendered if not o["apiVersion"].startswith("cert-manager.io/")]
    out = dry_run(plane, ours)
    assert out.count("serverside-applied (server dry run)") == len(ours), out


def test_the_api_server_accepts_the_issuer_and_certificate(
    plane: ControlPlane, rendered: list[Obj]
) -> None:
    crds = cert_manager_crds()
    if crds is None:
        pytest.skip(
            f"cert-manager {CERT_MANAGER_VERSION}'s CRDs not found (set {CERT_MANAGER_CRDS_ENV})"
        )
    plane.install_crds([crds / f"cert-manager.io_{k}.yaml" for k in ("issuers", "certificates")])
    theirs = [o for o in rendered if o["apiVersion"].startswith("cert-manager.io/")]
    assert sorted(o["kind"] for o in theirs) == ["Certificate", "Issuer"]
    out = dry_run(plane, theirs)
    assert out.count("serverside-applied (server dry run)") == 2, out
