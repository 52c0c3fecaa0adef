"""The ``workspace-operator`` command: flags → options → a manager running the status
controller and the Workspace CRD keeper (``crd_keeper.py``).

Past one process (README, "Sharding"): deployments with disjoint ``--label-selector``s,
each with its own ``--leader-election-id``; or ``--total-shards`` deployments, one per
``--shard``, which each cache every workspace and handle the share
``reconciler.sharding`` assigns them, under a Lease of their own.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import structlog

from controllers.workspace.crd import inspect
from controllers.workspace.crd_keeper import (
    CrdKeeperOptions,
    WorkspaceCrdReconciler,
    informer_options,
)
from controllers.workspace.model import project
from controllers.workspace.reconciler import (
    DEFAULT_PENDING_WARNING_AFTER,
    WORKSPACE,
    WorkspaceStatusOptions,
    WorkspaceStatusReconciler,
)
from reconciler import (
    ApiError,
    Builder,
    CacheSyncError,
    Client,
    ControllerOptions,
    Funcs,
    InformerOptions,
    KubeconfigError,
    LeaderElectionConfig,
    LeadershipLost,
    ListenError,
    Manager,
    ManagerOptions,
    TransportError,
    configure_logging,
    resource_version_changed,
)
from reconciler.informer import WATCH_IDLE_TIMEOUT
from reconciler.ownwrites import OwnWrites
from reconciler.resource import CRD
from reconciler.sharding import Shard, shard_mapper, shard_predicate

CONTROLLER_NAME = "workspace-status"
CRD_CONTROLLER_NAME = "workspace-crd"
LEASE_NAME = "workspace-status-controller.kaito.sh"
USER_AGENT = "workspace-operator"
IN_CLUSTER_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")

log = structlog.get_logger("controllers.operator")


class UsageError(Exception):
    """The command line or the cluster is not usable; exit non-zero with a message."""


@dataclass(frozen=True)
class OperatorConfig:
    kubeconfig: str | None
    namespace: str | None
    label_selector: str | None
    leader_elect: bool
    leader_election_namespace: str | None
    metrics_bind_address: str
    health_probe_bind_address: str
    max_concurrent_reconciles: int
    pending_warning_after: float
    graceful_shutdown_timeout: float
    watch_idle_timeout: float
    log_format: str
    log_level: str
    manage_crd: bool = True
    status_field: bool = True
    leader_election_id: str = LEASE_NAME
    shard: Shard = field(default_factory=Shard)
    event_loop: str = "auto"


def _bool(text: str) -> bool:
    value = {"true": True, "false": False}.get(text.lower())
    if value is None:
        raise argparse.ArgumentTypeError(f"not a boolean: {text!r} (true or false)")
    return value


def _seconds(text: str) -> float:
    """'90', '90s', '15m', '1h' → seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    try:
        value = float(text[:-1]) * units[text[-1]] if text and text[-1] in units else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 90s, 15m, 1h)") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"duration must be positive: {text!r}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def parse_args(argv: Sequence[str] | None = None) -> OperatorConfig:
    p = argparse.ArgumentParser(
        prog="workspace-operator",
        description="Keeps status.status of KAITO Workspaces in line with their conditions.",
    )
    p.add_argument(
        "--kubeconfig",
        default=None,
        help="kubeconfig path (default: $KUBECONFIG, ~/.kube/config, in-cluster)",
    )
    p.add_argument("--namespace", default=None, help="watch only this namespace (default: all)")
    p.add_argument(
        "--label-selector",
        default=None,
        help="only Workspaces matching this selector (shard across deployments)",
    )
    p.add_argument(
        "--leader-elect",
        action="store_true",
        help="run as one of several replicas; only the lease holder writes",
    )
    p.add_argument(
        "--leader-election-namespace",
        default=None,
        help="namespace of the Lease (default: the pod's namespace)",
    )
    p.add_argument(
        "--leader-election-id",
        default=LEASE_NAME,
        help="name of the Lease; each deployment that handles a different set of "
        "Workspaces (--label-selector, --namespace) needs its own. With --total-shards, "
        "'-shard-<shard>-of-<total>' is appended",
    )
    p.add_argument(
        "--total-shards",
        type=_positive_int,
        default=1,
        help="hash sharding: the number of deployments that share the Workspaces; each "
        "caches all of them and handles those whose namespace/name hashes to its --shard. "
        "1 turns it off",
    )
    p.add_argument(
        "--shard",
        type=int,
        default=0,
        help="hash sharding: this deployment's shard, 0 to --total-shards - 1",
    )
    p.add_argument("--metrics-bind-address", default=":8080", help='"0" disables')
    p.add_argument("--health-probe-bind-address", default=":8081", help='"0" disables')
    p.add_argument("--max-concurrent-reconciles", type=_positive_int, default=1)
    p.add_argument(
        "--pending-warning-after",
        type=_seconds,
        default=DEFAULT_PENDING_WARNING_AFTER,
        help="warn (StuckPending Event) after this long in Pending; e.g. 15m",
    )
    p.add_argument("--graceful-shutdown-timeout", type=_seconds, default=30.0)
    p.add_argument(
        "--watch-idle-timeout",
        type=_seconds,
        default=WATCH_IDLE_TIMEOUT,
        help="reopen a watch that delivered nothing (not even a bookmark) this long",
    )
    p.add_argument(
        "--manage-crd",
        type=_bool,
        default=True,
        metavar="true|false",
        help="re-add status.status and the STATUS column to the Workspace CRD when they "
        "are missing (KAITO's helm upgrade re-applies KAITO's CRD without them); needs "
        "patch on customresourcedefinitions/workspaces.kaito.sh. false: only log the "
        "command that re-adds them (hack/add-status-field) and export "
        "kaito_workspace_status_crd_status_field",
    )
    p.add_argument(
        "--status-field",
        type=_bool,
        default=True,
        metavar="true|false",
        help="write the state to status.status as well as to the record condition "
        "workspace-status.kaito.sh/State (the STATUS column reads the record). false "
        "beside KAITO's validating webhook, which refuses the field, and then the "
        "Workspace CRD needs only the STATUS column",
    )
    p.add_argument(
        "--event-loop",
        choices=["auto", "asyncio", "uvloop"],
        default="auto",
        help="auto: uvloop when it is installed (the [uvloop] extra; the image has it), "
        "else asyncio's own",
    )
    p.add_argument("--log-format", choices=["json", "console"], default="json")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info")
    a = p.parse_args(argv)
    try:
        shard = Shard(a.shard, a.total_shards)
    except ValueError as err:
        p.error(f"--shard/--total-shards: {err}")
    return OperatorConfig(
        kubeconfig=a.kubeconfig,
        namespace=a.namespace,
        label_selector=a.label_selector,
        leader_elect=a.leader_elect,
        leader_election_namespace=a.leader_election_namespace,
        metrics_bind_address=a.metrics_bind_address,
        health_probe_bind_address=a.health_probe_bind_address,
        max_concurrent_reconciles=a.max_concurrent_reconciles,
        pending_warning_after=a.pending_warning_after,
        graceful_shutdown_timeout=a.graceful_shutdown_timeout,
        watch_idle_timeout=a.watch_idle_timeout,
        log_format=a.log_format,
        log_level=a.log_level,
        event_loop=a.event_loop,
        manage_crd=a.manage_crd,
        status_field=a.status_field,
        leader_election_id=a.leader_election_id,
        shard=shard,
    )


def user_agent(cfg: OperatorConfig) -> str:
    """``workspace-operator``, with the share of Workspaces it handles when it handles a
    part: the API server's audit log then says which deployment sent each request."""
    scope = []
    if cfg.namespace:
        scope.append(f"namespace={cfg.namespace}")
    if cfg.label_selector:
        scope.append(f"label-selector={cfg.label_selector}")
    if cfg.shard.sharded:
        scope.append(f"shard={cfg.shard.index}/{cfg.shard.total}")
    return f"{USER_AGENT} ({'; '.join(scope)})" if scope else USER_AGENT


def lease_name(cfg: OperatorConfig) -> str:
    return cfg.shard.lease_name(cfg.leader_election_id)


def _lease_namespace(cfg: OperatorConfig) -> str:
    if cfg.leader_election_namespace:
        return cfg.leader_election_namespace
    try:
        return IN_CLUSTER_NAMESPACE_FILE.read_text().strip()
    except OSError:
        raise UsageError(
            "--leader-elect outside a cluster needs --leader-election-namespace"
        ) from None


async def _check_crd(client: Client) -> None:
    """Fail fast, with a clear message, when the Workspace CRD is not served."""
    try:
        doc = await client.raw("GET", f"/apis/{WORKSPACE.group}/{WORKSPACE.version}")
    except ApiError as err:
        raise UsageError(
            f"the API server does not serve {WORKSPACE.api_version} ({err.status}): "
            "install the Workspace CRD (kubectl apply -k config/crd)"
        ) from err
    if not any(r.get("name") == WORKSPACE.plural for r in doc.get("resources", [])):
        raise UsageError(f"{WORKSPACE.api_version} does not serve {WORKSPACE.plural}")


def _unreachable(host: str, err: TransportError) -> str:
    """One line on why the first request failed; a TLS trust failure is said as such."""
    # aiohttp's certificate error is itself an ssl.CertificateError; the innermost one
    # in the chain is the ssl module's, which carries the verification message.
    refused: ssl.SSLCertVerificationError | None = None
    cause = err.__cause__
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            refused = cause
        cause = cause.__cause__
    if refused is None:
        return f"cannot reach the API server at {host}: {err}"
    why = getattr(refused, "verify_message", None) or str(refused)
    return (
        f"the API server at {host} presented a certificate that the kubeconfig's "
        f"certificate authority does not trust (certificate verify failed: {why}): "
        "check certificate-authority(-data) for this cluster"
    )


async def run(cfg: OperatorConfig) -> None:
    client = await Client.from_config(cfg.kubeconfig, user_agent=user_agent(cfg))
    async with client:
        try:
            await _check_crd(client)
        except TransportError as err:
            raise UsageError(_unreachable(client.host, err)) from err
        le = None
        if cfg.leader_elect:
            le = LeaderElectionConfig(lease_name=lease_name(cfg), namespace=_lease_namespace(cfg))
            if cfg.label_selector and cfg.leader_election_id == LEASE_NAME:
                # Not an error: one deployment may well handle a labelled subset alone.
                log.warning(
                    "--label-selector with the default --leader-election-id: a second "
                    "deployment with another selector would wait on this one's Lease and "
                    "handle nothing; give each deployment its own --leader-election-id",
                    lease=le.lease_name,
                )
        mgr = Manager(
            client,
            ManagerOptions(
                metrics_bind_address=cfg.metrics_bind_address,
                health_probe_bind_address=cfg.health_probe_bind_address,
                leader_election=le,
                graceful_shutdown_timeout=cfg.graceful_shutdown_timeout,
            ),
        )
        # Keep only what the state machine reads: a few KiB per cached workspace.
        mgr.cache.configure(
            WORKSPACE,
            InformerOptions(
                namespace=cfg.namespace,
                label_selector=cfg.label_selector,
                transform=project,
                watch_idle_timeout=cfg.watch_idle_timeout,
            ),
        )
        # Before any controller asks for the CRD informer: only our CRD, projected.
        mgr.cache.configure(CRD, informer_options(cfg.watch_idle_timeout))
        own_writes = OwnWrites()
        reconciler = WorkspaceStatusReconciler(
            client,
            mgr.cache,
            mgr.event_recorder("workspace-status-controller"),
            mgr.registry,
            WorkspaceStatusOptions(
                pending_warning_after=cfg.pending_warning_after,
                write_status_field=cfg.status_field,
                shard=cfg.shard,
            ),
            own_writes=own_writes,
        )
        workspaces = (
            Builder(mgr)
            # A hash shard caches every workspace; only its share reaches the queue. The
            # echo of our own status write is not reconciled again (last: what it holds
            # back and later releases has passed the others).
            .for_(
                WORKSPACE,
                resource_version_changed(),
                shard_predicate(cfg.shard),
                own_writes,
            )
            # The CRD got status.status back (after KAITO's CRD was re-applied): write
            # the remembered state of every workspace of this shard again.
            .watches(
                CRD,
                shard_mapper(cfg.shard, reconciler.after_crd_repair),
                Funcs(
                    on_create=lambda _: False,
                    on_update=lambda old, new: (
                        not inspect(old, with_field=cfg.status_field).complete
                        and inspect(new, with_field=cfg.status_field).complete
                    ),
                    on_delete=lambda _: False,
                ),
            )
            .named(CONTROLLER_NAME)
            .with_options(
                ControllerOptions(max_concurrent_reconciles=cfg.max_concurrent_reconciles)
            )
            .complete(reconciler)
        )
        own_writes.requeue_with(workspaces.queue.add)
        (
            Builder(mgr)
            .for_(CRD, resource_version_changed())
            .named(CRD_CONTROLLER_NAME)
            .complete(
                WorkspaceCrdReconciler(
                    client,
                    mgr.cache,
                    mgr.registry,
                    CrdKeeperOptions(manage=cfg.manage_crd, add_field=cfg.status_field),
                )
            )
        )
        log.info(
            "starting",
            namespace=cfg.namespace or "<all>",
            label_selector=cfg.label_selector,
            shard=str(cfg.shard) if cfg.shard.sharded else None,
            leader_elect=cfg.leader_elect,
            lease=le.lease_name if le else None,
            manage_crd=cfg.manage_crd,
            status_field=cfg.status_field,
            event_loop=type(asyncio.get_running_loop()).__module__.partition(".")[0],
            pid=os.getpid(),
        )
        await mgr.run()


def _root(exc: BaseException) -> BaseException:
    """The single cause inside (nested) task-group exception groups, if there is one."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _loop_options(choice: str) -> dict[str, object]:
    """anyio's asyncio backend options for ``--event-loop``. uvloop (libuv) runs the
    same asyncio code with a cheaper loop, sockets and TLS reads; it stays optional."""
    if choice == "asyncio":
        return {}
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise UsageError("--event-loop=uvloop: uvloop is not installed") from None
        return {}
    return {"loop_factory": uvloop.new_event_loop}


def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_args(argv)
    configure_logging(cfg.log_format, cfg.log_level)  # type: ignore[arg-type]
    try:
        anyio.run(run, cfg, backend="asyncio", backend_options=_loop_options(cfg.event_loop))
    except KeyboardInterrupt:
        return 130
    except BaseException as group:
        err = _root(group)
        if isinstance(err, UsageError | KubeconfigError):
            log.error(str(err))
            return 2
        if isinstance(err, ListenError):
            flag = (
                "--metrics-bind-address"
                if err.serves == "metrics"
                else "--health-probe-bind-address"
            )
            log.error(f"{err}; is another operator running here? Choose another port with {flag}")
            return 2
        if isinstance(err, LeadershipLost):
            log.error(
                "leader election lost; exiting so a fresh replica can take over", error=str(err)
            )
            return 1
        if isinstance(err, CacheSyncError):
            log.error("caches did not sync; is the API server reachable?", error=str(err))
            return 1
        if isinstance(err, KeyboardInterrupt):
            return 130
        if isinstance(err, SystemExit):
            raise
        log.exception("operator failed", error=f"{type(err).__name__}: {err}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
