"""The manager: runs controllers and other runnables over one client, one informer cache
and one metrics registry, with leader election, health probes and graceful shutdown.

A runnable is a :class:`Controller` or any ``async def f() -> None`` that works until it
is cancelled. Runnables live in groups, as in controller-runtime's
``pkg/manager/runnable_group.go``:

- *others*: added with ``need_leader_election=False``; run on every replica;
- *leader election* (the default): run only while this replica holds the lease, or
  always when leader election is off.

Start order (controller-runtime's ``controllerManager.Start``): the health probe and
metrics servers → the webhook server, if :attr:`Manager.webhook_server` was used (before
the caches: a conversion webhook must answer before an informer of its kind can list)
→ the informer cache (on every replica, so a standby is warm) → wait
for the cache to sync → *others* → leader election → *leader election* runnables. A
runnable added before ``run()`` starts with its group; one added later starts at once if
its group runs (a controller first waits for the informers it just added), else when the
group starts; adding one during shutdown raises ``RuntimeError``.

The cache-sync wait is bounded by the controllers' own ``cache_sync_timeout``: every
controller's informers come from the one shared cache, created when the controller is
wired, so each controller waits for that cache and fails with ``CacheSyncError`` when
its own timeout passes first. Without controllers the wait is unbounded, like
controller-runtime's wait for its caches.

A runnable that returns ends on its own; one that raises stops the manager gracefully,
and ``run()`` then raises that exception (controller-runtime returns the first error a
runnable reports; later ones are logged).

Graceful shutdown (SIGTERM/SIGINT, :meth:`Manager.shutdown`, or a failed runnable), in
controller-runtime's order: *others* stop, then the *leader election* runnables —
together bounded by ``graceful_shutdown_timeout``, after which whatever still runs is
cancelled. Stopping cancels a plain runnable; a controller stops taking work and lets
its in-flight reconciles finish. Then the lease is released (the guarded work has
ended), the caches stop, queued Events get :data:`EVENT_FLUSH_TIMEOUT` to be written,
and the servers stop last. Losing the lease is not graceful: everything is cancelled at
once and ``run()`` raises ``LeadershipLost``, so the process exits and a fresh replica
starts clean (controller-runtime sets the grace period to zero there).
"""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import anyio
import structlog
from anyio.abc import TaskGroup
from prometheus_client import CollectorRegistry

from reconciler.cache import InformerCache
from reconciler.client import Client
from reconciler.controller import CacheSyncError, Controller
from reconciler.events import EventRecorder
from reconciler.informer import InformerOptions
from reconciler.leaderelection import LeaderElectionConfig, LeaderElector
from reconciler.metrics import Metrics, rest_client_host
from reconciler.probes import HealthCheck, HealthProbeServer, MetricsServer
from reconciler.webhook.server import WebhookServer, WebhookServerOptions

__all__ = [
    "DEFAULT_GRACEFUL_SHUTDOWN_TIMEOUT",
    "DEFAULT_HEALTH_PROBE_BIND_ADDRESS",
    "DEFAULT_METRICS_BIND_ADDRESS",
    "EVENT_FLUSH_TIMEOUT",
    "Manager",
    "ManagerOptions",
    "Runnable",
]

log = structlog.get_logger("reconciler.manager")

DEFAULT_METRICS_BIND_ADDRESS = ":8080"
DEFAULT_HEALTH_PROBE_BIND_ADDRESS = ":8081"
DEFAULT_GRACEFUL_SHUTDOWN_TIMEOUT = 30.0
EVENT_FLUSH_TIMEOUT = 2.0
"""Seconds the last recorded Events get to be written during shutdown."""

Runnable = Callable[[], Awaitable[None]]
"""``async def f() -> None``: works until it returns or is cancelled (its stop signal)."""


@dataclass(frozen=True)
class ManagerOptions:
    metrics_bind_address: str = DEFAULT_METRICS_BIND_ADDRESS
    health_probe_bind_address: str = DEFAULT_HEALTH_PROBE_BIND_ADDRESS
    leader_election: LeaderElectionConfig | None = None
    graceful_shutdown_timeout: float = DEFAULT_GRACEFUL_SHUTDOWN_TIMEOUT
    informer_defaults: InformerOptions = field(default_factory=InformerOptions)
    handle_signals: bool = True
    webhook: WebhookServerOptions = field(default_factory=WebhookServerOptions)
    """Options of the webhook server, which only runs if :attr:`Manager.webhook_server`
    is used."""


class CachesNotSynced(Exception):
    """The ``informers`` readiness check fails with this until every informer has listed."""


class Manager:
    """Owns the shared pieces and the lifecycle of every runnable added to it."""

    def __init__(self, client: Client, options: ManagerOptions | None = None) -> None:
        self.options = options or ManagerOptions()
        self.client = client
        self.registry = CollectorRegistry()
        self.metrics = Metrics(self.registry)
        host = rest_client_host(client.host)
        client.observer = lambda method, code, seconds: self._observe(host, method, code, seconds)
        self.cache = InformerCache(client, self.options.informer_defaults)
        self.ports: dict[str, int] = {}
        """Ports the servers listen on while running: ``"health"``, ``"metrics"``,
        ``"webhook"``."""
        self._controllers: list[Controller] = []
        self._recorders: dict[str, EventRecorder] = {}
        self._others = _RunnableGroup(self._run_one)
        self._leader_runnables = _RunnableGroup(self._run_one)
        self._health = HealthProbeServer(self.options.health_probe_bind_address)
        self._health.add_readyz_check("informers", self._informers_synced)
        self._metrics_server = MetricsServer(self.options.metrics_bind_address, self.registry)
        self._elector: LeaderElector | None = None
        self._webhook_server: WebhookServer | None = None
        self._started = False
        self._shutdown_requested = False
        self._shutdown: anyio.Event | None = None  # created in run(): needs an event loop
        self._error: Exception | None = None  # the first runnable failure
        self._servers: TaskGroup | None = None  # while running: hosts event recorders

    # -- wiring -------------------------------------------------------------------------
    def add(self, runnable: Controller | Runnable, *, need_leader_election: bool = True) -> None:
        """Run ``runnable`` with the manager: only while leading, or on every replica.

        Before :meth:`run` it starts with its group; after, at once if its group runs.
        Raises ``RuntimeError`` once shutdown has begun, ``ValueError`` for a second
        controller of the same name.
        """
        if self._shutdown_requested:
            raise RuntimeError("cannot add a runnable: the manager is shutting down")
        if isinstance(runnable, Controller):
            if any(c.name == runnable.name for c in self._controllers):
                raise ValueError(f"controller name {runnable.name!r} is already used")
            name = f"controller {runnable.name}"
        else:
            # A function's name, or the class of a callable object: for task names and logs.
            name = getattr(runnable, "__qualname__", None) or type(runnable).__qualname__
        group = self._leader_runnables if need_leader_election else self._others
        group.add(_Entry(runnable, name))
        if isinstance(runnable, Controller):
            self._controllers.append(runnable)

    @property
    def controllers(self) -> list[Controller]:
        return list(self._controllers)

    def add_healthz_check(self, name: str, check: HealthCheck) -> None:
        """A liveness check on ``/healthz`` and ``/healthz/<name>``; before :meth:`run`."""
        self._refuse_checks_once_started()
        self._health.add_healthz_check(name, check)

    def add_readyz_check(self, name: str, check: HealthCheck) -> None:
        """A readiness check on ``/readyz`` and ``/readyz/<name>``; before :meth:`run`.

        The manager adds ``informers``: ready once every informer has synced.
        """
        self._refuse_checks_once_started()
        self._health.add_readyz_check(name, check)

    def event_recorder(self, component: str) -> EventRecorder:
        rec = self._recorders.get(component)
        if rec is None:
            rec = EventRecorder(self.client, component)
            self._recorders[component] = rec
            if self._servers is not None:
                self._servers.start_soon(rec.run, name=f"event recorder {component}")
        return rec

    @property
    def webhook_server(self) -> WebhookServer:
        """The webhook server, created on first use (before :meth:`run`).

        Using it makes the manager serve webhooks on every replica (webhooks need no
        leader), with the readiness check ``webhook``; a manager that never uses it
        opens no webhook port. ``ports["webhook"]`` holds the bound port while running.
        """
        if self._webhook_server is None:
            # As the health checks: what runs is decided when the manager starts.
            if self._started:
                raise RuntimeError("the webhook server must be set up before the manager runs")
            server = WebhookServer(self.options.webhook, registry=self.registry)
            self.add_readyz_check("webhook", server.started_check)
            self._webhook_server = server
        return self._webhook_server

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
        """Run until shut down; then raise the first runnable failure, if there was one.

        Raises ``LeadershipLost`` if the lease is lost, and ``ListenError`` if a server
        cannot listen — the exception itself, not wrapped in a group.
        """
        if self._started:
            raise RuntimeError("the manager was already started")
        self._started = True
        try:
            await self._run()
        except BaseExceptionGroup as group:
            sole: BaseException = group
            while isinstance(sole, BaseExceptionGroup) and len(sole.exceptions) == 1:
                sole = sole.exceptions[0]
            if sole is group:
                raise
            raise sole from None
        if self._error is not None:
            raise self._error

    async def _run(self) -> None:
        self._shutdown = anyio.Event()
        if self._shutdown_requested:
            self._shutdown.set()
        # Nested task groups, innermost stopped first: runnables, then caches, then
        # servers — the stop order; each group outlives what depends on it.
        async with anyio.create_task_group() as servers:
            if self.options.handle_signals:
                servers.start_soon(self._watch_signals, name="signals")
            await self._start_servers(servers)
            self._servers = servers
            for component, rec in self._recorders.items():
                servers.start_soon(rec.run, name=f"event recorder {component}")
            async with anyio.create_task_group() as caches:
                caches.start_soon(self.cache.run, name="informer cache")
                async with anyio.create_task_group() as runnables:
                    runnables.start_soon(self._start_runnables, runnables, name="start")
                    await self._shutdown.wait()
                    await self._stop_runnables()
                    runnables.cancel_scope.cancel()
                caches.cancel_scope.cancel()
            # Events the last reconciles recorded are worth a moment: they tell users
            # what happened just before the restart.
            with anyio.move_on_after(EVENT_FLUSH_TIMEOUT):
                for rec in self._recorders.values():
                    await rec.flush()
            self._servers = None
            servers.cancel_scope.cancel()
        log.info("stopped")

    async def _start_servers(self, tg: TaskGroup) -> None:
        for key, server in (("health", self._health), ("metrics", self._metrics_server)):
            if server.enabled:
                port = await tg.start(server.run, name=f"{server.serves} server")
                if port is not None:  # always, for an enabled server
                    self.ports[key] = port
        if self._webhook_server is not None:
            self.ports["webhook"] = await tg.start(self._webhook_server.run, name="webhook server")

    async def _start_runnables(self, tg: TaskGroup) -> None:
        try:
            await self._wait_for_caches(self._controllers)
        except CacheSyncError as err:
            self._fail("cache sync", err)
            return
        log.info("caches synced", informers=len(self.cache.informers))
        if self._shutdown_requested:
            return
        tg.start_soon(self._others.run, name="runnables without leader election")
        tg.start_soon(self._run_leader_election, name="leader election")

    async def _run_leader_election(self) -> None:
        le = self.options.leader_election
        if le is None:
            await self._leader_runnables.run()
            return
        gauge = self.metrics.leader_election_master_status.labels(le.lease_name)
        self._elector = LeaderElector(
            self.client, le, on_change=lambda leading: gauge.set(1 if leading else 0)
        )
        # The leader's runnables are the elector's guarded work: they end before the
        # lease is released, and losing the lease cancels them (LeadershipLost).
        await self._elector.run(self._leader_runnables.run)

    async def _stop_runnables(self) -> None:
        grace = self.options.graceful_shutdown_timeout
        log.info("shutting down", grace_seconds=grace)
        with anyio.move_on_after(grace) as scope:
            await self._others.stop()
            await self._leader_runnables.stop()
        if scope.cancelled_caught:
            log.warning("graceful shutdown timed out; cancelling what still runs")

    async def _run_one(self, entry: _Entry, stop_scope: anyio.CancelScope) -> None:
        """Run one runnable; an exception out of it stops the manager."""
        runnable = entry.runnable
        try:
            if isinstance(runnable, Controller):
                # A stop while it waits cancels the wait: there is no work to finish yet.
                with stop_scope:
                    await self._wait_for_caches([runnable])
                if not stop_scope.cancel_called:
                    await runnable.run()
            else:
                with stop_scope:
                    await runnable()
        except Exception as err:
            self._fail(entry.name, err)

    def _fail(self, name: str, err: Exception) -> None:
        if self._error is None and not self._shutdown_requested:
            log.error("runnable failed; stopping the manager", runnable=name, exc_info=err)
            self._error = err
            self.shutdown()
        else:
            log.error("runnable failed during shutdown", runnable=name, exc_info=err)

    async def _wait_for_caches(self, controllers: Sequence[Controller]) -> None:
        """Until every informer has synced; the strictest controller timeout bounds it."""
        strictest = min(controllers, key=lambda c: c.options.cache_sync_timeout, default=None)
        if strictest is None:
            await self._all_informers_synced()
            return
        timeout = strictest.options.cache_sync_timeout
        with anyio.move_on_after(timeout):
            await self._all_informers_synced()
            return
        pending = ", ".join(str(i.resource) for i in self.cache.informers if not i.has_synced)
        raise CacheSyncError(
            f"controller {strictest.name}: caches not synced after {timeout}s: {pending}"
        )

    async def _all_informers_synced(self) -> None:
        # Re-read the list each time: informers may be added while we wait.
        while pending := [i for i in self.cache.informers if not i.has_synced]:
            await pending[0].wait_synced()

    async def _informers_synced(self) -> None:
        pending = [str(i.resource) for i in self.cache.informers if not i.has_synced]
        if pending:
            raise CachesNotSynced(f"informers not synced: {', '.join(pending)}")

    def _refuse_checks_once_started(self) -> None:
        # As controller-runtime: the probe handlers are built when the manager starts.
        if self._started:
            raise RuntimeError("health checks must be added before the manager runs")

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


@dataclass(eq=False)
class _Entry:
    """One runnable in a group, with the scope its graceful stop cancels."""

    runnable: Controller | Runnable
    name: str
    scope: anyio.CancelScope | None = None  # set when it starts (needs an event loop)

    def stop(self) -> None:
        if self.scope is not None:
            self.scope.cancel()
        if isinstance(self.runnable, Controller):
            self.runnable.stop()


class _RunnableGroup:
    """Runnables that start together and stop together (controller-runtime's runnableGroup).

    Invariants: before :meth:`run`, added entries wait in ``_pending``; while it runs,
    every added entry has a task in its task group and, once that task began, is in
    ``_running``; after :meth:`stop` began nothing is accepted, and an entry whose task
    begins late is stopped before its runnable starts.
    """

    def __init__(self, run_one: Callable[[_Entry, anyio.CancelScope], Awaitable[None]]) -> None:
        self._run_one = run_one
        self._pending: list[_Entry] = []
        self._running: set[_Entry] = set()
        self._tg: TaskGroup | None = None
        self._stopping = False
        self._stop_requested: anyio.Event | None = None  # both created by run()
        self._finished: anyio.Event | None = None

    def add(self, entry: _Entry) -> None:
        if self._stopping:
            raise RuntimeError("cannot add a runnable: the manager is shutting down")
        if self._tg is None:
            self._pending.append(entry)
        else:
            self._tg.start_soon(self._run_entry, entry, name=entry.name)

    async def run(self) -> None:
        """Start the pending runnables and any added later; return once stopped and
        every runnable has returned (cancel it to cancel them all)."""
        if self._stopping:
            return
        if self._stop_requested is not None:
            raise RuntimeError("a runnable group runs only once")
        self._stop_requested = anyio.Event()
        self._finished = anyio.Event()
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                for entry in self._pending:
                    tg.start_soon(self._run_entry, entry, name=entry.name)
                self._pending.clear()
                await self._stop_requested.wait()
                self._tg = None
                for entry in list(self._running):
                    entry.stop()
        finally:
            self._tg = None
            self._finished.set()

    async def stop(self) -> None:
        """Stop accepting runnables, stop the running ones and wait until they return."""
        self._stopping = True
        self._pending.clear()
        if self._stop_requested is None or self._finished is None:
            return  # never started: nothing runs, and run() will not start anything
        self._stop_requested.set()
        await self._finished.wait()

    async def _run_entry(self, entry: _Entry) -> None:
        scope = entry.scope = anyio.CancelScope()
        if self._stopping:
            entry.stop()
        self._running.add(entry)
        try:
            await self._run_one(entry, scope)
        finally:
            self._running.discard(entry)
