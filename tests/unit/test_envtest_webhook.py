"""envtest's webhook install, without an API server: reading manifests, pointing them at
the local server, the probe webhook, and the serving certificates' directory."""

from __future__ import annotations

import copy
import datetime as dt
import ipaddress
import os
import socket
import ssl
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from reconciler.envtest.webhook import (
    PROBE_LABEL,
    PROBE_WEBHOOK,
    ServingCerts,
    WebhookEnvironment,
    WebhookInstallError,
    _refusing_port,
    point_conversion_at,
    point_webhooks_at,
    read_manifests,
    webhook_url,
    with_probe,
)
from reconciler.resource import Obj
from reconciler.webhook.server import WebhookServerOptions

FIXTURES = Path(__file__).parent.parent / "integration" / "fixtures" / "webhook"
CA_PEM = b"-----BEGIN CERTIFICATE-----\nfake\n-----END CERTIFICATE-----\n"
CA_B64 = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCmZha2UKLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQo="
BASE = "https://127.0.0.1:9443"


def configuration(kind: str, *hooks: Obj) -> Obj:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": kind,
        "metadata": {"name": "hooks"},
        "webhooks": list(hooks),
    }


def hook(name: str, client_config: Obj) -> Obj:
    return {"name": name, "clientConfig": client_config, "sideEffects": "None"}


# -- reading manifests --------------------------------------------------------------------
def test_a_kubebuilder_folder_reads_as_configurations_and_crds(tmp_path: Path) -> None:
    # The fixtures hold a Service too, as kubebuilder's config/webhook does: skipped.
    loaded = read_manifests([FIXTURES])
    assert [c["metadata"]["name"] for c in loaded.mutating_webhooks] == ["widget-defaulter"]
    assert [c["metadata"]["name"] for c in loaded.validating_webhooks] == ["widget-validator"]
    assert [c["metadata"]["name"] for c in loaded.crds] == ["widgets.webhooktest.reconciler.local"]


def test_files_folders_and_every_document_are_read_other_kinds_skipped(tmp_path: Path) -> None:
    folder = tmp_path / "webhook"
    folder.mkdir()
    mutating = configuration("MutatingWebhookConfiguration")
    validating = configuration("ValidatingWebhookConfiguration")
    (folder / "b.yaml").write_text(yaml.safe_dump_all([validating, None, mutating]))
    (folder / "a.json").write_text('{"apiVersion": "v1", "kind": "ConfigMap"}')
    (folder / "kustomization.yaml").write_text("resources: [b.yaml]\n")
    (folder / "notes.txt").write_text("kind: MutatingWebhookConfiguration\n")
    crd = tmp_path / "crd.yml"
    crd.write_text(yaml.safe_dump({"kind": "CustomResourceDefinition", "spec": {}}))

    loaded = read_manifests([folder, crd])

    assert loaded.mutating_webhooks == (mutating,)
    assert loaded.validating_webhooks == (validating,)
    assert loaded.crds == ({"kind": "CustomResourceDefinition", "spec": {}},)


def test_only_v1_configurations_are_read(tmp_path: Path) -> None:
    old = configuration("ValidatingWebhookConfiguration")
    old["apiVersion"] = "admissionregistration.k8s.io/v1beta1"
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump(old))
    with pytest.raises(WebhookInstallError) as refused:
        read_manifests([path])
    assert "'hooks' is admissionregistration.k8s.io/v1beta1; only" in str(refused.value)


def test_a_missing_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(WebhookInstallError, match="no such file or folder"):
        read_manifests([tmp_path / "absent"])


# -- pointing at the local server ---------------------------------------------------------
@pytest.mark.parametrize(
    ("host", "path", "url"),
    [
        ("127.0.0.1", "/convert", "https://127.0.0.1:9443/convert"),
        ("::1", "/convert", "https://[::1]:9443/convert"),
        ("localhost", "mutate-x", "https://localhost:9443/mutate-x"),
        ("127.0.0.1", "", "https://127.0.0.1:9443"),
    ],
)
def test_webhook_url(host: str, path: str, url: str) -> None:
    assert webhook_url(host, 9443, path) == url


def test_webhooks_are_pointed_at_the_local_server_with_the_ca() -> None:
    original = configuration(
        "MutatingWebhookConfiguration",
        hook("a.kb.io", {"service": {"name": "s", "namespace": "system", "path": "/mutate-a"}}),
        hook("b.kb.io", {"service": {"name": "s", "namespace": "system", "port": 443}}),
        hook("c.kb.io", {"url": "https://elsewhere:8443/c"}),
    )
    before = copy.deepcopy(original)

    pointed = point_webhooks_at(original, BASE, CA_PEM)

    assert [h["clientConfig"] for h in pointed["webhooks"]] == [
        {"url": f"{BASE}/mutate-a", "caBundle": CA_B64},
        {"url": f"{BASE}/", "caBundle": CA_B64},
        {"url": "https://elsewhere:8443/c", "caBundle": CA_B64},
    ]
    assert original == before


def test_a_webhook_conversion_is_pointed_at_convert() -> None:
    crd = read_manifests([FIXTURES / "crd.yaml"]).crds[0]
    before = copy.deepcopy(crd)

    pointed = point_conversion_at(crd, BASE, CA_PEM)

    assert pointed["spec"]["conversion"] == {
        "strategy": "Webhook",
        "webhook": {
            "clientConfig": {"url": f"{BASE}/convert", "caBundle": CA_B64},
            "conversionReviewVersions": ["v1", "v1beta1"],
        },
    }
    assert crd == before
    assert {k: v for k, v in pointed["spec"].items() if k != "conversion"} == {
        k: v for k, v in crd["spec"].items() if k != "conversion"
    }


@pytest.mark.parametrize("conversion", [None, {"strategy": "None"}])
def test_a_crd_without_conversion_webhook_is_unchanged(conversion: Obj | None) -> None:
    crd: Obj = {"kind": "CustomResourceDefinition", "spec": {"group": "g"}}
    if conversion is not None:
        crd["spec"]["conversion"] = conversion
    assert point_conversion_at(crd, BASE, CA_PEM) == crd


@pytest.mark.parametrize(
    ("kind", "reinvocation"),
    [("MutatingWebhookConfiguration", "Never"), ("ValidatingWebhookConfiguration", None)],
)
def test_the_probe_comes_first_and_matches_only_its_token(
    kind: str, reinvocation: str | None
) -> None:
    original = configuration(kind, hook("a.kb.io", {"url": f"{BASE}/a"}))

    probed = with_probe(original, "t0ken", "https://127.0.0.1:1/probe")

    probe, *rest = probed["webhooks"]
    assert rest == original["webhooks"]
    assert probe["name"] == PROBE_WEBHOOK
    assert probe["objectSelector"] == {"matchLabels": {PROBE_LABEL: "t0ken"}}
    assert probe["clientConfig"] == {"url": "https://127.0.0.1:1/probe"}
    assert probe["rules"][0]["resources"] == ["configmaps"]
    assert probe["rules"][0]["operations"] == ["CREATE"]
    assert (probe["failurePolicy"], probe["sideEffects"]) == ("Fail", "None")
    assert probe.get("reinvocationPolicy") == reinvocation
    assert len(original["webhooks"]) == 1


def test_the_probe_port_refuses_connections() -> None:
    with _refusing_port() as port, pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


# -- serving certificates -----------------------------------------------------------------
def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _loads_as_a_pair(cert_dir: Path) -> bool:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_dir / "tls.crt", cert_dir / "tls.key")  # raises on a mismatch
    return True


def test_the_cert_dir_holds_a_pair_for_localhost_and_the_host(tmp_path: Path) -> None:
    certs = ServingCerts(tmp_path / "certs", "127.0.0.1")

    cert = _cert(certs.cert_dir / "tls.crt")
    ca = x509.load_pem_x509_certificate(certs.ca_pem)
    cert.verify_directly_issued_by(ca)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert _loads_as_a_pair(certs.cert_dir)
    assert cert.serial_number == certs.current.serial_number


def test_a_dns_host_is_named_in_the_certificate(tmp_path: Path) -> None:
    certs = ServingCerts(tmp_path, "webhook.example")
    sans = (
        _cert(tmp_path / "tls.crt")
        .extensions.get_extension_for_class(x509.SubjectAlternativeName)
        .value
    )
    assert sans.get_values_for_type(x509.DNSName) == ["localhost", "webhook.example"]
    assert certs.host == "webhook.example"


def test_the_files_are_symlinks_through_one_data_link(tmp_path: Path) -> None:
    ServingCerts(tmp_path, "127.0.0.1")
    assert os.readlink(tmp_path / "tls.crt") == "..data/tls.crt"
    assert os.readlink(tmp_path / "tls.key") == "..data/tls.key"
    assert (tmp_path / "..data").is_symlink()
    assert oct((tmp_path / "tls.key").stat().st_mode & 0o777) == oct(0o600)


def test_rotation_swaps_the_pair_for_one_from_the_same_ca(tmp_path: Path) -> None:
    certs = ServingCerts(tmp_path, "127.0.0.1")
    ca = x509.load_pem_x509_certificate(certs.ca_pem)
    serials = {certs.current.serial_number}
    for _ in range(3):
        before = os.readlink(tmp_path / "..data")
        pair = certs.rotate()
        cert = _cert(tmp_path / "tls.crt")
        assert cert.serial_number == pair.serial_number not in serials
        serials.add(pair.serial_number)
        cert.verify_directly_issued_by(ca)
        assert _loads_as_a_pair(tmp_path)
        # Both names resolve into the one new folder; the previous one is gone.
        after = os.readlink(tmp_path / "..data")
        assert after != before
        assert not (tmp_path / before).exists()
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            ["..data", after, "tls.crt", "tls.key"]
        )


def test_a_rotated_certificate_can_be_short_lived(tmp_path: Path) -> None:
    certs = ServingCerts(tmp_path, "127.0.0.1")
    start = dt.datetime.now(dt.UTC)
    certs.rotate(valid_for=dt.timedelta(seconds=3))
    expiry = _cert(tmp_path / "tls.crt").not_valid_after_utc
    assert start < expiry <= start + dt.timedelta(seconds=4)


def test_server_options_serve_what_the_api_server_was_told(tmp_path: Path) -> None:
    env = WebhookEnvironment(
        host="127.0.0.1", port=12345, certs=ServingCerts(tmp_path, "127.0.0.1")
    )

    options = env.server_options(cert_poll_interval=0.5)

    assert options == WebhookServerOptions(
        host="127.0.0.1", port=12345, cert_dir=tmp_path, cert_poll_interval=0.5
    )
    assert env.url("/convert") == "https://127.0.0.1:12345/convert"
