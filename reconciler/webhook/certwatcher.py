"""The serving certificate, read from files and reloaded when their content changes.

As controller-runtime's ``pkg/certwatcher``: the pair is read once at start (a pair that
does not load is a start-up error), then re-read every ``poll_interval`` seconds
(controller-runtime: 10 s, besides fsnotify); a pair that loads replaces the served one
for new connections, a pair that does not is logged and the previous one is kept.

Change is detected by **content**, never by modification time: cert-manager and the
kubelet update a mounted Secret by writing a new hidden directory and flipping the
``..data`` symlink, so the files' own mtimes may not move at all, while their bytes do
(controller-runtime compares the parsed certificate and the key's PEM bytes).

How new connections get the new pair: every connection starts its handshake on
:attr:`CertWatcher.server_context`, whose ``sni_callback`` moves the connection onto
the context of the pair loaded last. OpenSSL calls that callback on every handshake,
with ``None`` as the server name when the client sends no SNI — which is what Go's
client does for an IP-address URL such as ``https://10.96.0.10:443`` (checked in
``tests/integration/test_webhook_server.py``). Each pair gets a fresh, fully loaded
context, so a failed load can never leave a half-updated context serving.

Invariants: :attr:`current` always holds a pair that loaded; the fingerprint of the
files (their bytes) changes :attr:`current` only through a successful load.
"""

from __future__ import annotations

import hashlib
import ssl
from dataclasses import dataclass
from pathlib import Path

import anyio
import structlog

__all__ = ["DEFAULT_CERT_POLL_INTERVAL", "CertWatcher", "CertificateError"]

log = structlog.get_logger("reconciler.webhook.certwatcher")

DEFAULT_CERT_POLL_INTERVAL = 10.0
"""Seconds between reads of the pair: controller-runtime's ``defaultWatchInterval``."""


class CertificateError(Exception):
    """The certificate and key cannot be read or do not form a pair."""


@dataclass(frozen=True)
class _Loaded:
    context: ssl.SSLContext
    fingerprint: str  # sha256 over both files' bytes


def new_server_context() -> ssl.SSLContext:
    """A TLS server context as the webhook server uses it: TLS 1.2 or newer, HTTP/1.1.

    Go's ``crypto/tls`` serves TLS 1.2 and 1.3 by default, and kubebuilder's scaffold
    turns HTTP/2 off (``--enable-http2=false``, after CVE-2023-44487); aiohttp speaks
    HTTP/1.1 only, so ALPN says so.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class CertWatcher:
    """Serves the pair at ``cert_path``/``key_path``; :meth:`run` keeps it current."""

    def __init__(self, cert_path: Path, key_path: Path, *, poll_interval: float) -> None:
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be positive, got {poll_interval}")
        self.cert_path = cert_path
        self.key_path = key_path
        self.poll_interval = poll_interval
        self._current = self._load()  # raises CertificateError: nothing to serve with
        self._failed: str | None = None  # fingerprint of the last pair that did not load
        self.server_context = new_server_context()
        # The front context's own pair only matters if a handshake never reached the
        # callback; it is the first pair, so even then the server answers correctly.
        self.server_context.load_cert_chain(cert_path, key_path)
        self.server_context.sni_callback = self._select

    @property
    def current(self) -> ssl.SSLContext:
        """The context of the pair loaded last (new connections are moved onto it)."""
        return self._current.context

    def _select(
        self, conn: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: ssl.SSLContext
    ) -> None:
        # Called by OpenSSL inside the handshake, on the event loop's thread.
        conn.context = self._current.context

    async def run(self) -> None:
        """Re-read the pair every ``poll_interval`` seconds until cancelled."""
        log.info(
            "watching certificate",
            cert=str(self.cert_path),
            key=str(self.key_path),
            interval=self.poll_interval,
        )
        while True:
            await anyio.sleep(self.poll_interval)
            self.reload()

    def reload(self) -> bool:
        """Read the pair now; True if a changed pair was loaded and is served from now on."""
        try:
            fingerprint = self._fingerprint()
        except OSError as err:
            log.error("cannot read certificate; keeping the current one", error=str(err))
            return False
        if fingerprint in (self._current.fingerprint, self._failed):
            return False
        try:
            loaded = self._load()
        except CertificateError as err:
            # Logged once per distinct bad content, not on every poll.
            self._failed = fingerprint
            log.error("cannot load new certificate; keeping the current one", error=str(err))
            return False
        self._current = loaded
        self._failed = None
        log.info("updated certificate", cert=str(self.cert_path))
        return True

    def _fingerprint(self) -> str:
        digest = hashlib.sha256(self.cert_path.read_bytes())
        digest.update(b"\0")
        digest.update(self.key_path.read_bytes())
        return digest.hexdigest()

    def _load(self) -> _Loaded:
        """Load the pair into a fresh context; the files must not change meanwhile."""
        try:
            before = self._fingerprint()
            ctx = new_server_context()
            ctx.load_cert_chain(self.cert_path, self.key_path)
            after = self._fingerprint()
        except (OSError, ssl.SSLError) as err:
            raise CertificateError(
                f"cannot load certificate {self.cert_path} with key {self.key_path}: {err}"
            ) from err
        if before != after:
            # A rotation landed between the reads: the context may hold either pair.
            # The next poll sees the new fingerprint and loads it whole.
            raise CertificateError(f"{self.cert_path} changed while it was being loaded")
        return _Loaded(ctx, after)
