"""The CronJob operator: flags, then a manager running the controller and its webhooks.

    python -m examples.cronjob --kubeconfig "$(hack/control-plane kubeconfig)" --no-enable-webhooks

It installs the CRD (``config/crd.yaml``) when the cluster does not serve CronJobs yet,
unless told not to; then ``kubectl apply -f examples/cronjob/config/sample.yaml`` starts
a Job every minute.

Webhooks (defaulting, validation, conversion to ``v2``) are served on ``--webhook-port``
with the certificate in ``--webhook-cert-dir``, unless ``--no-enable-webhooks`` (the
book's ``ENABLE_WEBHOOKS=false``): the API server must be able to call them, which a
cluster does through ``config/`` (a Service and a cert-manager certificate) and a local
run usually cannot.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio
import structlog
import yaml

from examples.cronjob.api import CRONJOB
from examples.cronjob.controller import setup
from examples.cronjob.webhooks import setup_webhooks
from reconciler import (
    Client,
    InformerOptions,
    KubeconfigError,
    ListenError,
    Manager,
    ManagerOptions,
    NotFound,
    configure_logging,
)
from reconciler.resource import CRD, Obj
from reconciler.webhook import (
    DEFAULT_CERT_DIR,
    DEFAULT_PORT,
    CertificateError,
    WebhookServerOptions,
)

CRD_FILE = Path(__file__).parent / "config" / "crd.yaml"
CRD_NAME = f"{CRONJOB.plural}.{CRONJOB.group}"
CRD_ESTABLISH_TIMEOUT = 30.0

log = structlog.get_logger("examples.cronjob")


class UsageError(Exception):
    """The command line or the cluster cannot work; exit 2 with this message."""


@dataclass(frozen=True)
class Config:
    kubeconfig: str | None = None
    namespace: str | None = None
    install_crd: bool = True
    metrics_bind_address: str = "0"
    health_probe_bind_address: str = "0"
    enable_webhooks: bool = True
    webhook_port: int = DEFAULT_PORT
    webhook_cert_dir: Path = DEFAULT_CERT_DIR
    log_level: str = "info"


def parse_args(argv: Sequence[str] | None = None) -> Config:
    p = argparse.ArgumentParser(prog="python -m examples.cronjob", description=__doc__)
    p.add_argument("--kubeconfig", help="default: $KUBECONFIG, ~/.kube/config, in-cluster")
    p.add_argument("--namespace", help="watch only this namespace (default: all)")
    p.add_argument("--no-install-crd", dest="install_crd", action="store_false")
    p.add_argument("--metrics-bind-address", default="0", help='e.g. ":8080"; "0" disables')
    p.add_argument("--health-probe-bind-address", default="0", help='"0" disables')
    p.add_argument(
        "--enable-webhooks",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="serve the defaulting, validating and conversion webhooks (default: on)",
    )
    p.add_argument("--webhook-port", type=int, default=DEFAULT_PORT)
    p.add_argument(
        "--webhook-cert-dir",
        type=Path,
        default=DEFAULT_CERT_DIR,
        help="holds tls.crt and tls.key (default: %(default)s)",
    )
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info")
    return Config(**vars(p.parse_args(argv)))


async def ensure_crd(client: Client, *, install: bool) -> None:
    """Return once the cluster serves CronJobs; create the CRD first if it is missing."""
    try:
        crd = await client.get(CRD, CRD_NAME)
    except NotFound:
        if not install:
            raise UsageError(f"no CronJob CRD: kubectl apply -f {CRD_FILE}") from None
        crd = await client.create(CRD, yaml.safe_load(CRD_FILE.read_text()))
        log.info("installed the CronJob CRD", crd=CRD_NAME)
    if _established(crd):
        return
    rv = crd["metadata"]["resourceVersion"]
    with anyio.fail_after(CRD_ESTABLISH_TIMEOUT):
        watch = client.watch(CRD, field_selector=f"metadata.name={CRD_NAME}", resource_version=rv)
        async with watch as events:
            async for event in events:
                if _established(event.object):
                    return


def _established(crd: Obj) -> bool:
    conditions = (crd.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)


async def run(cfg: Config) -> None:
    async with await Client.from_config(cfg.kubeconfig, user_agent="cronjob-example") as client:
        await ensure_crd(client, install=cfg.install_crd)
        mgr = Manager(
            client,
            ManagerOptions(
                metrics_bind_address=cfg.metrics_bind_address,
                health_probe_bind_address=cfg.health_probe_bind_address,
                informer_defaults=InformerOptions(namespace=cfg.namespace),
                webhook=WebhookServerOptions(port=cfg.webhook_port, cert_dir=cfg.webhook_cert_dir),
            ),
        )
        setup(mgr)
        if cfg.enable_webhooks:
            setup_webhooks(mgr)
        log.info("starting", namespace=cfg.namespace or "<all>", webhooks=cfg.enable_webhooks)
        await mgr.run()  # until SIGTERM/SIGINT


def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_args(argv)
    configure_logging("console", cfg.log_level)
    try:
        anyio.run(run, cfg)
    except (UsageError, KubeconfigError, TimeoutError, ListenError) as err:
        log.error(str(err) or "the CronJob CRD did not become established")
        return 2
    except CertificateError as err:
        log.error(f"no webhook certificate: {err} (or run with --no-enable-webhooks)")
        return 2
    return 0
