"""KAITO's validating admission webhook for Workspaces, as a local process registered
with the control plane: the test double built from ``hack/kaito-webhook``.

What a KAITO installation registers (read from source; hack/kaito-webhook/main.go says
which parts of the double are knative's own code):

* KAITO's Helm chart installs a ValidatingWebhookConfiguration named
  ``validation.workspace.kaito.sh`` with ``failurePolicy: Fail`` and ``sideEffects:
  None`` (charts/kaito/workspace/templates/webhooks.yaml @ kaito v0.12.0). Once running,
  knative's webhook controller rewrites its rules
  (webhook/resourcesemantics/validation/reconcile_config.go @ knative.dev/pkg
  fdbc0b5adde7, the version KAITO v0.12.0 pins): one rule per registered kind and
  version, sorted by group, version and resource; resources ``workspaces`` and
  ``workspaces/status`` (the Workspace types declare no ``SupportedSubResources``);
  operations from ``SupportedVerbs``, which both Workspace versions declare as CREATE
  and UPDATE (api/v1*/workspace_validation.go), so no DELETE; a namespace selector
  that skips namespaces labelled ``webhooks.knative.dev/exclude``; and the path
  ``/validate/workspace.kaito.sh``. :func:`webhook_configuration` builds that object,
  with a URL where KAITO's has its Service.
* The webhook decodes the new and the old object into KAITO's Go type with unknown
  fields disallowed (outside ``metadata``), so a write is denied when either side
  holds a field that type lacks, such as our ``status.status``. That decode is all the
  double reproduces: KAITO's own validation rules (immutable fields, preset checks, …)
  are not, so every object that decodes is allowed, and no test may rely on a denial
  other than the decode's.

The control plane is shared by the whole test session: :func:`registered` removes the
configuration again and waits until the API server has stopped calling the webhook.
"""

from __future__ import annotations

import base64
import select
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from e2e.harness import ROOT, WORKSPACE, eventually
from reconciler.client import Client
from reconciler.envtest._certs import TinyCA
from reconciler.envtest.webhook import VALIDATING_WEBHOOK_CONFIGURATION
from reconciler.errors import ApiError, NotFound

__all__ = [
    "LOAD_TIMEOUT",
    "PATH",
    "VALIDATING_WEBHOOK_CONFIGURATION",
    "WEBHOOK_NAME",
    "KaitoWebhook",
    "build",
    "denied_by_webhook",
    "registered",
    "webhook_configuration",
]

Obj = dict[str, Any]

WEBHOOK_NAME = "validation.workspace.kaito.sh"
"""The configuration's and its one webhook's name, as KAITO's chart and knative use it."""
PATH = "/validate/workspace.kaito.sh"
BUILD_SCRIPT = ROOT / "hack" / "kaito-webhook" / "build.sh"
# A cold build (module downloads and compilation of knative and client-go) takes
# minutes on two cores; a cached binary is a no-op.
BUILD_TIMEOUT = 900.0
START_TIMEOUT = 30.0
LOAD_TIMEOUT = 30.0
"""The API server loads webhook configurations through an informer: seconds at most."""

# The probe: a dry-run create that only the strict decode refuses. KAITO's CRD leaves the
# pod template schemaless (x-kubernetes-preserve-unknown-fields), so the API server keeps
# a field there that the pod template's Go type lacks, and the decode then refuses it.
# Dry-run, so nothing is stored and no controller sees it; in `default`, which every
# cluster has.
_PROBE_NAMESPACE = "default"
_PROBE_FIELD = "kaitoWebhookProbe"
_PROBE: Obj = {
    "apiVersion": "kaito.sh/v1beta1",
    "kind": "Workspace",
    "metadata": {"name": "kaito-webhook-probe", "namespace": _PROBE_NAMESPACE},
    "resource": {
        "instanceType": "Standard_NC24ads_A100_v4",
        "labelSelector": {"matchLabels": {"apps": "kaito-webhook-probe"}},
    },
    "inference": {"template": {_PROBE_FIELD: True}},
}


def build(assets: Path) -> Path:
    """The webhook binary in ``assets``, built first unless it is current."""
    done = subprocess.run(
        [str(BUILD_SCRIPT), str(assets)],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{BUILD_SCRIPT} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


@dataclass
class KaitoWebhook:
    """The webhook process, serving on a free loopback port with a certificate from a
    CA made for it; :attr:`url` and :attr:`ca_bundle` are what a configuration needs."""

    binary: Path
    kubeconfig: Path
    workdir: Path
    url: str = ""
    ca_bundle: bytes = b""
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def log_path(self) -> Path:
        return self.workdir / "kaito-webhook.log"

    def start(self) -> KaitoWebhook:
        ca = TinyCA("kaito-webhook-test-ca")
        serving = ca.serving("127.0.0.1")
        self.workdir.mkdir(parents=True, exist_ok=True)
        cert, key = self.workdir / "tls.crt", self.workdir / "tls.key"
        cert.write_bytes(serving.cert_pem)
        key.write_bytes(serving.key_pem)
        key.chmod(0o600)
        self.ca_bundle = ca.cert_pem
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    str(self.binary),
                    "--listen=127.0.0.1:0",
                    f"--tls-cert={cert}",
                    f"--tls-key={key}",
                    f"--kubeconfig={self.kubeconfig}",
                ],
                stdout=subprocess.PIPE,
                stderr=log,
            )
        self.url = self._served_url()
        return self

    def _served_url(self) -> str:
        """The URL from the process's one stdout line, printed once it listens."""
        assert self.proc is not None
        assert self.proc.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT
        while (left := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([self.proc.stdout], [], [], left)
            if readable:
                line = self.proc.stdout.readline().decode().strip()
                prefix = "serving "
                if line.startswith(prefix):
                    return line[len(prefix) :]
                break
        self.stop()
        raise RuntimeError(f"kaito-webhook did not start:\n{self.log()[-4000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 15.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return code


def webhook_configuration(url: str, ca_bundle: bytes) -> Obj:
    """The ValidatingWebhookConfiguration as knative leaves it for KAITO's Workspaces,
    pointing at ``url`` (the webhook's full URL, path included)."""
    rules = [
        {
            "apiGroups": ["kaito.sh"],
            "apiVersions": [version],
            "resources": ["workspaces", "workspaces/status"],
            "operations": ["CREATE", "UPDATE"],
        }
        for version in ("v1alpha1", "v1beta1")
    ]
    return {
        "apiVersion": VALIDATING_WEBHOOK_CONFIGURATION.api_version,
        "kind": VALIDATING_WEBHOOK_CONFIGURATION.kind,
        "metadata": {"name": WEBHOOK_NAME},
        "webhooks": [
            {
                "name": WEBHOOK_NAME,
                "admissionReviewVersions": ["v1"],
                "clientConfig": {"url": url, "caBundle": base64.b64encode(ca_bundle).decode()},
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "rules": rules,
                "namespaceSelector": {
                    "matchExpressions": [
                        {"key": "webhooks.knative.dev/exclude", "operator": "DoesNotExist"}
                    ]
                },
            }
        ],
    }


def denied_by_webhook(err: BaseException) -> bool:
    """Whether ``err`` is the API server relaying a denial by this webhook."""
    return isinstance(err, ApiError) and (
        f'admission webhook "{WEBHOOK_NAME}" denied the request' in err.message
    )


async def _probe_denied(k8s: Client) -> bool:
    try:
        await k8s.raw("POST", WORKSPACE.path(_PROBE_NAMESPACE) + "?dryRun=All", _PROBE)
    except ApiError as err:
        if denied_by_webhook(err) and f'unknown field "{_PROBE_FIELD}"' in err.message:
            return True
        raise
    return False


@asynccontextmanager
async def registered(
    k8s: Client, webhook: KaitoWebhook, timeout: float = LOAD_TIMEOUT
) -> AsyncIterator[Obj]:
    """The webhook registered and in effect (a probe its strict decode must deny is
    denied); afterwards removed, and out of effect (the probe is allowed again). Yields
    the configuration as created."""
    created = await k8s.create(
        VALIDATING_WEBHOOK_CONFIGURATION, webhook_configuration(webhook.url, webhook.ca_bundle)
    )
    try:
        await eventually(
            lambda: _probe_denied(k8s), timeout, f"{WEBHOOK_NAME} to take effect", poll=0.2
        )
        yield created
    finally:
        with suppress(NotFound):
            await k8s.delete(VALIDATING_WEBHOOK_CONFIGURATION, WEBHOOK_NAME)

        async def unloaded() -> bool:
            return not await _probe_denied(k8s)

        await eventually(unloaded, timeout, f"{WEBHOOK_NAME} to stop acting", poll=0.2)
