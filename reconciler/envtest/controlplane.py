"""A real etcd + kube-apiserver started as local processes (envtest-style).

The processes are started in their own sessions so that a control plane brought
up from the command line outlives the command; everything needed to find and
stop them again lives in ``<state_dir>/state.json``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from reconciler.envtest._certs import KeyPair, TinyCA, write_service_account_keys

ADMIN_USER = "admin"
ADMIN_GROUPS = ("system:masters",)
# kube-apiserver needs a few seconds for its post-start hooks (RBAC bootstrap,
# priority-and-fairness config); 90 s leaves room on a loaded 2-core machine.
DEFAULT_START_TIMEOUT = 90.0
DEFAULT_STOP_TIMEOUT = 20.0
CRD_WAIT_TIMEOUT = 30.0
DEFRAG_TIMEOUT = 300.0
# etcd's documented suggested maximum (its default is 2 GiB), what large production
# clusters configure: 100,000 KAITO-shaped Workspaces take ~1 GiB per version of each.
ETCD_QUOTA_BYTES = 8 * 2**30
POLL_INTERVAL = 0.1


class ControlPlaneError(RuntimeError):
    """The control plane could not be started, reached or stopped."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class _State:
    etcd_port: int
    etcd_peer_port: int
    apiserver_port: int
    etcd_pid: int = 0
    apiserver_pid: int = 0
    apiserver_args: list[str] = field(default_factory=list)


def _alive(pid: int, binary: str) -> bool:
    """Whether ``pid`` is a live (not zombie) process running ``binary``."""
    if pid <= 0:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    fields = stat.rpartition(")")[2].split()
    if fields[0] in ("Z", "X"):
        # A zombie leader whose other threads are still exiting still holds its
        # listening sockets; only when they are gone is the port free again.
        return int(fields[17]) > 1
    # The cmdline is empty for a moment while the child execs; a reused pid
    # runs something else.
    return not cmdline or binary.encode() in cmdline.split(b"\0", 1)[0]


class ControlPlane:
    """etcd + kube-apiserver with generated certificates and an admin kubeconfig."""

    def __init__(
        self,
        bin_dir: Path,
        state_dir: Path,
        *,
        crd_paths: Sequence[Path] = (),
        apiserver_args: Sequence[str] = (),
        start_timeout: float = DEFAULT_START_TIMEOUT,
    ) -> None:
        self.bin_dir = bin_dir.resolve()
        self.state_dir = state_dir.resolve()
        self.crd_paths = tuple(crd_paths)
        self._extra_args = list(apiserver_args)
        self.start_timeout = start_timeout
        self._state: _State | None = None
        for name in ("etcd", "kube-apiserver", "kubectl"):
            if not (self.bin_dir / name).is_file():
                raise ControlPlaneError(
                    f"{self.bin_dir / name} not found: build it with `hack/control-plane build`"
                    " or point RECONCILER_ASSETS at a folder holding etcd, kube-apiserver, kubectl"
                )

    # -- paths --------------------------------------------------------------------------
    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "admin.kubeconfig"

    @property
    def cert_dir(self) -> Path:
        return self.state_dir / "pki"

    @property
    def etcd_log(self) -> Path:
        return self.state_dir / "etcd.log"

    @property
    def apiserver_log(self) -> Path:
        return self.state_dir / "kube-apiserver.log"

    @property
    def _state_file(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def state(self) -> _State:
        if self._state is None:
            raise ControlPlaneError("control plane is not started")
        return self._state

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.state.apiserver_port}"

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.state.etcd_port}"

    # -- lifecycle ----------------------------------------------------------------------
    def attach(self) -> bool:
        """Reuse a plane recorded in the state dir if both processes still run and answer."""
        try:
            raw = json.loads(self._state_file.read_text())
            self._state = _State(**raw)
        except (OSError, ValueError, TypeError):
            return False
        if not (
            _alive(self.state.etcd_pid, "etcd")
            and _alive(self.state.apiserver_pid, "kube-apiserver")
        ):
            self._state = None
            return False
        try:
            self.wait_ready(timeout=5.0)
        except ControlPlaneError:
            self._state = None
            return False
        return True

    def start(self) -> None:
        if self.attach():
            self.install_crds(self.crd_paths)
            return
        self.stop()
        shutil.rmtree(self.state_dir, ignore_errors=True)
        self.cert_dir.mkdir(parents=True)
        self._state = _State(
            etcd_port=free_port(), etcd_peer_port=free_port(), apiserver_port=free_port()
        )
        self._write_pki()
        self.start_etcd()
        self.start_apiserver()
        self.install_crds(self.crd_paths)

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        """Stop both processes (if any) and remove the data, logs excepted."""
        if self._state is None:
            with contextlib.suppress(OSError, ValueError, TypeError):
                self._state = _State(**json.loads(self._state_file.read_text()))
        if self._state is not None:
            self._terminate(self._state.apiserver_pid, "kube-apiserver", timeout)
            self._terminate(self._state.etcd_pid, "etcd", timeout)
            self._state = None
        for leftover in ("etcd-data", "pki", "state.json", "admin.kubeconfig", "users"):
            path = self.state_dir / leftover
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)

    def start_etcd(self) -> None:
        st = self.state
        data = self.state_dir / "etcd-data"
        peer = f"http://127.0.0.1:{st.etcd_peer_port}"
        args = [
            str(self.bin_dir / "etcd"),
            "--name=default",
            f"--data-dir={data}",
            f"--listen-client-urls={self.etcd_url}",
            f"--advertise-client-urls={self.etcd_url}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=default={peer}",
            # Test data is disposable; fsync would make the plane disk-bound.
            "--unsafe-no-fsync=true",
            "--log-level=warn",
            f"--quota-backend-bytes={ETCD_QUOTA_BYTES}",
        ]
        st.etcd_pid = self._spawn(args, self.etcd_log)
        self._save()
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError, ValueError),
                urllib.request.urlopen(f"{self.etcd_url}/health", timeout=2) as resp,
            ):
                if json.loads(resp.read()).get("health") == "true":
                    return
            if not _alive(st.etcd_pid, "etcd"):
                raise ControlPlaneError(f"etcd exited during start; see {self.etcd_log}")
            time.sleep(POLL_INTERVAL)
        raise ControlPlaneError(
            f"etcd not healthy after {self.start_timeout}s; see {self.etcd_log}"
        )

    def start_apiserver(self) -> None:
        st = self.state
        pki = self.cert_dir
        url = self.server
        args = [
            str(self.bin_dir / "kube-apiserver"),
            f"--etcd-servers={self.etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={st.apiserver_port}",
            f"--cert-dir={pki}",
            f"--tls-cert-file={pki / 'serving.crt'}",
            f"--tls-private-key-file={pki / 'serving.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            "--authorization-mode=RBAC",
            f"--service-account-issuer={url}/",
            f"--service-account-key-file={pki / 'sa-signer.pub'}",
            f"--service-account-signing-key-file={pki / 'sa-signer.key'}",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--disable-admission-plugins=ServiceAccount",
            "--allow-privileged=true",
            "--profiling=false",
            *self._extra_args,
        ]
        st.apiserver_args = args
        st.apiserver_pid = self._spawn(args, self.apiserver_log)
        self._save()
        self.wait_ready(timeout=self.start_timeout)

    def stop_apiserver(self, *, kill: bool = True) -> None:
        self._terminate(self.state.apiserver_pid, "kube-apiserver", DEFAULT_STOP_TIMEOUT, kill)

    def stop_etcd(self, *, kill: bool = True) -> None:
        self._terminate(self.state.etcd_pid, "etcd", DEFAULT_STOP_TIMEOUT, kill)

    def restart_apiserver(self, *, kill: bool = True) -> None:
        self.stop_apiserver(kill=kill)
        self.start_apiserver()

    def restart_etcd(self, *, kill: bool = True) -> None:
        self.stop_etcd(kill=kill)
        self.start_etcd()
        self.wait_ready(timeout=self.start_timeout)

    # -- operations tests need ------------------------------------------------------------
    def wait_ready(self, timeout: float) -> None:
        ctx = self.admin_ssl_context()
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(
                    f"{self.server}/readyz", context=ctx, timeout=5
                ) as resp:
                    if resp.status == 200:
                        return
            except urllib.error.HTTPError as err:
                last = f"HTTP {err.code}"
            except (OSError, ssl.SSLError) as err:
                last = str(err)
            if self._state and not _alive(self._state.apiserver_pid, "kube-apiserver"):
                raise ControlPlaneError(
                    f"kube-apiserver exited during start; see {self.apiserver_log}"
                )
            time.sleep(POLL_INTERVAL)
        raise ControlPlaneError(
            f"kube-apiserver not ready after {timeout}s ({last}); see {self.apiserver_log}"
        )

    def admin_ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.cert_dir / "ca.crt"))
        ctx.load_cert_chain(self.cert_dir / "admin.crt", self.cert_dir / "admin.key")
        return ctx

    def kubectl(self, *args: str, check: bool = True, input: str | None = None) -> str:
        proc = subprocess.run(
            [str(self.bin_dir / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            input=input,
            timeout=120,
            check=False,
        )
        if check and proc.returncode != 0:
            raise ControlPlaneError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout

    def install_crds(self, paths: Iterable[Path]) -> None:
        """Apply CRD manifests and wait until every served version is in discovery."""
        files = [p for path in paths for p in _yaml_files(path)]
        if not files:
            return
        wanted: dict[str, set[str]] = {}
        for f in files:
            for doc in yaml.safe_load_all(f.read_text()):
                if not doc or doc.get("kind") != "CustomResourceDefinition":
                    continue
                spec = doc["spec"]
                for v in spec["versions"]:
                    if v.get("served", False):
                        gv = f"{spec['group']}/{v['name']}"
                        wanted.setdefault(gv, set()).add(spec["names"]["plural"])
        for f in files:
            self.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(f))
        self.wait_for_discovery(wanted)

    def wait_for_discovery(self, wanted: dict[str, set[str]]) -> None:
        ctx = self.admin_ssl_context()
        deadline = time.monotonic() + CRD_WAIT_TIMEOUT
        missing = dict(wanted)
        while missing and time.monotonic() < deadline:
            for gv, plurals in list(missing.items()):
                try:
                    with urllib.request.urlopen(
                        f"{self.server}/apis/{gv}", context=ctx, timeout=5
                    ) as resp:
                        served = {r["name"] for r in json.loads(resp.read())["resources"]}
                    if plurals <= served:
                        del missing[gv]
                except (OSError, ValueError, KeyError):
                    pass
            if missing:
                time.sleep(POLL_INTERVAL)
        if missing:
            raise ControlPlaneError(f"CRDs not served after {CRD_WAIT_TIMEOUT}s: {missing}")

    def compact_etcd(self) -> int:
        """Compact etcd to its current revision; returns the revision compacted to."""
        answer = self._etcd_post("/v3/kv/range", {"key": base64.b64encode(b"\0").decode()})
        rev = int(answer["header"]["revision"])
        self._etcd_post("/v3/kv/compaction", {"revision": rev, "physical": True})
        return rev

    def etcd_db_size(self) -> int:
        """Bytes etcd's database file takes (in use or free), what its quota is held to."""
        return int(self._etcd_post("/v3/maintenance/status", {})["dbSize"])

    def defragment_etcd(self, timeout: float = DEFRAG_TIMEOUT) -> None:
        """Give the pages a compaction freed back to the file system. etcd serves
        nothing meanwhile (seconds for a database of a few GiB)."""
        self._etcd_post("/v3/maintenance/defragment", {}, timeout=timeout)

    def user_kubeconfig(self, user: str, groups: Sequence[str] = ()) -> Path:
        """A kubeconfig authenticating as ``user`` with a client certificate."""
        path = self.state_dir / "users" / f"{user.replace(':', '_')}.kubeconfig"
        path.parent.mkdir(parents=True, exist_ok=True)
        ca = TinyCA.load(self.cert_dir)
        _write_kubeconfig(path, self.server, ca.cert_pem, ca.client(user, list(groups)), user)
        return path

    def admin_kubeconfig_for(self, server: str, name: str) -> Path:
        """The admin credentials aimed at another address (e.g. a fault proxy)."""
        path = self.state_dir / "users" / f"{name}.kubeconfig"
        path.parent.mkdir(parents=True, exist_ok=True)
        pki = self.cert_dir
        admin = KeyPair((pki / "admin.crt").read_bytes(), (pki / "admin.key").read_bytes())
        _write_kubeconfig(path, server, (pki / "ca.crt").read_bytes(), admin, ADMIN_USER)
        return path

    def token_kubeconfig(self, name: str, token: str) -> Path:
        """A kubeconfig authenticating with a bearer token (e.g. from TokenRequest)."""
        path = self.state_dir / "users" / f"{name}.kubeconfig"
        path.parent.mkdir(parents=True, exist_ok=True)
        ca_pem = (self.cert_dir / "ca.crt").read_bytes()
        _write_kubeconfig(path, self.server, ca_pem, None, name, token=token)
        return path

    # -- internals ------------------------------------------------------------------------
    def _write_pki(self) -> None:
        pki = self.cert_dir
        ca = TinyCA("reconciler-envtest-ca")
        ca.save(pki)
        serving = ca.serving()
        (pki / "serving.crt").write_bytes(serving.cert_pem)
        (pki / "serving.key").write_bytes(serving.key_pem)
        admin = ca.client(ADMIN_USER, list(ADMIN_GROUPS))
        (pki / "admin.crt").write_bytes(admin.cert_pem)
        (pki / "admin.key").write_bytes(admin.key_pem)
        write_service_account_keys(pki)
        for key in pki.glob("*.key"):
            key.chmod(0o600)
        _write_kubeconfig(self.kubeconfig, self.server, ca.cert_pem, admin, ADMIN_USER)

    def _spawn(self, args: list[str], log: Path) -> int:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return proc.pid

    def _terminate(self, pid: int, binary: str, timeout: float, kill: bool = False) -> None:
        if not _alive(pid, binary):
            _reap(pid)
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL if kill else signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            _reap(pid)
            if not _alive(pid, binary):
                return
            time.sleep(POLL_INTERVAL)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        while _alive(pid, binary):
            _reap(pid)
            time.sleep(POLL_INTERVAL)

    def _save(self) -> None:
        self._state_file.write_text(json.dumps(asdict(self.state)))

    def _etcd_post(
        self, path: str, body: dict[str, object], *, timeout: float = 10.0
    ) -> dict[str, Any]:
        req = urllib.request.Request(
            f"{self.etcd_url}{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            result: dict[str, Any] = json.loads(resp.read())
            return result


def _reap(pid: int) -> None:
    """Collect a child we started in this process, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _yaml_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(
            p
            for p in path.iterdir()
            if p.suffix in (".yaml", ".yml") and p.name != "kustomization.yaml"
        )
    return [path]


def _write_kubeconfig(
    path: Path,
    server: str,
    ca_pem: bytes,
    client: KeyPair | None,
    user: str,
    *,
    token: str | None = None,
) -> None:
    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    creds: dict[str, str] = {}
    if client is not None:
        creds = {
            "client-certificate-data": b64(client.cert_pem),
            "client-key-data": b64(client.key_pem),
        }
    if token is not None:
        creds["token"] = token
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "envtest",
                "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)},
            }
        ],
        "users": [{"name": user, "user": creds}],
        "contexts": [{"name": "envtest", "context": {"cluster": "envtest", "user": user}}],
        "current-context": "envtest",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
