"""The certificate watcher: content-based reload, Secret-style symlink swaps, bad pairs.

:class:`MountedSecret` writes a pair the way the kubelet updates a mounted Secret (what
cert-manager's rotations go through): a new hidden directory, then one atomic rename of
the ``..data`` symlink; ``tls.crt`` and ``tls.key`` are symlinks through ``..data``, so
their own mtimes never change. The integration tests of the server use it too.
"""

from __future__ import annotations

import itertools
import os
import ssl
from pathlib import Path

import pytest
from cryptography import x509

from reconciler.envtest._certs import KeyPair, TinyCA
from reconciler.webhook.certwatcher import CertificateError, CertWatcher


class MountedSecret:
    """A directory laid out as the kubelet mounts a Secret, updated atomically."""

    _versions = itertools.count()

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def write(self, cert_pem: bytes, key_pem: bytes) -> None:
        version = self.root / f"..2024_01_01_00_00_{next(self._versions):02d}"
        version.mkdir()
        (version / "tls.crt").write_bytes(cert_pem)
        (version / "tls.key").write_bytes(key_pem)
        tmp = self.root / "..data_tmp"
        tmp.symlink_to(version.name)
        os.replace(tmp, self.root / "..data")  # the one atomic step
        for name in ("tls.crt", "tls.key"):
            if not (self.root / name).is_symlink():
                (self.root / name).symlink_to(f"..data/{name}")

    def write_pair(self, pair: KeyPair) -> int:
        """Write ``pair``; returns its certificate's serial number."""
        self.write(pair.cert_pem, pair.key_pem)
        return serial(pair.cert_pem)


def serial(cert_pem: bytes) -> int:
    return x509.load_pem_x509_certificate(cert_pem).serial_number


@pytest.fixture
def ca() -> TinyCA:
    return TinyCA("webhook-test-ca")


def watcher_for(secret: MountedSecret) -> CertWatcher:
    return CertWatcher(secret.root / "tls.crt", secret.root / "tls.key", poll_interval=0.05)


def test_reload_follows_content_through_a_symlink_swap(ca: TinyCA, tmp_path: Path) -> None:
    secret = MountedSecret(tmp_path)
    secret.write_pair(ca.serving())
    watcher = watcher_for(secret)
    first = watcher.current
    cert_mtime = os.stat(secret.root / "tls.crt", follow_symlinks=False).st_mtime_ns
    assert watcher.reload() is False  # nothing changed: the context stays
    assert watcher.current is first

    secret.write_pair(ca.serving())
    # The symlink itself was not touched: only content tells the change.
    assert os.stat(secret.root / "tls.crt", follow_symlinks=False).st_mtime_ns == cert_mtime
    assert watcher.reload() is True
    assert watcher.current is not first
    assert watcher.reload() is False


def test_same_content_rewritten_is_no_change(ca: TinyCA, tmp_path: Path) -> None:
    secret = MountedSecret(tmp_path)
    pair = ca.serving()
    secret.write_pair(pair)
    watcher = watcher_for(secret)
    secret.write_pair(pair)  # a new directory, new mtimes, the same bytes
    assert watcher.reload() is False


def test_a_bad_pair_keeps_the_current_one_and_is_reported_once(
    ca: TinyCA, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = MountedSecret(tmp_path)
    secret.write_pair(ca.serving())
    watcher = watcher_for(secret)
    good = watcher.current
    other = ca.serving()
    secret.write(other.cert_pem, ca.serving().key_pem)  # a key that is not the cert's
    assert watcher.reload() is False
    assert watcher.current is good
    assert watcher.reload() is False
    assert capsys.readouterr().out.count("cannot load new certificate") == 1

    secret.write(b"not a certificate", b"not a key")
    assert watcher.reload() is False
    assert watcher.current is good
    (secret.root / "..data").unlink()  # files gone: read errors are logged, pair kept
    assert watcher.reload() is False
    assert watcher.current is good

    secret.write_pair(ca.serving())
    assert watcher.reload() is True
    assert watcher.current is not good


def test_the_callback_moves_new_connections_to_the_current_pair(ca: TinyCA, tmp_path: Path) -> None:
    secret = MountedSecret(tmp_path)
    secret.write_pair(ca.serving())
    watcher = watcher_for(secret)
    assert watcher.server_context.sni_callback is not None
    secret.write_pair(ca.serving())
    watcher.reload()

    class Conn:
        context: ssl.SSLContext | None = None

    conn = Conn()
    watcher.server_context.sni_callback(conn, None, watcher.server_context)  # type: ignore[arg-type]
    assert conn.context is watcher.current


def test_a_pair_that_does_not_load_at_start_is_an_error(ca: TinyCA, tmp_path: Path) -> None:
    secret = MountedSecret(tmp_path)
    with pytest.raises(CertificateError, match=r"tls\.crt"):
        watcher_for(secret)
    pair = ca.serving()
    secret.write(pair.cert_pem, ca.serving().key_pem)
    with pytest.raises(CertificateError, match="cannot load certificate"):
        watcher_for(secret)


def test_contexts_accept_tls_1_2_and_newer(ca: TinyCA, tmp_path: Path) -> None:
    secret = MountedSecret(tmp_path)
    secret.write_pair(ca.serving())
    watcher = watcher_for(secret)
    for ctx in (watcher.server_context, watcher.current):
        assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2


def test_poll_interval_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="poll_interval"):
        CertWatcher(tmp_path / "c", tmp_path / "k", poll_interval=0)
