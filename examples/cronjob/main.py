"""The CronJob operator: flags, then a manager running the controller.

    python -m examples.cronjob --kubeconfig "$(hack/control-plane kubeconfig)"

It installs the CRD (``config/crd.yaml``) when the cluster does not serve CronJobs yet,
unless told not to; then ``kubectl apply -f examples/cronjob/config/sample.yaml`` starts
a Job every minute.
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
from reconciler import (
    Client,
    InformerOptions,
    KubeconfigError,
    Manager,
    ManagerOptions,
    NotFound,
    configure_logging,
)
from reconciler.resource import CRD, Obj

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
    log_level: str = "info"


def parse_args(argv: Sequence[str] | None = None) -> Config:
    p = argparse.ArgumentParser(prog="python -m examples.cronjob", description=__doc__)
    p.add_argument("--kubeconfig", help="default: $KUBECONFIG, ~/.kube/config, in-cluster")
    p.add_argument("--namespace", help="watch only this namespace (default: all)")
    p.add_argument("--no-install-crd", dest="install_crd", action="store_false")
    p.add_argument("--metrics-bind-address", default="0", help='e.g. ":8080"; "0" disables')
    p.add_argument("--health-probe-bind-address", default="0", help='"0" disables')
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
            ),
        )
        setup(mgr)
        log.info("starting", namespace=cfg.namespace or "<all>")
        await mgr.run()  # until SIGTERM/SIGINT


def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_args(argv)
    configure_logging("console", cfg.log_level)
    try:
        anyio.run(run, cfg)
    except (UsageError, KubeconfigError, TimeoutError) as err:
        log.error(str(err) or "the CronJob CRD did not become established")
        return 2
    return 0
