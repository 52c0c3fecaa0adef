"""The webhook server over real HTTPS: TLS versions, certificate rotation without restart,
request bounds, metrics, and a manager serving it with its readiness check.

Clients that check the served certificate connect by IP address without SNI, as Go's
client does for a URL such as ``https://10.96.0.10:443``: the server must pick the
rotated pair for them too. Every wait has a deadline.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import orjson
import pytest
from cryptography import x509
from prometheus_client import CollectorRegistry

from reconciler.client import Client
from reconciler.envtest._certs import TinyCA
from reconciler.errors import Invalid as InvalidError
from reconciler.manager import Manager, ManagerOptions
from reconciler.resource import CONFIG_MAP, ResourceType
from reconciler.typed import Kind, KubeModel, KubeObject
from reconciler.webhook import (
    CertificateError,
    FieldError,
    Invalid,
    Warnings,
    WebhookBuilder,
    WebhookServer,
    WebhookServerOptions,
    defaulting_handler,
    defaulting_path,
    validating_handler,
    validating_path,
)
from reconciler.webhook.server import Handler
from tests.unit.test_webhook_certwatcher import MountedSecret

DEADLINE = 10.0
POLL = 0.05  # the watcher's poll interval in these tests
GROUP = "batch.tutorial.kubebuilder.io"
JOBS = ResourceType(GROUP, "v1", "CronJob", "cronjobs")


class Spec(KubeModel):
    schedule: str = ""
    suspend: bool | None = None


class CronJob(KubeObject):
    spec: Spec = Spec()


CRON_JOBS = Kind(JOBS, CronJob)


class CronJobWebhook:
    async def default(self, obj: CronJob) -> None:
        if obj.spec.suspend is None:
            obj.spec.suspend = False

    async def validate_create(self, obj: CronJob) -> Warnings:
        if not obj.spec.schedule:
            raise Invalid(CRON_JOBS, obj.metadata.name, [FieldError("spec.schedule", "", "")])
        return []

    async def validate_update(self, old: CronJob, new: CronJob) -> Warnings:
        return []

    async def validate_delete(self, obj: CronJob) -> Warnings:
        return []


def admission_review(obj: Mapping[str, Any], operation: str = "CREATE") -> bytes:
    request = {
        "uid": "req-1",
        "kind": {"group": GROUP, "version": "v1", "kind": "CronJob"},
        "operation": operation,
        "name": obj["metadata"]["name"],
        "object": obj,
    }
    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
    return orjson.dumps(review)


def cronjob(schedule: str = "*/5 * * * *") -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": "CronJob",
        "metadata": {"name": "nightly", "namespace": "default"},
        "spec": {"schedule": schedule},
    }


# -- a server on a mounted-Secret style directory ------------------------------------------


@dataclass
class Serving:
    server: WebhookServer
    registry: CollectorRegistry
    secret: MountedSecret
    ca: TinyCA
    port: int

    def metric(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)

    async def post(
        self,
        path: str,
        body: bytes | Any,
        *,
        content_type: str = "application/json",
        method: str = "POST",
    ) -> tuple[int, Any]:
        ctx = ssl.create_default_context(cadata=self.ca.cert_pem.decode())
        async with (
            aiohttp.ClientSession() as http,
            http.request(
                method,
                f"https://127.0.0.1:{self.port}{path}",
                data=body,
                headers={"Content-Type": content_type},
                ssl=ctx,
            ) as resp,
        ):
            return resp.status, orjson.loads(await resp.read())


@asynccontextmanager
async def serving(
    tmp_path: Path, handlers: Mapping[str, Handler] | None = None, **options: Any
) -> AsyncIterator[Serving]:
    ca = TinyCA("webhook-ca")
    secret = MountedSecret(tmp_path / "certs")
    secret.write_pair(ca.serving())
    opts = WebhookServerOptions(
        host="127.0.0.1", port=0, cert_dir=secret.root, cert_poll_interval=POLL, **options
    )
    registry = CollectorRegistry()
    server = WebhookServer(opts, registry=registry)
    for path, handler in (handlers or {}).items():
        server.register(path, handler)
    async with anyio.create_task_group() as tg:
        with anyio.fail_after(DEADLINE):
            port = await tg.start(server.run)
        assert server.port == port
        yield Serving(server, registry, secret, ca, port)
        tg.cancel_scope.cancel()


@dataclass(frozen=True)
class Handshake:
    serial: int
    version: str
    alpn: str | None


def _handshake(port: int, ctx: ssl.SSLContext) -> Handshake:
    # No server_hostname: the ClientHello carries no SNI, as Go's for an IP-address URL.
    with (
        socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as raw,
        ctx.wrap_socket(raw) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return Handshake(
            x509.load_der_x509_certificate(der).serial_number,
            str(tls.version()),
            tls.selected_alpn_protocol(),
        )


async def handshake(
    port: int,
    *cas: TinyCA,
    max_version: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED,
    alpn: list[str] | None = None,
) -> Handshake:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # no name to check without SNI; the chain still is
    for ca in cas:
        ctx.load_verify_locations(cadata=ca.cert_pem.decode())
    ctx.maximum_version = max_version
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return await anyio.to_thread.run_sync(_handshake, port, ctx)


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    with anyio.fail_after(DEADLINE):
        while not await check():
            await anyio.sleep(POLL)


# -- TLS ----------------------------------------------------------------------------------


def tls_1_1_client() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # OpenSSL 3 offers TLS 1.1 only at level 0
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    return ctx


@contextmanager
def tls_1_1_server(secret: MountedSecret) -> Iterator[int]:
    """A server that does accept TLS 1.1, for one handshake: the control experiment."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    ctx.minimum_version = ssl.TLSVersion.TLSv1_1
    ctx.load_cert_chain(secret.root / "tls.crt", secret.root / "tls.key")
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(DEADLINE)

    def accept_one() -> None:
        conn, _ = listener.accept()
        with contextlib.suppress(OSError), ctx.wrap_socket(conn, server_side=True) as tls:
            tls.recv(1)

    thread = threading.Thread(target=accept_one, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        thread.join(DEADLINE)
        listener.close()


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated")
async def test_serves_tls_1_2_and_1_3_over_http_1_1_and_refuses_tls_1_1(tmp_path: Path) -> None:
    async with serving(tmp_path) as s:
        tls12 = await handshake(s.port, s.ca, max_version=ssl.TLSVersion.TLSv1_2)
        assert tls12.version == "TLSv1.2"
        tls13 = await handshake(s.port, s.ca, alpn=["h2", "http/1.1"])
        assert (tls13.version, tls13.alpn) == ("TLSv1.3", "http/1.1")  # HTTP/2 is off

        # The control: this client does complete a TLS 1.1 handshake with a server that
        # allows it, so its failure below is our server's refusal.
        with tls_1_1_server(s.secret) as port:
            done = await anyio.to_thread.run_sync(_handshake, port, tls_1_1_client())
            assert done.version == "TLSv1.1"
        with pytest.raises(ssl.SSLError):
            await anyio.to_thread.run_sync(_handshake, s.port, tls_1_1_client())


async def test_picks_up_a_rotated_certificate_without_restart(tmp_path: Path) -> None:
    async with serving(tmp_path) as s:
        first = await handshake(s.port, s.ca)
        new_ca = TinyCA("rotated-ca")  # cert-manager may rotate the CA too
        new_serial = s.secret.write_pair(new_ca.serving())
        assert new_serial != first.serial

        async def rotated() -> bool:
            return (await handshake(s.port, s.ca, new_ca)).serial == new_serial

        await eventually(rotated, "the rotated certificate")
        # An HTTPS client trusting only the new CA gets answers.
        s.ca = new_ca
        status, _ = await s.post("/nowhere", b"{}")
        assert status == 404


async def test_keeps_serving_the_old_certificate_when_a_rotation_is_broken(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with serving(tmp_path) as s:
        first = await handshake(s.port, s.ca)
        s.secret.write(s.ca.serving().cert_pem, s.ca.serving().key_pem)  # mismatched pair
        seen: list[str] = []

        async def reported() -> bool:
            seen.append(capsys.readouterr().out)
            return "cannot load new certificate" in "".join(seen)

        await eventually(reported, "the broken pair to be reported")
        assert (await handshake(s.port, s.ca)).serial == first.serial
        assert (await s.post("/nowhere", b"{}"))[0] == 404

        fixed = s.secret.write_pair(s.ca.serving())

        async def recovered() -> bool:
            return (await handshake(s.port, s.ca)).serial == fixed

        await eventually(recovered, "the repaired certificate")


async def test_a_pair_that_does_not_load_stops_the_start(tmp_path: Path) -> None:
    opts = WebhookServerOptions(host="127.0.0.1", port=0, cert_dir=tmp_path)
    with pytest.raises(CertificateError):
        await WebhookServer(opts, registry=CollectorRegistry()).run()


# -- requests -----------------------------------------------------------------------------


async def echo(body: Mapping[str, Any]) -> Mapping[str, Any]:
    return body


async def test_request_bounds_and_bad_requests_are_status_answers(tmp_path: Path) -> None:
    released = anyio.Event()

    async def stuck(body: Mapping[str, Any]) -> Mapping[str, Any]:
        await released.wait()
        return body

    async def raises_timeout(body: Mapping[str, Any]) -> Mapping[str, Any]:
        raise TimeoutError("the handler's own, not the request bound")

    async def answers_nothing(body: Mapping[str, Any]) -> Any:
        return None

    handlers: dict[str, Handler] = {
        "/echo": echo,
        "/stuck": stuck,
        "/raises-timeout": raises_timeout,
        "/answers-nothing": answers_nothing,
        validating_path(JOBS): validating_handler(CRON_JOBS, CronJobWebhook()),
    }
    async with serving(tmp_path, handlers, max_request_bytes=1024, request_timeout=0.5) as s:
        assert await s.post("/echo", b'{"a": 1}') == (200, {"a": 1})

        status, body = await s.post("/echo", b'{"a": "' + b"x" * 2000 + b'"}')
        assert status == 413
        assert body["reason"] == "RequestEntityTooLarge"
        assert body["message"] == "request entity is too large; limit is 1024 bytes"

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length to refuse early
            for _ in range(4):
                yield b" " * 400

        assert (await s.post("/echo", chunks()))[0] == 413

        cases: list[tuple[str, bytes, str, str, int, str]] = [
            ("/echo", b"{not json", "application/json", "POST", 400, "not JSON"),
            ("/echo", b"[1, 2]", "application/json", "POST", 400, "JSON list, not an object"),
            ("/echo", b"{}", "text/plain", "POST", 400, "contentType=text/plain"),
            ("/echo", b"", "application/json", "POST", 400, "empty"),
            ("/echo", b"{}", "application/json", "PUT", 405, "PUT"),
            ("/nowhere", b"{}", "application/json", "POST", 404, "/nowhere"),
            (validating_path(JOBS), b"{}", "application/json", "POST", 400, "AdmissionReview"),
            ("/stuck", b"{}", "application/json", "POST", 503, "timed out after 0.5s"),
            ("/raises-timeout", b"{}", "application/json", "POST", 500, "TimeoutError"),
            ("/answers-nothing", b"{}", "application/json", "POST", 500, "the handler's answer"),
        ]
        for path, data, content_type, method, code, words in cases:
            status, body = await s.post(path, data, content_type=content_type, method=method)
            assert (status, body["kind"], body["code"]) == (code, "Status", code), path
            assert words in body["message"], (path, body)
        released.set()


async def test_metrics_count_requests_by_path_and_code(tmp_path: Path) -> None:
    entered, release = anyio.Event(), anyio.Event()

    async def slow(body: Mapping[str, Any]) -> Mapping[str, Any]:
        entered.set()
        await release.wait()
        return body

    async def broken(body: Mapping[str, Any]) -> Mapping[str, Any]:
        raise RuntimeError("bug")

    class Panicking:
        async def default(self, obj: CronJob) -> None:
            raise RuntimeError("bug")

    mutate = defaulting_path(JOBS)
    handlers: dict[str, Handler] = {
        mutate: defaulting_handler(CRON_JOBS, CronJobWebhook()),
        "/slow": slow,
        "/broken": broken,
        "/panicking": defaulting_handler(CRON_JOBS, Panicking()),
    }
    async with serving(tmp_path, handlers) as s:
        total = "controller_runtime_webhook_requests_total"
        # Exported before any request, as controller-runtime initialises 200 and 500.
        assert s.metric(total, webhook=mutate, code="200") == 0
        assert s.metric(total, webhook=mutate, code="500") == 0
        assert s.metric("controller_runtime_webhook_panics_total") == 0

        status, answer = await s.post(mutate, admission_review(cronjob()))
        assert status == 200
        assert answer["response"]["patchType"] == "JSONPatch"
        await s.post(mutate, admission_review(cronjob()))
        await s.post(mutate, b"junk")
        assert s.metric(total, webhook=mutate, code="200") == 2
        assert s.metric(total, webhook=mutate, code="400") == 1
        count = "controller_runtime_webhook_latency_seconds_count"
        assert s.metric(count, webhook=mutate) == 3

        async with anyio.create_task_group() as tg:
            tg.start_soon(s.post, "/slow", b"{}")
            with anyio.fail_after(DEADLINE):
                await entered.wait()
            gauge = "controller_runtime_webhook_requests_in_flight"
            assert s.metric(gauge, webhook="/slow") == 1
            release.set()
        assert s.metric(gauge, webhook="/slow") == 0

        status, body = await s.post("/broken", b"{}")
        assert (status, body["message"]) == (500, "internal error: RuntimeError: bug")
        status, answer = await s.post("/panicking", admission_review(cronjob()))
        assert status == 200  # the review says it
        assert answer["response"]["status"] == {"code": 500, "message": "panic: bug [recovered]"}
        assert s.metric(total, webhook="/broken", code="500") == 1
        assert s.metric(total, webhook="/panicking", code="200") == 1
        assert s.metric("controller_runtime_webhook_panics_total") == 2
        assert s.metric("controller_runtime_conversion_webhook_panics_total") == 0


# -- in a manager -------------------------------------------------------------------------


async def get(port: int, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}{path}") as r:
        return r.status, await r.text()


async def test_a_manager_serves_its_webhooks_and_reports_ready(k8s: Client, tmp_path: Path) -> None:
    ca = TinyCA("webhook-ca")
    secret = MountedSecret(tmp_path / "certs")
    secret.write_pair(ca.serving())
    options = ManagerOptions(
        metrics_bind_address="127.0.0.1:0",
        health_probe_bind_address="127.0.0.1:0",
        handle_signals=False,
        webhook=WebhookServerOptions(host="127.0.0.1", port=0, cert_dir=secret.root),
    )
    mgr = Manager(k8s, options)
    hook = CronJobWebhook()
    WebhookBuilder(mgr).for_(CRON_JOBS).with_defaulter(hook).with_validator(hook).complete()
    plain = Manager(
        k8s,
        ManagerOptions(
            health_probe_bind_address="127.0.0.1:0", metrics_bind_address="0", handle_signals=False
        ),
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(mgr.run)
        tg.start_soon(plain.run)

        async def ready() -> bool:
            if "health" not in mgr.ports or "health" not in plain.ports:
                return False
            return (await get(mgr.ports["health"], "/readyz/webhook"))[0] == 200

        await eventually(ready, "readyz/webhook")
        assert mgr.ports["webhook"] == mgr.webhook_server.port
        status, body = await get(mgr.ports["health"], "/readyz?verbose")
        assert status == 200
        assert "[+]webhook ok" in body
        s = Serving(mgr.webhook_server, mgr.registry, secret, ca, mgr.ports["webhook"])
        status, answer = await s.post(validating_path(JOBS), admission_review(cronjob("")))
        assert answer["response"]["status"]["reason"] == "Invalid"
        status, metrics = await get(mgr.ports["metrics"], "/metrics")
        assert (
            'controller_runtime_webhook_requests_total{code="200",'
            'webhook="/validate-batch-tutorial-kubebuilder-io-v1-cronjob"} 1.0'
        ) in metrics
        # A manager whose webhook server was never used serves none.
        assert "webhook" not in plain.ports
        assert (await get(plain.ports["health"], "/readyz/webhook"))[0] == 404
        with pytest.raises(RuntimeError, match="before the manager runs"):
            _ = plain.webhook_server
        mgr.shutdown()
        plain.shutdown()


# -- Invalid, against the API server's own wording ---------------------------------------


async def test_invalid_is_worded_as_the_api_server_words_it(k8s: Client, namespace: str) -> None:
    bad = {"metadata": {"name": "Not_A_Name", "namespace": namespace}, "data": {"a": "b"}}
    with pytest.raises(InvalidError) as caught:
        await k8s.create(CONFIG_MAP, bad)
    server = caught.value
    causes = server.details["causes"]
    assert [c["field"] for c in causes] == ["metadata.name"]
    detail = causes[0]["message"].split(": ", 2)[2]  # after 'Invalid value: "Not_A_Name": '
    ours = Invalid(
        Kind(CONFIG_MAP, KubeObject),
        "Not_A_Name",
        [FieldError("metadata.name", detail, "Not_A_Name")],
    )
    assert ours.message == server.message
    assert ours.status()["details"] == server.details
