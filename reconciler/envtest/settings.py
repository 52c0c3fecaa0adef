"""Where the control-plane binaries and state live, overridable by environment."""

from __future__ import annotations

import os
from pathlib import Path

# Like KUBEBUILDER_ASSETS: a folder holding etcd, kube-apiserver and kubectl.
ASSETS_ENV = "RECONCILER_ASSETS"
# Where `hack/control-plane up` keeps its data, certificates and logs.
STATE_ENV = "RECONCILER_STATE_DIR"
# Run tests against an existing cluster (e.g. kind) instead of a local plane.
EXISTING_KUBECONFIG_ENV = "E2E_KUBECONFIG"


def _repo_cache() -> Path:
    return Path.cwd() / ".cache" / "control-plane"


def assets_dir() -> Path:
    return Path(os.environ.get(ASSETS_ENV) or _repo_cache() / "bin")


def state_dir() -> Path:
    return Path(os.environ.get(STATE_ENV) or _repo_cache() / "run")
