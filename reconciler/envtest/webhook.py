"""Webhooks in envtest: the API server calls the test's own webhook server.

:func:`install_webhooks` does what controller-runtime's envtest does for webhooks: it
makes a CA and a serving certificate in a cert dir for the test's webhook server to
read, points every webhook configuration and every conversion webhook at
``https://<host>:<port>``, installs them, waits until the API server applies them, and
removes them again on exit::

    options = WebhookInstallOptions(paths=[Path("config/webhook"), Path("config/crd")])
    async with install_webhooks(client, options) as env:
        server = WebhookServer(env.server_options(), registry=CollectorRegistry())
        ...  # register handlers, run the server, write objects through the API server

What we copy, from controller-runtime's ``pkg/envtest/webhook.go`` and ``crd.go``
(main at 86a0d40, August 2026):

- Manifests come from files or folders (``.yaml``, ``.yml``, ``.json``; every document
  of them) and from objects. Mutating and ValidatingWebhookConfigurations must be
  ``admissionregistration.k8s.io/v1``; documents of other kinds are skipped, so a
  kubebuilder ``config/webhook`` folder (which also holds a Service) reads as it is.
- The server listens on ``host`` (127.0.0.1) and ``port`` (a free one when 0); its cert
  dir (a fresh temporary folder unless given, removed on exit) holds ``tls.crt`` and
  ``tls.key``, a serving certificate for ``localhost`` and ``host``.
- Every webhook gets the CA bundle; one whose ``clientConfig`` names a ``service`` gets
  ``url: https://<host>:<port><service.path>`` instead. A ``url`` already there stays.
- A CRD whose ``spec.conversion.strategy`` is ``Webhook`` is pointed at
  ``https://<host>:<port>/convert`` with the CA bundle, and its
  ``conversionReviewVersions`` set to ``["v1", "v1beta1"]`` (what the server answers).
- Installing creates each object, or updates it (with the stored resourceVersion) if
  it exists; CRDs go first, and are waited for until every served version is in
  discovery. Each wait is bounded by ``max_time`` (10 s) polling every
  ``poll_interval`` (100 ms), controller-runtime's defaults.

Where we differ, and why:

- The CA bundle is the CA's certificate; controller-runtime sends the serving
  certificate itself (Go trusts a leaf found among its roots). With the CA, a
  serving certificate rotated by :meth:`WebhookEnvironment.rotate_serving_cert` is
  trusted as a real rotation (cert-manager's, from the same issuer) is.
- The cert dir is laid out as the kubelet lays out a mounted Secret
  (``pkg/volume/util/atomic_writer.go`` in kubernetes/kubernetes: ``..data`` is a
  symlink to a timestamped folder; ``tls.crt`` and ``tls.key`` are symlinks through it),
  so a rotation swaps both files with one rename: at no instant do the two names hold
  halves of different pairs, or a half-written file. (A reader that opens them one
  after the other can still straddle a swap; the server's certificate watcher checks
  that the files did not change while it loaded them.)
- controller-runtime joins ``/`` and the service path (``https://h:p//mutate-…``); we do
  not double the slash. A service without a path is sent to ``/``, where the API server
  would send it; controller-runtime leaves such a webhook pointing at the service.
- controller-runtime's envtest waits until a GET finds each webhook configuration and
  never deletes them: its API server dies with the test. Ours waits until the API
  server *applies* each one (below); for CRDs, also until they are Established and a
  LIST of the storage version answers (below); and on exit it deletes configurations
  and CRDs, waiting until they are no longer applied / gone, because one API server
  serves a whole test session.

A new CRD in kube-apiserver 1.36.3 (``k8s.io/apiserver`` and
``k8s.io/apiextensions-apiserver`` v0.36.3), after it is in discovery:

- Its watch cache starts empty; until it has listed etcd, a LIST it would serve is
  refused with 429 ``storage is (re)initializing`` (``pkg/storage/cacher/cacher.go``,
  KEP-4568). client-go retries a 429; our client does not, so the install waits for a
  LIST to answer (measured: ~50 ms after discovery).
- A create within 2 s of the CRD's Established transition is held for 2 s, so that
  other API servers of an HA control plane see the CRD too
  (``pkg/apiserver/customresource_handler.go``). Not waited for here: the first
  create simply takes that long.

When a webhook configuration takes effect (same versions):

- The admission plugins do not read configurations from storage: they list them from
  the API server's own informer (``pkg/admission/configuration/
  mutating_webhook_manager.go`` and ``validating_webhook_manager.go``, rebuilt lazily
  after each informer event). A configuration applies from the first request after
  its watch event reaches that informer — shortly after the write returned — and a
  deleted one keeps being called until its delete event does.
- A webhook that cannot be reached fails the request with ``failed calling webhook
  "<name>": …`` (``pkg/util/webhook/error.go``), as a 500 ``InternalError`` when its
  ``failurePolicy`` is ``Fail`` (``mutating/dispatcher.go``, ``validating/dispatcher.go``).
- Dry-run requests call every webhook whose ``sideEffects`` is ``None`` or
  ``NoneOnDryRun`` (the only values ``v1`` allows), and store nothing.

So each configuration is installed with one more webhook, first in its list: the
probe :data:`PROBE_WEBHOOK`, for CREATE of ConfigMaps labelled :data:`PROBE_LABEL` with a
token of that configuration's own, pointed at a local port that is bound but never
listens (every call is refused at once), ``failurePolicy: Fail``. A dry-run create of
such a ConfigMap in ``default`` is refused naming the probe exactly when that version
of the configuration is applied, and is accepted once its deletion is. No sleeping.
(A webhook of the test's own that refuses such a ConfigMap would hide the probe's
answer; the wait then runs out saying what refused it.)
Measured on 2 cores (kube-apiserver 1.36.3, 320 creates and deletes of a configuration):
the probe applied a median 1.5–1.8 ms after the create returned; at most 4 ms when
idle, 20 ms after a create and 52 ms after a delete at load average 6. A dry-run sent
right after the write missed the change in 1 of 120 creates idle and 9 of 200 under
load (deletes: 3 of 120, 9 of 200) — rare enough to pass most runs, so it must be
waited for, not slept over.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import dataclasses
import datetime as dt
import ipaddress
import json
import os
import secrets
import shutil
import socket
import tempfile
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import yaml

from reconciler.client import Client
from reconciler.envtest._certs import VALIDITY, KeyPair, TinyCA
from reconciler.errors import AlreadyExists, ApiError, Conflict, NotFound, TooManyRequests
from reconciler.resource import CONFIG_MAP, CRD, Obj, ResourceType
from reconciler.webhook.conversion import CONVERT_PATH
from reconciler.webhook.server import DEFAULT_CERT_NAME, DEFAULT_KEY_NAME, WebhookServerOptions

__all__ = [
    "DEFAULT_MAX_TIME",
    "DEFAULT_POLL_INTERVAL",
    "MUTATING_WEBHOOK_CONFIGURATION",
    "PROBE_LABEL",
    "PROBE_WEBHOOK",
    "VALIDATING_WEBHOOK_CONFIGURATION",
    "Manifests",
    "ServingCerts",
    "WebhookEnvironment",
    "WebhookInstallError",
    "WebhookInstallOptions",
    "install_webhooks",
    "point_conversion_at",
    "point_webhooks_at",
    "read_manifests",
    "webhook_url",
    "with_probe",
]

MUTATING_WEBHOOK_CONFIGURATION = ResourceType(
    "admissionregistration.k8s.io",
    "v1",
    "MutatingWebhookConfiguration",
    "mutatingwebhookconfigurations",
    namespaced=False,
)
VALIDATING_WEBHOOK_CONFIGURATION = ResourceType(
    "admissionregistration.k8s.io",
    "v1",
    "ValidatingWebhookConfiguration",
    "validatingwebhookconfigurations",
    namespaced=False,
)
_CONFIGURATION_KINDS = (MUTATING_WEBHOOK_CONFIGURATION.kind, VALIDATING_WEBHOOK_CONFIGURATION.kind)

DEFAULT_MAX_TIME = 10.0
"""controller-runtime envtest's ``defaultMaxWait``, for each wait of an install."""
DEFAULT_POLL_INTERVAL = 0.1
"""controller-runtime envtest's ``defaultPollInterval``."""

PROBE_WEBHOOK = "probe.envtest.reconciler.local"
"""The webhook added to every installed configuration to tell when it is applied."""
PROBE_LABEL = "envtest.reconciler.local/webhook-probe"
"""The label (its value: one configuration's token) that the probe webhook matches."""
PROBE_NAMESPACE = "default"
"""Where probe ConfigMaps are (dry-run) created: a namespace every cluster has."""

_MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
_ADMISSION_V1 = "admissionregistration.k8s.io/v1"
_DATA_LINK = "..data"


class WebhookInstallError(RuntimeError):
    """Manifests could not be read, or the API server did not apply them in time."""


@dataclasses.dataclass(frozen=True)
class WebhookInstallOptions:
    """What to install and where the test's webhook server will listen."""

    paths: Sequence[Path] = ()
    """Files or folders of Mutating/ValidatingWebhookConfigurations and CRDs."""
    mutating_webhooks: Sequence[Mapping[str, Any]] = ()
    validating_webhooks: Sequence[Mapping[str, Any]] = ()
    crds: Sequence[Mapping[str, Any]] = ()
    host: str = "127.0.0.1"
    """Where the webhook server listens and the API server calls it."""
    port: int = 0
    """0: a free port, picked when installing."""
    cert_dir: Path | None = None
    """Where tls.crt and tls.key are written; None: a temporary folder, removed on exit."""
    max_time: float = DEFAULT_MAX_TIME
    poll_interval: float = DEFAULT_POLL_INTERVAL


# -- manifests (pure, but for reading the files) ------------------------------------------


@dataclasses.dataclass(frozen=True)
class Manifests:
    mutating_webhooks: tuple[Obj, ...] = ()
    validating_webhooks: tuple[Obj, ...] = ()
    crds: tuple[Obj, ...] = ()


def read_manifests(paths: Sequence[Path]) -> Manifests:
    """The webhook configurations and CRDs in ``paths`` (files, or folders read one level
    deep in name order); documents of other kinds are skipped."""
    mutating: list[Obj] = []
    validating: list[Obj] = []
    crds: list[Obj] = []
    for path in paths:
        if not path.exists():
            raise WebhookInstallError(f"{path}: no such file or folder")
        files = (
            sorted(p for p in path.iterdir() if p.suffix in _MANIFEST_SUFFIXES)
            if path.is_dir()
            else [path]
        )
        for file in files:
            try:
                docs = list(yaml.safe_load_all(file.read_text()))
            except yaml.YAMLError as err:
                raise WebhookInstallError(f"{file}: {err}") from err
            for doc in docs:
                _sort_document(doc, str(file), mutating, validating, crds)
    return Manifests(tuple(mutating), tuple(validating), tuple(crds))


def _sort_document(
    doc: object, source: str, mutating: list[Obj], validating: list[Obj], crds: list[Obj]
) -> None:
    if not isinstance(doc, dict):
        return
    kind = doc.get("kind")
    if kind in _CONFIGURATION_KINDS:
        if doc.get("apiVersion") != _ADMISSION_V1:
            name = (doc.get("metadata") or {}).get("name")
            raise WebhookInstallError(
                f"{source}: {kind} {name!r} is {doc.get('apiVersion')}; only {_ADMISSION_V1}"
                " is supported"
            )
        (mutating if kind == MUTATING_WEBHOOK_CONFIGURATION.kind else validating).append(doc)
    elif kind == CRD.kind:
        crds.append(doc)


def webhook_url(host: str, port: int, path: str = "") -> str:
    """``https://host:port/path``, with an IPv6 host in brackets."""
    try:
        bracketed = ipaddress.ip_address(host).version == 6
    except ValueError:
        bracketed = False
    netloc = f"[{host}]:{port}" if bracketed else f"{host}:{port}"
    if path and not path.startswith("/"):
        path = "/" + path
    return f"https://{netloc}{path}"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def point_webhooks_at(config: Mapping[str, Any], base_url: str, ca_pem: bytes) -> Obj:
    """A copy of a webhook configuration whose webhooks call ``base_url`` (a ``service``
    becomes ``base_url`` + its path) and trust ``ca_pem``."""
    out = copy.deepcopy(dict(config))
    for hook in out.get("webhooks") or []:
        client_config = hook.setdefault("clientConfig", {})
        client_config["caBundle"] = _b64(ca_pem)
        service = client_config.pop("service", None)
        if service is not None:
            client_config["url"] = base_url + (service.get("path") or "/")
    return out


def point_conversion_at(crd: Mapping[str, Any], base_url: str, ca_pem: bytes) -> Obj:
    """A copy of a CRD whose conversion webhook, if it has one, calls ``base_url`` +
    ``/convert`` and trusts ``ca_pem``; any other CRD is returned unchanged."""
    out = copy.deepcopy(dict(crd))
    conversion = (out.get("spec") or {}).get("conversion") or {}
    if conversion.get("strategy") != "Webhook":
        return out
    webhook = conversion.setdefault("webhook", {})
    webhook["clientConfig"] = {"url": base_url + CONVERT_PATH, "caBundle": _b64(ca_pem)}
    webhook["conversionReviewVersions"] = ["v1", "v1beta1"]
    return out


def with_probe(config: Mapping[str, Any], token: str, probe_url: str) -> Obj:
    """A copy of a webhook configuration with the probe webhook first in its list."""
    out = copy.deepcopy(dict(config))
    probe: Obj = {
        "name": PROBE_WEBHOOK,
        "clientConfig": {"url": probe_url},
        "rules": [
            {
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "operations": ["CREATE"],
                "resources": ["configmaps"],
                "scope": "Namespaced",
            }
        ],
        "objectSelector": {"matchLabels": {PROBE_LABEL: token}},
        "failurePolicy": "Fail",
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
        "timeoutSeconds": 1,
    }
    if out.get("kind") == MUTATING_WEBHOOK_CONFIGURATION.kind:
        probe["reinvocationPolicy"] = "Never"
    out["webhooks"] = [probe, *(out.get("webhooks") or [])]
    return out


# -- certificates -------------------------------------------------------------------------


class ServingCerts:
    """A CA and the serving certificate it signed, published in ``cert_dir``.

    Invariant: at every instant ``tls.crt`` and ``tls.key`` (symlinks through ``..data``)
    name one complete pair; :meth:`rotate` replaces both with one rename, as the
    kubelet updates a Secret volume (``..data`` → ``..<timestamp>``, swapped through
    ``..data_tmp``, the previous folder removed).
    """

    def __init__(self, cert_dir: Path, host: str) -> None:
        self.cert_dir = cert_dir
        self.host = host
        self._ca = TinyCA("reconciler-envtest-webhook-ca")
        self.current = self._publish(self._ca.serving(host))

    @property
    def ca_pem(self) -> bytes:
        return self._ca.cert_pem

    def rotate(self, *, valid_for: dt.timedelta = VALIDITY) -> KeyPair:
        """A new serving certificate from the same CA, valid for ``valid_for``,
        published in place of the old."""
        self.current = self._publish(self._ca.serving(self.host, valid_for=valid_for))
        return self.current

    def _publish(self, pair: KeyPair) -> KeyPair:
        self.cert_dir.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y_%m_%d_%H_%M_%S", time.gmtime())
        version = Path(tempfile.mkdtemp(prefix=f"..{stamp}.", dir=self.cert_dir))
        (version / DEFAULT_CERT_NAME).write_bytes(pair.cert_pem)
        (version / DEFAULT_KEY_NAME).write_bytes(pair.key_pem)
        (version / DEFAULT_KEY_NAME).chmod(0o600)
        data = self.cert_dir / _DATA_LINK
        previous = os.readlink(data) if data.is_symlink() else None
        swap = self.cert_dir / f"{_DATA_LINK}_tmp"
        swap.unlink(missing_ok=True)
        swap.symlink_to(version.name)
        os.replace(swap, data)
        for name in (DEFAULT_CERT_NAME, DEFAULT_KEY_NAME):
            link = self.cert_dir / name
            if not link.is_symlink():
                link.unlink(missing_ok=True)
                link.symlink_to(f"{_DATA_LINK}/{name}")
        if previous is not None:
            shutil.rmtree(self.cert_dir / previous, ignore_errors=True)
        return pair


# -- installing ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class WebhookEnvironment:
    """What the test's webhook server needs to serve what the API server was told."""

    host: str
    port: int
    certs: ServingCerts
    mutating_webhooks: tuple[Obj, ...] = ()
    """As installed: pointed at the server, with the probe first."""
    validating_webhooks: tuple[Obj, ...] = ()
    crds: tuple[Obj, ...] = ()

    @property
    def cert_dir(self) -> Path:
        return self.certs.cert_dir

    @property
    def ca_pem(self) -> bytes:
        return self.certs.ca_pem

    def url(self, path: str = "") -> str:
        return webhook_url(self.host, self.port, path)

    def rotate_serving_cert(self, *, valid_for: dt.timedelta = VALIDITY) -> KeyPair:
        """A new serving certificate from the same CA, in place of the old one."""
        return self.certs.rotate(valid_for=valid_for)

    def server_options(self, **overrides: Any) -> WebhookServerOptions:
        """Options for a webhook server that serves what the API server was told:
        ``host``, ``port`` and the cert dir; ``overrides`` change any field."""
        options = WebhookServerOptions(host=self.host, port=self.port, cert_dir=self.cert_dir)
        return dataclasses.replace(options, **overrides)


@asynccontextmanager
async def install_webhooks(
    client: Client, options: WebhookInstallOptions = WebhookInstallOptions()
) -> AsyncIterator[WebhookEnvironment]:
    """Install the webhooks and CRDs of ``options`` pointed at a local server, wait
    until the API server applies them, and remove them (waiting again) on exit.

    Raises :class:`WebhookInstallError` when a wait runs out of ``max_time``.
    """
    loaded = read_manifests(options.paths)
    cert_dir = options.cert_dir or Path(tempfile.mkdtemp(prefix="envtest-serving-certs-"))
    try:
        certs = ServingCerts(cert_dir, options.host)
        port = options.port or _free_port(options.host)
        base = webhook_url(options.host, port)
        ca = certs.ca_pem
        with _refusing_port() as probe_port:
            probe_url = webhook_url("127.0.0.1", probe_port, "/probe")
            env = WebhookEnvironment(
                host=options.host,
                port=port,
                certs=certs,
                mutating_webhooks=tuple(
                    with_probe(point_webhooks_at(c, base, ca), secrets.token_hex(8), probe_url)
                    for c in (*loaded.mutating_webhooks, *options.mutating_webhooks)
                ),
                validating_webhooks=tuple(
                    with_probe(point_webhooks_at(c, base, ca), secrets.token_hex(8), probe_url)
                    for c in (*loaded.validating_webhooks, *options.validating_webhooks)
                ),
                crds=tuple(point_conversion_at(c, base, ca) for c in (*loaded.crds, *options.crds)),
            )
            installer = _Installer(client, options.max_time, options.poll_interval)
            try:
                await installer.install(env)
                yield env
            finally:
                # Also after a failed install or a cancelled test: a configuration left
                # behind would call a server that is gone, for every later test.
                with anyio.CancelScope(shield=True):
                    await installer.uninstall(env)
    finally:
        if options.cert_dir is None:
            shutil.rmtree(cert_dir, ignore_errors=True)


def _free_port(host: str) -> int:
    """A port free on ``host`` now (the server binds it later: envtest's race, too)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _refusing_port() -> Iterator[int]:
    """A loopback port that refuses every connection while the block runs: bound (so
    nothing else can take it) but never listening (so the kernel answers a reset)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])


def _probe_token(config: Mapping[str, Any]) -> str:
    probe = (config.get("webhooks") or [{}])[0]
    token: str = probe["objectSelector"]["matchLabels"][PROBE_LABEL]
    return token


def _name(obj: Mapping[str, Any]) -> str:
    name: str = obj["metadata"]["name"]
    return name


class _Installer:
    def __init__(self, client: Client, max_time: float, poll_interval: float) -> None:
        self._client = client
        self._max_time = max_time
        self._poll = poll_interval

    async def install(self, env: WebhookEnvironment) -> None:
        for crd in env.crds:
            await self._apply(CRD, crd)
        for crd in env.crds:
            await self._wait(f"CRD {_name(crd)} established and served", self._served(crd))
        for rt, configs in self._configurations(env):
            for config in configs:
                await self._apply(rt, config)
        for rt, configs in self._configurations(env):
            for config in configs:
                await self._wait(
                    f"{rt.kind} {_name(config)} applied by the API server",
                    self._probe_refused(_probe_token(config), expect=True),
                )

    async def uninstall(self, env: WebhookEnvironment) -> None:
        for rt, configs in self._configurations(env):
            for config in configs:
                with contextlib.suppress(NotFound):
                    await self._client.delete(rt, _name(config))
        for rt, configs in self._configurations(env):
            for config in configs:
                await self._wait(
                    f"{rt.kind} {_name(config)} no longer applied",
                    self._probe_refused(_probe_token(config), expect=False),
                )
        for crd in env.crds:
            with contextlib.suppress(NotFound):
                await self._client.delete(CRD, _name(crd))
        for crd in env.crds:
            await self._wait(f"CRD {_name(crd)} deleted", self._gone(CRD, _name(crd)))

    @staticmethod
    def _configurations(env: WebhookEnvironment) -> list[tuple[ResourceType, tuple[Obj, ...]]]:
        return [
            (MUTATING_WEBHOOK_CONFIGURATION, env.mutating_webhooks),
            (VALIDATING_WEBHOOK_CONFIGURATION, env.validating_webhooks),
        ]

    async def _apply(self, rt: ResourceType, obj: Obj) -> None:
        """Create, or replace what is there (envtest's ensureCreated), retrying conflicts."""
        try:
            await self._client.create(rt, obj)
            return
        except AlreadyExists:
            pass

        async def replaced() -> tuple[bool, str]:
            existing = await self._client.get(rt, _name(obj))
            body = copy.deepcopy(obj)
            body["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
            try:
                await self._client.replace(rt, body)
            except Conflict as err:
                return False, str(err)
            return True, "replaced"

        await self._wait(f"{rt.kind} {_name(obj)} replaced", replaced)

    async def _wait(self, what: str, check: Callable[[], Awaitable[tuple[bool, str]]]) -> None:
        """Poll ``check`` (done?, what was seen) until done, at most ``max_time``."""
        seen = "nothing yet"
        try:
            with anyio.fail_after(self._max_time):
                while True:
                    done, seen = await check()
                    if done:
                        return
                    await anyio.sleep(self._poll)
        except TimeoutError:
            raise WebhookInstallError(
                f"timed out after {self._max_time}s waiting for {what}; last seen: {seen}"
            ) from None

    def _probe_refused(
        self, token: str, *, expect: bool
    ) -> Callable[[], Awaitable[tuple[bool, str]]]:
        body: Obj = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"generateName": "envtest-webhook-probe-", "labels": {PROBE_LABEL: token}},
        }
        path = CONFIG_MAP.path(PROBE_NAMESPACE) + "?dryRun=All"
        refusal = f"failed calling webhook {json.dumps(PROBE_WEBHOOK)}"

        async def check() -> tuple[bool, str]:
            try:
                await self._client.raw("POST", path, body)
            except ApiError as err:
                if refusal in err.message:
                    return expect, "the probe refused the dry-run create"
                # Another webhook matched the probe ConfigMap and refused it first:
                # this answer says nothing about ours.
                return False, f"the dry-run create was refused: {err}"
            return not expect, "the dry-run create was accepted"

        return check

    def _served(self, crd: Obj) -> Callable[[], Awaitable[tuple[bool, str]]]:
        spec = crd["spec"]
        plural = spec["names"]["plural"]
        served = [v["name"] for v in spec["versions"] if v.get("served")]
        storage = next(v["name"] for v in spec["versions"] if v.get("storage"))

        async def check() -> tuple[bool, str]:
            try:
                stored = await self._client.get(CRD, _name(crd))
            except NotFound:
                return False, "no CRD"
            conditions = (stored.get("status") or {}).get("conditions") or []
            if not any(
                c.get("type") == "Established" and c.get("status") == "True" for c in conditions
            ):
                return False, f"conditions {conditions}"
            for version in served:
                try:
                    resources = await self._client.raw("GET", f"/apis/{spec['group']}/{version}")
                except NotFound:
                    return False, f"{spec['group']}/{version} not in discovery"
                if plural not in {r.get("name") for r in resources.get("resources") or []}:
                    return False, f"{plural} not in {spec['group']}/{version} discovery"
            # One watch cache serves every version; listing the storage version needs no
            # conversion, so it answers even while stored objects await the webhook
            # server this install is for.
            try:
                await self._client.raw("GET", f"/apis/{spec['group']}/{storage}/{plural}?limit=1")
            except TooManyRequests as err:
                return False, f"listing {spec['group']}/{storage} {plural}: {err.message}"
            return True, "established and served"

        return check

    def _gone(self, rt: ResourceType, name: str) -> Callable[[], Awaitable[tuple[bool, str]]]:
        async def check() -> tuple[bool, str]:
            try:
                obj = await self._client.get(rt, name)
            except NotFound:
                return True, "gone"
            return False, f"still there (finalizers {obj['metadata'].get('finalizers')})"

        return check
