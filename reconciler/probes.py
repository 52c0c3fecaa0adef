"""The manager's two HTTP servers: health probes (``/healthz``, ``/readyz``) and metrics.

:class:`HealthProbeServer` answers the kubelet as controller-runtime's ``pkg/healthz``
handler does: 200 ``ok`` when every check passes; otherwise 500 with one line per check,
sorted by name (``[+]name ok``, ``[+]name excluded: ok``, ``[-]name failed: reason
withheld`` — the endpoint is unauthenticated, so reasons stay in the log) and a summary
line, which controller-runtime words ``healthz check passed``/``failed`` on both
endpoints. ``?verbose`` lists the checks on success too; ``?exclude=name`` (repeatable)
skips a check, and unknown names are reported in a ``warn:`` line. ``/healthz/<name>`` and
``/readyz/<name>`` run one check and do give its reason. With no checks registered, an
endpoint reports one ``ping`` check that always passes.

:class:`MetricsServer` serves one Prometheus registry on ``/metrics``.

Bind addresses use controller-runtime's syntax: ``":8080"`` listens on all interfaces,
``"127.0.0.1:0"`` on an ephemeral port (reported by ``run()``), and ``"0"`` or ``""``
disable the server. Each server logs ``serving`` with the port it bound and the paths it
serves (tests read the ports back from that line: ``reconciler.envtest.oplog``).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Awaitable, Callable
from typing import Literal

import anyio
import structlog
from aiohttp import web
from anyio.abc import TaskStatus
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

__all__ = [
    "CHECK_TIMEOUT",
    "HealthCheck",
    "HealthProbeServer",
    "ListenError",
    "MetricsServer",
    "listen_on_all_interfaces",
    "parse_bind_address",
]

HealthCheck = Callable[[], Awaitable[None]]
"""An ``async def check() -> None`` that returns when healthy and raises when not."""

log = structlog.get_logger("reconciler.probes")

CHECK_TIMEOUT = 5.0
"""A check still running after this many seconds fails (kubelet gives up sooner)."""
# In-flight requests get this long to finish when a server stops.
_SHUTDOWN_TIMEOUT = 5.0
_TEXT_HEADERS = {"Content-Type": "text/plain; charset=utf-8", "X-Content-Type-Options": "nosniff"}

_Kind = Literal["healthz", "readyz"]


def parse_bind_address(address: str) -> tuple[str | None, int] | None:
    """``"host:port"`` → ``(host or None for all interfaces, port)``; ``"0"``/``""`` → None."""
    if address in ("", "0"):
        return None
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"bind address must look like 'host:port' or ':port', got {address!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]  # bracketed IPv6 literal, e.g. "[::1]:8080"
    return (host or None, int(port_text))


class ListenError(Exception):
    """A server could not listen on its bind address (the port is taken, say)."""

    def __init__(self, bind_address: str, serves: str, cause: OSError) -> None:
        self.bind_address = bind_address
        self.serves = serves
        # asyncio words its bind errors at length; the errno says it plainly.
        reason = os.strerror(cause.errno) if cause.errno else str(cause)
        super().__init__(f"cannot listen on {bind_address} for {serves}: {reason}")


class _Server:
    """Listening, serving and stopping, shared by the two servers; subclasses add routes."""

    serves: str
    """What the server is for, in words (it names the server in a :class:`ListenError`)."""

    def __init__(self, bind_address: str) -> None:
        self._bind_address = bind_address
        self._address = parse_bind_address(bind_address)
        self._port: int | None = None
        self._app = web.Application()

    @property
    def enabled(self) -> bool:
        return self._address is not None

    @property
    def port(self) -> int | None:
        """The port actually listened on while running (useful with port 0), else None."""
        return self._port

    async def run(self, *, task_status: TaskStatus[int | None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Listen, report the bound port through ``task_status``, serve until cancelled.

        A disabled server reports ``None`` and returns at once.
        """
        if self._address is None:
            task_status.started(None)
            return
        host, port = self._address
        # No access log: the kubelet probes every few seconds.
        runner = web.AppRunner(self._app, access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT)
        await runner.setup()
        try:
            site: web.BaseSite
            try:
                if host is None:
                    site = web.SockSite(runner, listen_on_all_interfaces(port))
                else:
                    site = web.TCPSite(runner, host, port)
                await site.start()
            except OSError as err:
                raise ListenError(self._bind_address, self.serves, err) from err
            self._port = int(runner.addresses[0][1])
            log.info(
                "serving",
                address=self._bind_address,
                port=self._port,
                paths=sorted({r.canonical for r in self._app.router.resources()}),
            )
            task_status.started(self._port)
            await anyio.sleep_forever()
        finally:
            self._port = None
            with anyio.move_on_after(_SHUTDOWN_TIMEOUT + 1, shield=True):
                await runner.cleanup()


class HealthProbeServer(_Server):
    """Serves liveness (``/healthz``) and readiness (``/readyz``) checks."""

    serves = "health probes"

    def __init__(self, bind_address: str) -> None:
        super().__init__(bind_address)
        self._checks: dict[_Kind, dict[str, HealthCheck]] = {"healthz": {}, "readyz": {}}
        for kind in ("healthz", "readyz"):
            self._mount(kind)

    def add_healthz_check(self, name: str, check: HealthCheck) -> None:
        """Liveness: failing means the process should be restarted."""
        self._add("healthz", name, check)

    def add_readyz_check(self, name: str, check: HealthCheck) -> None:
        """Readiness: failing means the process should get no traffic yet."""
        self._add("readyz", name, check)

    def _add(self, kind: _Kind, name: str, check: HealthCheck) -> None:
        if not name or "/" in name:
            raise ValueError(f"check name must be non-empty and contain no '/', got {name!r}")
        # controller-runtime silently replaces a check of the same name; two components
        # picking one name is a wiring bug worth hearing about.
        if name in self._checks[kind]:
            raise ValueError(f"{kind} check {name!r} already exists")
        self._checks[kind][name] = check

    def _mount(self, kind: _Kind) -> None:
        async def aggregated(request: web.Request) -> web.Response:
            return await self._aggregated(kind, request)

        async def single(request: web.Request) -> web.Response:
            return await self._single(kind, request.match_info["name"])

        router = self._app.router
        router.add_get(f"/{kind}", aggregated)
        router.add_get(f"/{kind}/", aggregated)
        router.add_get(f"/{kind}/{{name}}", single)

    def _effective_checks(self, kind: _Kind) -> list[tuple[str, HealthCheck]]:
        # A snapshot: checks added while an async check runs do not disturb the loop.
        return sorted(self._checks[kind].items()) or [("ping", _ping)]

    async def _aggregated(self, kind: _Kind, request: web.Request) -> web.Response:
        excluded = set(request.query.getall("exclude", []))
        verbose = "verbose" in request.query
        lines: list[str] = []
        failed: dict[str, str] = {}
        for name, check in self._effective_checks(kind):
            if name in excluded:
                excluded.discard(name)
                lines.append(f"[+]{name} excluded: ok")
                continue
            error = await _run_check(check)
            if error is None:
                lines.append(f"[+]{name} ok")
            else:
                failed[name] = error
                lines.append(f"[-]{name} failed: reason withheld")
        if failed:
            log.info(f"{kind} check failed", failed=failed)
        if not failed and not verbose:
            return web.Response(text="ok", headers=_TEXT_HEADERS)
        if excluded:
            quoted = ",".join(f'"{n}"' for n in sorted(excluded))
            lines.append(f"warn: some health checks cannot be excluded: no matches for {quoted}")
        lines.append(f"healthz check {'failed' if failed else 'passed'}")
        return web.Response(
            status=500 if failed else 200, text="\n".join(lines) + "\n", headers=_TEXT_HEADERS
        )

    async def _single(self, kind: _Kind, name: str) -> web.Response:
        check = dict(self._effective_checks(kind)).get(name)
        if check is None:
            return web.Response(status=404, text="404 page not found\n", headers=_TEXT_HEADERS)
        error = await _run_check(check)
        if error is not None:
            # The caller asked for this check by name; like controller-runtime, say why.
            return web.Response(
                status=500, text=f"internal server error: {error}\n", headers=_TEXT_HEADERS
            )
        return web.Response(text="ok", headers=_TEXT_HEADERS)


class MetricsServer(_Server):
    """Serves one Prometheus registry on ``/metrics``."""

    serves = "metrics"

    def __init__(self, bind_address: str, registry: CollectorRegistry) -> None:
        super().__init__(bind_address)
        self._registry = registry
        self._app.router.add_get("/metrics", self._metrics)

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def listen_on_all_interfaces(port: int) -> socket.socket:
    # One dual-stack socket where the host has IPv6, as Go's ":port" does. Left to
    # asyncio, an empty host becomes one socket per address family — and with port 0,
    # a different ephemeral port for each.
    if socket.has_dualstack_ipv6():
        return socket.create_server(("::", port), family=socket.AF_INET6, dualstack_ipv6=True)
    return socket.create_server(("0.0.0.0", port))


async def _ping() -> None:
    return None


async def _run_check(check: HealthCheck) -> str | None:
    """The check's error, or None if it passed."""
    try:
        with anyio.move_on_after(CHECK_TIMEOUT) as scope:
            await check()
    except Exception as err:
        return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
    if scope.cancelled_caught:
        return f"timed out after {CHECK_TIMEOUT}s"
    return None
