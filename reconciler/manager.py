"""The manager: hosts controllers over one client, one informer cache and one registry.

Start order: probe and metrics servers → caches (not leader-gated, so a standby
replica is warm) → wait for sync (then /readyz is ok) → leader election, if
enabled → controllers. Graceful shutdown (SIGTERM/SIGINT or ``shutdown()``):
controllers stop taking work, in-flight reconciles get ``graceful_shutdown_timeout``
to finish, the lease is released, everything else is cancelled, ``run()`` returns.
Losing the lease is not graceful: ``run()`` raises ``LeadershipLost`` at once so
the process exits and a fresh replica starts clean.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field

import anyio
import structlog
from anyio.abc import TaskGroup
from prometheus_client import CollectorRegistry

from reconciler.builder import Builder
from reconciler.cache import InformerCache
from reconciler.client import Client
from reconciler.controller import Controller
from reconciler.events import EventRecorder
from reconciler.informer import InformerOptions
from reconciler.leaderelection import LeaderElectionConfig, LeaderElector
from reconciler.metrics import Metrics
from reconciler.probes import ProbeServer

log = structlog.get_logger("reconciler.manager")

DEFAULT_METRICS_BIND_ADDRESS = ":8080"
DEFAULT_HEALTH_PROBE_BIND_ADDRESS = ":8081"
DEFAULT_GRACEFUL_SHUTDOWN_TIMEOUT = 30.0
EVENT_FLUSH_TIMEOUT = 2.0


@dataclass(frozen=True)
class ManagerOptions:
    metrics_bind_address: str = DEFAULT_METRICS_BIND_ADDRESS
    health_probe_bind_address: str = DEFAULT_HEALTH_PROBE_BIND_ADDRESS
    leader_election: LeaderElectionConfig | None = None
    graceful_shutdown_timeout: float = DEFAULT_GRACEFUL_SHUTDOWN_TIMEOUT
    informer_defaults: InformerOptions = field(default_factory=InformerOptions)
    handle_signals: bool = True


class Manager:
    """Owns the shared pieces and the lifecycle of every controller added to it."""

    def __init__(self, client: Client, options: ManagerOptions | None = None) -> None:
        self.options = options or ManagerOptions()
        self.client = client
        self.registry = CollectorRegistry()
        self.metrics = Metrics(self.registry)
        host = client.host
        client.observer = lambda method, code, seconds: self._observe(host, method, code, seconds)
        self.cache = InformerCache(client, self.options.informer_defaults)
        self._controllers: list[Controller] = []
        self._recorders: dict[str, EventRecorder] = {}
        # Created in run(): anyio events need a running event loop.
        self._shutdown: anyio.Event | None = None
        self._shutdown_requested = False
        self._controllers_done: anyio.Event | None = None
        self._elector: LeaderElector | None = None
        self._controllers_started = False
        self.ports: dict[str, int] = {}

    # -- wiring -------------------------------------------------------------------------
    def builder(self) -> Builder:
        return Builder(self)

    def add(self, controller: Controller) -> None:
        if any(c.name == controller.name for c in self._controllers):
            raise ValueError(f"controller name {controller.name!r} is already used")
        self._controllers.append(controller)

    @property
    def controllers(self) -> list[Controller]:
        return list(self._controllers)

    def event_recorder(self, component: str) -> EventRecorder:
        rec = self._recorders.get(component)
        if rec is None:
            rec = EventRecorder(self.client, component)
            self._recorders[component] = rec
        return rec

    @property
    def is_leader(self) -> bool:
        if self.options.leader_election is None:
            return True
        return self._elector is not None and self._elector.is_leader

    def shutdown(self) -> None:
        """Begin a graceful shutdown (what SIGTERM does)."""
        self._shutdown_requested = True
        if self._shutdown is not None:
            self._shutdown.set()

    # -- lifecycle ----------------------------------------------------------------------
    async def run(self) -> None:
        """Run until shut down; raises ``LeadershipLost`` (unwrapped) if the lease is lost."""
        try:
            await self._run()
        except BaseExceptionGroup as group:
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise

    async def _run(self) -> None:
        self._shutdown = anyio.Event()
        self._controllers_done = anyio.Event()
        if self._shutdown_requested:
            self._shutdown.set()
        async with anyio.create_task_group() as tg:
            if self.options.handle_signals:
                tg.start_soon(self._watch_signals)
            await self._start_servers(tg)
            tg.start_soon(self.cache.run, name="informer cache")
            for rec in self._recorders.values():
                tg.start_soon(rec.run, name="event recorder")
            tg.start_soon(self._run_leader_part)
            await self._shutdown.wait()
            log.info("shutting down", grace_seconds=self.options.graceful_shutdown_timeout)
            for c in self._controllers:
                c.stop()
            with anyio.move_on_after(self.options.graceful_shutdown_timeout) as scope:
                # A standby (or a manager still syncing) has no reconciles in flight.
                if self._controllers_started:
                    await self._controllers_done.wait()
            if scope.cancelled_caught:
                log.warning("graceful shutdown timed out; cancelling in-flight reconciles")
            # Events the last reconciles recorded are worth a moment: they tell users
            # what happened just before the restart.
            with anyio.move_on_after(EVENT_FLUSH_TIMEOUT):
                for rec in self._recorders.values():
                    await rec.flush()
            tg.cancel_scope.cancel()
        log.info("stopped")

    async def _run_leader_part(self) -> None:
        try:
            await self.cache.wait_for_sync()
            log.info("caches synced", informers=len(self.cache.informers))
            le = self.options.leader_election
            if le is None:
                await self._run_controllers()
            else:
                self._elector = LeaderElector(
                    self.client,
                    le,
                    on_change=lambda leading: self.metrics.leader_election_master_status.labels(
                        le.lease_name
                    ).set(1 if leading else 0),
                )
                await self._elector.run(self._run_controllers)
        finally:
            if self._controllers_done is not None:
                self._controllers_done.set()

    async def _run_controllers(self) -> None:
        self._controllers_started = True
        async with anyio.create_task_group() as tg:
            for c in self._controllers:
                tg.start_soon(c.run, name=f"controller {c.name}")

    async def _start_servers(self, tg: TaskGroup) -> None:
        o = self.options
        if o.health_probe_bind_address not in ("", "0"):
            probes = ProbeServer(o.health_probe_bind_address, probes=True)
            probes.add_healthz_check("ping", lambda: None)
            probes.add_readyz_check("informers", self._caches_synced)
            self.ports["health"] = await tg.start(probes.run)
        if o.metrics_bind_address not in ("", "0"):
            metrics = ProbeServer(o.metrics_bind_address, registry=self.registry, probes=False)
            self.ports["metrics"] = await tg.start(metrics.run)

    def _caches_synced(self) -> str | None:
        return None if self.cache.synced else "informer caches not synced"

    async def _watch_signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                log.info("signal received", signal=signal.Signals(signum).name)
                self.shutdown()
                return

    def _observe(self, host: str, method: str, code: int, seconds: float) -> None:
        m = self.metrics
        m.rest_client_requests_total.labels(str(code) if code else "<error>", method, host).inc()
        m.rest_client_request_duration_seconds.labels(method, host).observe(seconds)
