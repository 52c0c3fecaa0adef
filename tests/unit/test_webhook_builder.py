"""Wiring: the builder's paths, the shared /convert, the manager's lazy webhook server,
and the server's options."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from prometheus_client import CollectorRegistry

from reconciler._kubeconfig import Configuration
from reconciler.builder import Builder
from reconciler.client import Client
from reconciler.envtest._certs import TinyCA
from reconciler.manager import Manager, ManagerOptions
from reconciler.request import Request, Result
from reconciler.resource import CONFIG_MAP, ResourceType
from reconciler.typed import Kind, KubeObject
from reconciler.webhook import (
    CONVERT_PATH,
    DEFAULT_CERT_DIR,
    DEFAULT_PORT,
    CertificateError,
    Spoke,
    Warnings,
    WebhookBuilder,
    WebhookServer,
    WebhookServerOptions,
)
from reconciler.webhook.conversion import ConversionHandler
from tests.unit.test_webhook_certwatcher import MountedSecret

GROUP = "batch.tutorial.kubebuilder.io"
JOBS_V1 = Kind(ResourceType(GROUP, "v1", "CronJob", "cronjobs"), KubeObject)
JOBS_V2 = Kind(ResourceType(GROUP, "v2", "CronJob", "cronjobs"), KubeObject)
WIDGETS_V1 = Kind(ResourceType(GROUP, "v1", "Widget", "widgets"), KubeObject)
WIDGETS_V2 = Kind(ResourceType(GROUP, "v2", "Widget", "widgets"), KubeObject)


class Nothing:
    async def default(self, obj: KubeObject) -> None:
        return None

    async def validate_create(self, obj: KubeObject) -> Warnings:
        return []

    async def validate_update(self, old: KubeObject, new: KubeObject) -> Warnings:
        return []

    async def validate_delete(self, obj: KubeObject) -> Warnings:
        return []


def same(obj: KubeObject) -> KubeObject:
    return obj


class FakeManager:
    def __init__(self) -> None:
        self.webhook_server = WebhookServer(WebhookServerOptions(), registry=CollectorRegistry())


def test_options_default_as_controller_runtime() -> None:
    opts = WebhookServerOptions()
    assert (opts.host, opts.port, DEFAULT_PORT) == ("", 9443, 9443)
    assert opts.cert_dir == DEFAULT_CERT_DIR == Path("/tmp/k8s-webhook-server/serving-certs")
    assert (opts.cert_name, opts.key_name) == ("tls.crt", "tls.key")
    assert opts.max_request_bytes == 7 * 1024 * 1024
    assert opts.cert_poll_interval == 10.0


@pytest.mark.parametrize(
    "bad",
    [
        {"port": -1},
        {"port": 65536},
        {"max_request_bytes": 0},
        {"request_timeout": 0},
        {"cert_poll_interval": 0},
    ],
)
def test_options_refuse_nonsense(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        WebhookServerOptions(**bad)


def test_builder_registers_each_webhook_at_its_path() -> None:
    mgr = FakeManager()
    WebhookBuilder(mgr).for_(JOBS_V1).with_defaulter(Nothing()).with_validator(
        Nothing()
    ).with_conversion(Spoke(JOBS_V2, same, same)).complete()
    assert mgr.webhook_server.paths == [
        "/convert",
        "/mutate-batch-tutorial-kubebuilder-io-v1-cronjob",
        "/validate-batch-tutorial-kubebuilder-io-v1-cronjob",
    ]


def test_every_kind_shares_one_convert_handler() -> None:
    mgr = FakeManager()
    WebhookBuilder(mgr).for_(JOBS_V1).with_conversion(Spoke(JOBS_V2, same, same)).complete()
    WebhookBuilder(mgr).for_(WIDGETS_V1).with_conversion(Spoke(WIDGETS_V2, same, same)).complete()
    handler = mgr.webhook_server.handler(CONVERT_PATH)
    assert isinstance(handler, ConversionHandler)
    assert mgr.webhook_server.paths == ["/convert"]
    widget = {"apiVersion": f"{GROUP}/v2", "kind": "Widget", "metadata": {"name": "w"}}
    assert handler.conversions.convert(widget, f"{GROUP}/v1")["apiVersion"] == f"{GROUP}/v1"


def test_builder_mistakes_are_refused() -> None:
    mgr = FakeManager()
    with pytest.raises(ValueError, match="for_"):
        WebhookBuilder(mgr).with_validator(Nothing()).complete()
    with pytest.raises(ValueError, match="no webhook"):
        WebhookBuilder(mgr).for_(JOBS_V1).complete()
    WebhookBuilder(mgr).for_(JOBS_V1).with_validator(Nothing()).complete()
    with pytest.raises(ValueError, match="duplicate path"):
        WebhookBuilder(mgr).for_(JOBS_V1).with_validator(Nothing()).complete()
    with pytest.raises(ValueError, match="starts with '/'"):
        mgr.webhook_server.register("convert", Nothing().default)  # type: ignore[arg-type]


def test_convert_path_taken_by_something_else_is_refused() -> None:
    mgr = FakeManager()

    async def handler(body: Any) -> Any:
        return body

    mgr.webhook_server.register(CONVERT_PATH, handler)
    with pytest.raises(ValueError, match="another handler"):
        WebhookBuilder(mgr).for_(JOBS_V1).with_conversion(Spoke(JOBS_V2, same, same)).complete()


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    c = Client(Configuration(host="https://127.0.0.1:9"))
    try:
        yield c
    finally:
        await c.close()


def test_manager_creates_its_webhook_server_on_first_use(client: Client) -> None:
    opts = WebhookServerOptions(port=0)
    mgr = Manager(client, ManagerOptions(webhook=opts, handle_signals=False))
    server = mgr.webhook_server
    assert server is mgr.webhook_server
    assert server.options is opts
    with pytest.raises(ValueError, match="webhook"):  # its readiness check is taken
        mgr.add_readyz_check("webhook", server.started_check)


class Noop:
    async def reconcile(self, request: Request) -> Result:
        return Result()


async def test_manager_serves_webhooks_before_its_caches_sync(
    client: Client, tmp_path: Path
) -> None:
    # A conversion webhook must answer before an informer of its kind can list: this
    # manager's API server is unreachable, so its cache never syncs, and the webhook
    # server must be up all the same.
    secret = MountedSecret(tmp_path)
    secret.write_pair(TinyCA("ca").serving())
    opts = ManagerOptions(
        metrics_bind_address="0",
        health_probe_bind_address="0",
        handle_signals=False,
        webhook=WebhookServerOptions(host="127.0.0.1", port=0, cert_dir=tmp_path),
    )
    mgr = Manager(client, opts)
    Builder(mgr).for_(CONFIG_MAP).complete(Noop())
    WebhookBuilder(mgr).for_(JOBS_V1).with_validator(Nothing()).complete()
    async with anyio.create_task_group() as tg:
        tg.start_soon(mgr.run)
        with anyio.fail_after(10):
            while "webhook" not in mgr.ports:
                await anyio.sleep(0.02)
            await mgr.webhook_server.started_check()
        assert not all(i.has_synced for i in mgr.cache.informers)
        mgr.shutdown()


async def test_a_manager_without_certificates_fails_to_start(
    client: Client, tmp_path: Path
) -> None:
    opts = ManagerOptions(
        metrics_bind_address="0",
        health_probe_bind_address="0",
        handle_signals=False,
        webhook=WebhookServerOptions(host="127.0.0.1", port=0, cert_dir=tmp_path),
    )
    mgr = Manager(client, opts)
    WebhookBuilder(mgr).for_(JOBS_V1).with_validator(Nothing()).complete()
    with anyio.fail_after(10), pytest.raises(CertificateError, match=r"tls\.crt"):
        await mgr.run()


async def test_started_check_fails_while_the_server_is_not_running() -> None:
    server = WebhookServer(WebhookServerOptions(port=0), registry=CollectorRegistry())
    with pytest.raises(RuntimeError, match="not been started"):
        await server.started_check()
