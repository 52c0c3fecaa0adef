"""The framework's webhooks, called by a real kube-apiserver through envtest.

A two-version Widget (``fixtures/webhook/``: v2 stored and the hub, v1 a spoke) with a
defaulter and a validator on v2, served by a :class:`Manager`'s webhook server wired
with :class:`WebhookBuilder`, as a user would. The webhook configurations are scoped to
the test's namespace with a ``namespaceSelector`` and removed when the test ends, so
they never touch another test's writes.

Facts relied on (kube-apiserver 1.36.3, ``k8s.io/apiserver`` and
``k8s.io/apiextensions-apiserver`` v0.36.3):

- A webhook's denial reaches the client as ``admission webhook "<name>" denied the
  request: <the webhook's message>``, with the webhook's code, reason and details
  (``pkg/admission/plugin/webhook/errors/statuserror.go``).
- A webhook that cannot be called fails the request as a 500 ``Internal error occurred:
  failed calling webhook "<name>": failed to call webhook: Post "<url>?timeout=10s":
  <dial error>`` under ``failurePolicy: Fail``, and is skipped under ``Ignore``
  (``mutating/dispatcher.go``; 10 s is the default ``timeoutSeconds``).
- A webhook whose rules name v2 is sent a v1 request converted to v2 (``matchPolicy:
  Equivalent``, the default), and the response converted back.
- Deleting the CRD deletes its objects through the storage version's storage
  (``customresource_handler.go``, ``GetCustomResourceListerCollectionDeleter``), and the
  converter calls no webhook for objects already in the wanted version
  (``conversion/webhook_converter.go``): so removing the CRD after the server stopped
  needs no conversion.
- The API server keeps webhook connections alive between calls (Go's
  ``http.Transport``), so a rotated certificate only shows on a new connection.
"""

from __future__ import annotations

import copy
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.streams.tls import TLSAttribute
from cryptography import x509
from pydantic import Field

from e2e.harness import eventually
from reconciler.client import Client
from reconciler.envtest.controlplane import ControlPlane
from reconciler.envtest.webhook import (
    WebhookEnvironment,
    WebhookInstallOptions,
    install_webhooks,
    read_manifests,
)
from reconciler.errors import Invalid, NotFound, ServerError
from reconciler.manager import Manager, ManagerOptions
from reconciler.resource import CONFIG_MAP, Obj, ResourceType
from reconciler.typed import Kind, KubeModel, KubeObject
from reconciler.webhook import (
    CONVERT_PATH,
    FieldError,
    Spoke,
    Warnings,
    WebhookBuilder,
    defaulting_path,
    validating_path,
)
from reconciler.webhook import Invalid as InvalidObject

FIXTURES = Path(__file__).parent / "fixtures" / "webhook"
GROUP = "webhooktest.reconciler.local"
MAX_REPLICAS = 10
DEADLINE = 20.0
SHORT_LIVED = timedelta(seconds=3)
"""Long enough to be seen served (milliseconds), short enough to wait out."""


# -- the Widget API -------------------------------------------------------------------------
class WidgetV1Spec(KubeModel):
    replicas: int | None = None
    image: str | None = None
    """``repository[:tag]``."""


class WidgetV1(KubeObject):
    spec: WidgetV1Spec = Field(default_factory=WidgetV1Spec)


class Image(KubeModel):
    repository: str | None = None
    tag: str | None = None


class WidgetV2Spec(KubeModel):
    replicas: int | None = None
    image: Image | None = None


class WidgetV2(KubeObject):
    spec: WidgetV2Spec = Field(default_factory=WidgetV2Spec)


WIDGET_V1 = Kind(ResourceType(GROUP, "v1", "Widget", "widgets"), WidgetV1)
WIDGET_V2 = Kind(ResourceType(GROUP, "v2", "Widget", "widgets"), WidgetV2)
WIDGETS_V1 = WIDGET_V1.resource
WIDGETS_V2 = WIDGET_V2.resource


def v1_to_v2(old: WidgetV1) -> WidgetV2:
    spec: Obj = {}
    if old.spec.replicas is not None:
        spec["replicas"] = old.spec.replicas
    if old.spec.image is not None:
        repository, colon, tag = old.spec.image.rpartition(":")
        # "host:5000/app" has a port, not a tag.
        has_tag = bool(colon) and "/" not in tag
        spec["image"] = (
            {"repository": repository, "tag": tag} if has_tag else {"repository": old.spec.image}
        )
    return WidgetV2.model_validate({"spec": spec})


def v2_to_v1(hub: WidgetV2) -> WidgetV1:
    spec: Obj = {}
    if hub.spec.replicas is not None:
        spec["replicas"] = hub.spec.replicas
    if hub.spec.image is not None:
        image = hub.spec.image
        spec["image"] = (image.repository or "") + (f":{image.tag}" if image.tag else "")
    return WidgetV1.model_validate({"spec": spec})


class WidgetDefaulter:
    async def default(self, obj: WidgetV2) -> None:
        if obj.spec.replicas is None:
            obj.spec.replicas = 1
        if obj.spec.image is not None and obj.spec.image.tag is None:
            obj.spec.image.tag = "latest"


class WidgetValidator:
    async def validate_create(self, obj: WidgetV2) -> Warnings:
        return self._check(obj)

    async def validate_update(self, old: WidgetV2, new: WidgetV2) -> Warnings:
        return self._check(new)

    async def validate_delete(self, obj: WidgetV2) -> Warnings:
        return []

    @staticmethod
    def _check(obj: WidgetV2) -> Warnings:
        replicas = obj.spec.replicas
        if replicas is not None and replicas > MAX_REPLICAS:
            raise InvalidObject(
                WIDGET_V2,
                obj.metadata.name,
                [FieldError("spec.replicas", f"must be at most {MAX_REPLICAS}", value=replicas)],
            )
        return []


# -- helpers ------------------------------------------------------------------------------
@pytest.fixture
def local_plane(control_plane: ControlPlane | None) -> ControlPlane:
    if control_plane is None:
        pytest.skip("the API server must reach this machine's 127.0.0.1 (E2E_KUBECONFIG is set)")
    return control_plane


def scoped(namespace: str, *, validating: bool = True, **webhook: Any) -> WebhookInstallOptions:
    """The Widget's CRD and webhooks (the validating one unless told not), the webhooks
    limited to ``namespace`` and given the ``webhook`` fields (e.g. ``failurePolicy``)."""
    manifests = read_manifests([FIXTURES])

    def scope(config: Obj) -> Obj:
        out = copy.deepcopy(config)
        for hook in out["webhooks"]:
            hook["namespaceSelector"] = {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
            hook.update(webhook)
        return out

    return WebhookInstallOptions(
        crds=manifests.crds,
        mutating_webhooks=[scope(c) for c in manifests.mutating_webhooks],
        validating_webhooks=[scope(c) for c in manifests.validating_webhooks] if validating else [],
    )


@asynccontextmanager
async def serving(k8s: Client, env: WebhookEnvironment, **server: Any) -> AsyncIterator[Manager]:
    """A manager serving the Widget's webhooks where ``env`` told the API server to call
    them (``server`` overrides its options), until the block ends."""
    mgr = Manager(
        k8s,
        ManagerOptions(
            metrics_bind_address="0",
            health_probe_bind_address="0",
            handle_signals=False,
            graceful_shutdown_timeout=5.0,
            webhook=env.server_options(**server),
        ),
    )
    (
        WebhookBuilder(mgr)
        .for_(WIDGET_V2)
        .with_defaulter(WidgetDefaulter())
        .with_validator(WidgetValidator())
        .with_conversion(Spoke(WIDGET_V1, to_hub=v1_to_v2, from_hub=v2_to_v1))
        .complete()
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(mgr.run)
        try:
            await eventually(lambda: "webhook" in mgr.ports, DEADLINE, "the webhook server")
            yield mgr
        finally:
            mgr.shutdown()


def requests_served(mgr: Manager, path: str) -> float:
    """Requests the webhook at ``path`` answered with HTTP 200."""
    value = mgr.registry.get_sample_value(
        "controller_runtime_webhook_requests_total", {"webhook": path, "code": "200"}
    )
    return value or 0.0


def widget(namespace: str, name: str, spec: Obj, rt: ResourceType = WIDGETS_V2) -> Obj:
    return {
        "apiVersion": rt.api_version,
        "kind": "Widget",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


async def served_serial(port: int, ca_pem: bytes) -> int:
    """The serial of the certificate a new TLS connection to 127.0.0.1:``port`` is
    served with, verified against ``ca_pem`` as the API server verifies it."""
    ctx = ssl.create_default_context(cadata=ca_pem.decode())
    async with await anyio.connect_tcp(
        "127.0.0.1", port, ssl_context=ctx, tls_standard_compatible=False
    ) as stream:
        der = stream.extra(TLSAttribute.peer_certificate_binary)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


# -- tests --------------------------------------------------------------------------------
async def test_defaults_come_back_from_the_api_server(
    local_plane: ControlPlane, k8s: Client, namespace: str
) -> None:
    async with (
        install_webhooks(k8s, scoped(namespace)) as env,
        serving(k8s, env) as mgr,
    ):
        created = await k8s.create(
            WIDGETS_V2, widget(namespace, "plain", {"image": {"repository": "nginx"}})
        )
        stored = await k8s.get(WIDGETS_V2, "plain", namespace)
        assert requests_served(mgr, defaulting_path(WIDGETS_V2)) >= 1

    expected = {"replicas": 1, "image": {"repository": "nginx", "tag": "latest"}}
    assert created["spec"] == expected
    assert stored["spec"] == expected


async def test_invalid_object_is_refused_with_the_handlers_message(
    local_plane: ControlPlane, k8s: Client, namespace: str
) -> None:
    async with (
        install_webhooks(k8s, scoped(namespace)) as env,
        serving(k8s, env) as mgr,
    ):
        with pytest.raises(Invalid) as refused:
            await k8s.create(WIDGETS_V2, widget(namespace, "too-many", {"replicas": 11}))
        with pytest.raises(NotFound):
            await k8s.get(WIDGETS_V2, "too-many", namespace)
        assert requests_served(mgr, validating_path(WIDGETS_V2)) >= 1
        # At the limit it is accepted: the refusal above was the validator's verdict.
        await k8s.create(WIDGETS_V2, widget(namespace, "at-limit", {"replicas": MAX_REPLICAS}))

    err = refused.value
    assert err.message == (
        'admission webhook "vwidget-v2.kb.io" denied the request: '
        'Widget.webhooktest.reconciler.local "too-many" is invalid: '
        "spec.replicas: Invalid value: 11: must be at most 10"
    )
    assert (err.status, err.reason) == (422, "Invalid")
    assert err.details["causes"] == [
        {
            "reason": "FieldValueInvalid",
            "message": "Invalid value: 11: must be at most 10",
            "field": "spec.replicas",
        }
    ]


async def test_versions_round_trip_through_the_conversion_webhook(
    local_plane: ControlPlane, k8s: Client, namespace: str
) -> None:
    async with (
        install_webhooks(k8s, scoped(namespace)) as env,
        serving(k8s, env) as mgr,
    ):
        # Written in v1: converted to v2 for the webhooks (their rules name v2) and
        # for storage.
        await k8s.create(
            WIDGETS_V1,
            widget(namespace, "w", {"replicas": 2, "image": "nginx:1.27"}, WIDGETS_V1),
        )
        as_v2 = await k8s.get(WIDGETS_V2, "w", namespace)
        assert as_v2["spec"] == {"replicas": 2, "image": {"repository": "nginx", "tag": "1.27"}}

        as_v2["spec"]["image"]["tag"] = "1.28"
        await k8s.replace(WIDGETS_V2, as_v2)
        as_v1 = await k8s.get(WIDGETS_V1, "w", namespace)
        assert as_v1["apiVersion"] == f"{GROUP}/v1"
        assert as_v1["spec"] == {"replicas": 2, "image": "nginx:1.28"}

        as_v1["spec"]["replicas"] = 3
        del as_v1["spec"]["image"]
        await k8s.replace(WIDGETS_V1, as_v1)
        again = await k8s.get(WIDGETS_V2, "w", namespace)
        assert again["spec"] == {"replicas": 3}
        assert again["metadata"]["uid"] == as_v2["metadata"]["uid"]

        # A v1 write without a tag is defaulted in v2 and reads back with it.
        await k8s.create(WIDGETS_V1, widget(namespace, "untagged", {"image": "nginx"}, WIDGETS_V1))
        untagged = await k8s.get(WIDGETS_V1, "untagged", namespace)
        assert untagged["spec"] == {"replicas": 1, "image": "nginx:latest"}
        assert requests_served(mgr, CONVERT_PATH) >= 4


async def test_rotated_certificate_is_served_without_a_restart(
    local_plane: ControlPlane, k8s: Client, namespace: str
) -> None:
    """The server starts with a certificate that expires seconds later, is given a new
    one from the same CA, and the API server's first call comes after the old one
    expired: Go refuses an expired certificate, so a call that succeeds was served
    with the new one. (The API server makes no call before: a connection it kept alive
    from earlier would not shake hands again.)"""
    async with install_webhooks(k8s, scoped(namespace)) as env:
        old = env.rotate_serving_cert(valid_for=SHORT_LIVED)
        async with serving(k8s, env, cert_poll_interval=0.05) as mgr:
            assert await served_serial(env.port, env.ca_pem) == old.serial_number
            new = env.rotate_serving_cert()
            assert new.serial_number != old.serial_number

            async def new_one_served() -> bool:
                return await served_serial(env.port, env.ca_pem) == new.serial_number

            await eventually(new_one_served, DEADLINE, "the new certificate served")
            expiry = x509.load_pem_x509_certificate(old.cert_pem).not_valid_after_utc
            await eventually(
                lambda: datetime.now(UTC) > expiry, DEADLINE, "the old certificate to expire"
            )
            assert requests_served(mgr, defaulting_path(WIDGETS_V2)) == 0

            created = await k8s.create(WIDGETS_V2, widget(namespace, "after", {}))
            assert created["spec"] == {"replicas": 1}
            assert requests_served(mgr, defaulting_path(WIDGETS_V2)) == 1
            assert await served_serial(env.port, env.ca_pem) == new.serial_number


@pytest.mark.parametrize("policy", ["Fail", "Ignore"])
async def test_failure_policy_applies_when_the_server_is_down(
    local_plane: ControlPlane, k8s: Client, namespace: str, policy: str
) -> None:
    options = scoped(namespace, validating=False, failurePolicy=policy)
    async with install_webhooks(k8s, options) as env:
        async with serving(k8s, env):
            up = await k8s.create(WIDGETS_V2, widget(namespace, "while-up", {}))
        assert up["spec"] == {"replicas": 1}, "the defaulter ran while the server was up"

        if policy == "Fail":
            with pytest.raises(ServerError) as refused:
                await k8s.create(WIDGETS_V2, widget(namespace, "while-down", {}))
            url = env.url(defaulting_path(WIDGETS_V2))
            assert refused.value.message == (
                'Internal error occurred: failed calling webhook "mwidget-v2.kb.io": '
                f'failed to call webhook: Post "{url}?timeout=10s": '
                f"dial tcp 127.0.0.1:{env.port}: connect: connection refused"
            )
            with pytest.raises(NotFound):
                await k8s.get(WIDGETS_V2, "while-down", namespace)
        else:
            down = await k8s.create(WIDGETS_V2, widget(namespace, "while-down", {}))
            assert down["spec"] == {}, "written as sent, without the defaults"


async def test_install_applies_configurations_before_returning_and_removes_them(
    local_plane: ControlPlane, k8s: Client, namespace: str
) -> None:
    """The first write after the install is already mutated-or-refused, and the first
    after the exit no longer is — ten times, as the gap is a few milliseconds (a refused
    write here is one the webhook, pointed at a closed port, failed)."""
    config: Obj = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": f"install-check-{namespace}"},
        "webhooks": [
            {
                "name": "install-check.webhooktest.reconciler.local",
                "admissionReviewVersions": ["v1"],
                "clientConfig": {"service": {"name": "none", "namespace": "none", "path": "/"}},
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "rules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE"],
                        "resources": ["configmaps"],
                    }
                ],
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            }
        ],
    }
    for attempt in range(10):
        cm = {"metadata": {"name": f"cm-{attempt}", "namespace": namespace}}
        async with install_webhooks(k8s, WebhookInstallOptions(mutating_webhooks=[config])):
            with pytest.raises(ServerError, match="failed calling webhook"):
                await k8s.create(CONFIG_MAP, cm)
        await k8s.create(CONFIG_MAP, cm)
