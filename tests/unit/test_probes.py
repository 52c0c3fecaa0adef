"""The health probe and metrics servers over a real socket: probe semantics (as
controller-runtime's pkg/healthz), metrics exposition, lifecycle."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import anyio
import anyio.lowlevel
import pytest
from prometheus_client import CollectorRegistry, Counter

from reconciler.probes import (
    HealthProbeServer,
    ListenError,
    MetricsServer,
    parse_bind_address,
)

DEADLINE = 5.0


@asynccontextmanager
async def serving(server: HealthProbeServer | MetricsServer) -> AsyncIterator[str]:
    """Run ``server`` for the block; yields its base URL."""
    async with anyio.create_task_group() as tg:
        with anyio.fail_after(DEADLINE):
            port = await tg.start(server.run)
        assert port == server.port
        yield f"http://127.0.0.1:{port}"
        tg.cancel_scope.cancel()


async def get(url: str) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, await resp.text(), resp.headers["Content-Type"]


async def passes() -> None:
    await anyio.lowlevel.checkpoint()


async def test_readyz_turns_ok_when_its_check_passes() -> None:
    server = HealthProbeServer("127.0.0.1:0")
    synced = False

    async def informers() -> None:
        if not synced:
            raise RuntimeError("caches not synced")

    server.add_readyz_check("ping", passes)
    server.add_readyz_check("informers", informers)
    async with serving(server) as url:
        status, body, content_type = await get(f"{url}/readyz")
        assert status == 500
        # controller-runtime's handler words the summary "healthz" on every endpoint.
        assert body == "[-]informers failed: reason withheld\n[+]ping ok\nhealthz check failed\n"
        assert content_type.startswith("text/plain")
        synced = True
        assert await get(f"{url}/readyz") == (200, "ok", "text/plain; charset=utf-8")
        # Liveness is separate: no healthz checks were added, so it reports a ping.
        assert (await get(f"{url}/healthz?verbose"))[:2] == (
            200,
            "[+]ping ok\nhealthz check passed\n",
        )


async def test_verbose_exclude_and_single_checks() -> None:
    server = HealthProbeServer("127.0.0.1:0")

    async def broken() -> None:
        raise RuntimeError("disk full")

    server.add_healthz_check("database", passes)
    server.add_healthz_check("disk", broken)
    async with serving(server) as url:
        status, body, _ = await get(f"{url}/healthz")
        assert status == 500
        assert "disk full" not in body  # the aggregate never reveals reasons
        status, body, _ = await get(f"{url}/healthz?exclude=disk&exclude=nope&exclude=no&verbose")
        assert status == 200
        assert body.splitlines() == [
            "[+]database ok",
            "[+]disk excluded: ok",
            'warn: some health checks cannot be excluded: no matches for "no","nope"',
            "healthz check passed",
        ]
        # Not verbose, but a failure lists every check; an excluded one still shows.
        status, body, _ = await get(f"{url}/healthz?exclude=database")
        assert (status, body) == (
            500,
            "[+]database excluded: ok\n[-]disk failed: reason withheld\nhealthz check failed\n",
        )
        assert await get(f"{url}/healthz/database") == (200, "ok", "text/plain; charset=utf-8")
        status, body, _ = await get(f"{url}/healthz/disk")
        assert status == 500
        assert "disk full" in body
        assert (await get(f"{url}/healthz/unknown"))[0] == 404
        # The default ping exists only while no check is registered.
        assert (await get(f"{url}/healthz/ping"))[0] == 404
        assert await get(f"{url}/readyz/ping") == (200, "ok", "text/plain; charset=utf-8")
        assert (await get(f"{url}/healthz/"))[0] == 500


async def test_metrics_exposes_the_given_registry() -> None:
    registry = CollectorRegistry()
    Counter("reconciles", "Reconciles done.", ["controller"], registry=registry).labels(
        "workspace"
    ).inc(3)
    async with serving(MetricsServer("127.0.0.1:0", registry)) as url:
        status, body, content_type = await get(f"{url}/metrics")
    assert status == 200
    assert 'reconciles_total{controller="workspace"} 3.0' in body
    assert content_type.startswith("text/plain; version=")


async def test_each_server_serves_only_its_own_paths() -> None:
    registry = CollectorRegistry()
    Counter("ticks", "Ticks.", registry=registry).inc()
    health = HealthProbeServer("127.0.0.1:0")
    metrics = MetricsServer("127.0.0.1:0", registry)
    async with serving(health) as health_url, serving(metrics) as metrics_url:
        assert health_url != metrics_url
        assert (await get(f"{health_url}/healthz"))[0] == 200
        assert (await get(f"{health_url}/metrics"))[0] == 404
        assert (await get(f"{metrics_url}/healthz"))[0] == 404
        assert "ticks_total 1.0" in (await get(f"{metrics_url}/metrics"))[1]


async def test_slow_async_check_fails_instead_of_hanging(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("reconciler.probes.CHECK_TIMEOUT", 0.1)
    server = HealthProbeServer("127.0.0.1:0")

    async def stuck() -> None:
        await anyio.sleep_forever()

    server.add_readyz_check("stuck", stuck)
    async with serving(server) as url:
        with anyio.fail_after(DEADLINE):
            status, body, _ = await get(f"{url}/readyz/stuck")
    assert status == 500
    assert "timed out" in body


async def test_a_check_raising_timeout_error_is_not_reported_as_timed_out() -> None:
    server = HealthProbeServer("127.0.0.1:0")

    async def upstream() -> None:
        raise TimeoutError("upstream did not answer")

    server.add_readyz_check("upstream", upstream)
    async with serving(server) as url:
        status, body, _ = await get(f"{url}/readyz/upstream")
    assert (status, body) == (500, "internal server error: TimeoutError: upstream did not answer\n")


async def test_empty_host_listens_on_all_interfaces() -> None:
    server = HealthProbeServer(":0")
    async with serving(server) as url:
        assert (await get(f"{url}/healthz"))[0] == 200  # reachable over IPv4 loopback
        if socket.has_dualstack_ipv6():
            assert (await get(f"http://[::1]:{server.port}/healthz"))[0] == 200


async def test_cancelling_run_closes_the_port() -> None:
    server = HealthProbeServer("127.0.0.1:0")
    async with serving(server) as url:
        assert (await get(f"{url}/healthz"))[0] == 200
    assert server.port is None
    with pytest.raises(aiohttp.ClientConnectionError):
        await get(f"{url}/healthz")


@pytest.mark.parametrize("serves", ["health probes", "metrics"])
async def test_a_taken_port_is_a_listen_error_naming_the_server(serves: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        server = (
            HealthProbeServer(address)
            if serves == "health probes"
            else MetricsServer(address, CollectorRegistry())
        )
        with pytest.raises(ListenError) as info, anyio.fail_after(DEADLINE):
            await server.run()
    err = info.value
    assert (err.bind_address, err.serves) == (address, serves)
    assert str(err) == f"cannot listen on {address} for {serves}: Address already in use"
    assert server.port is None


@pytest.mark.parametrize("address", ["0", ""])
async def test_disabled_server_reports_none_and_returns(address: str) -> None:
    for server in (HealthProbeServer(address), MetricsServer(address, CollectorRegistry())):
        assert not server.enabled
        with anyio.fail_after(DEADLINE):
            async with anyio.create_task_group() as tg:
                assert await tg.start(server.run) is None


@pytest.mark.parametrize(
    ("address", "parsed"),
    [
        (":8080", (None, 8080)),
        ("127.0.0.1:0", ("127.0.0.1", 0)),
        ("[::1]:9090", ("::1", 9090)),
        ("localhost:8081", ("localhost", 8081)),
        ("0", None),
        ("", None),
    ],
)
def test_bind_address_syntax(address: str, parsed: tuple[str | None, int] | None) -> None:
    assert parse_bind_address(address) == parsed


@pytest.mark.parametrize("address", ["8080", "host:", "host:http", ":70000"])
def test_bad_bind_addresses_are_rejected(address: str) -> None:
    with pytest.raises(ValueError, match="bind address"):
        HealthProbeServer(address)
    with pytest.raises(ValueError, match="bind address"):
        MetricsServer(address, CollectorRegistry())


def test_check_names_are_unique_and_path_safe() -> None:
    server = HealthProbeServer("0")
    server.add_readyz_check("a", passes)
    server.add_healthz_check("a", passes)  # separate namespaces per endpoint
    with pytest.raises(ValueError, match="already exists"):
        server.add_readyz_check("a", passes)
    with pytest.raises(ValueError, match="no '/'"):
        server.add_readyz_check("a/b", passes)
