"""Cluster configuration from kubernetes_asyncio, without importing its generated API.

Why: importing anything under ``kubernetes_asyncio`` first runs its package
``__init__``, which imports every generated API class and model — 30 MiB of resident
memory and 0.1 s of start-up (the operator imports in 54 MiB instead of 84), for code
this framework never calls (it sends requests itself; see ``client.py``). What we use
is small: ``Configuration``, the kubeconfig and in-cluster loaders (exec plugins, OIDC,
token rotation) and the TLS setup in ``rest.RESTClientObject``.

How: the import system runs a package's ``__init__`` only if the package is not yet in
``sys.modules``. So, for the duration of our imports alone, the three packages whose
``__init__`` is heavy (``kubernetes_asyncio``, ``.client``, ``.client.models``) are
registered as bare packages (a module with a ``__path__``, nothing run), and the
submodules we need import normally through them. Afterwards every ``kubernetes_asyncio``
entry added to ``sys.modules`` is removed again.

Invariants:
1. Outside this module's import, ``sys.modules`` never holds a bare package: other code
   in the process that imports ``kubernetes_asyncio`` gets the real, complete package,
   loaded by the ordinary import system (it then pays the full cost, once).
2. The functions and classes we export keep working after the removal: they hold their
   own module globals, and none of them imports anything when called.
3. If ``kubernetes_asyncio`` was imported before us, we import it normally.

The price of 1: in a process that also imports ``kubernetes_asyncio`` itself, our
``Configuration`` is a separate copy of the class (same code, not the same object), so
an ``isinstance`` across the two fails. Nothing here checks types across that line.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_ROOT = "kubernetes_asyncio"
_CLIENT = f"{_ROOT}.client"
_MODELS = f"{_CLIENT}.models"


@contextmanager
def _bare_packages() -> Iterator[None]:
    """Inside: ``kubernetes_asyncio`` submodules import without their parents' ``__init__``."""
    if _ROOT in sys.modules:
        yield
        return
    spec = importlib.util.find_spec(_ROOT)  # finding a top-level package runs none of it
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"{_ROOT} is not installed")
    root = Path(next(iter(spec.submodule_search_locations)))
    parent: types.ModuleType | None = None
    for name, folder in (
        (_ROOT, root),
        (_CLIENT, root / "client"),
        (_MODELS, root / "client/models"),
    ):
        package = types.ModuleType(name)
        package.__path__ = [str(folder)]
        package.__package__ = name
        sys.modules[name] = package
        if parent is not None:
            setattr(parent, name.rpartition(".")[2], package)
        parent = package
    try:
        # The loaders take these two names from the client package at import time.
        client = sys.modules[_CLIENT]
        for name, module in (("ApiClient", "api_client"), ("Configuration", "configuration")):
            setattr(client, name, getattr(importlib.import_module(f"{_CLIENT}.{module}"), name))
        yield
    finally:
        for name in [n for n in sys.modules if n == _ROOT or n.startswith(f"{_ROOT}.")]:
            del sys.modules[name]


with _bare_packages():
    from kubernetes_asyncio.client.configuration import Configuration
    from kubernetes_asyncio.client.rest import RESTClientObject
    from kubernetes_asyncio.config.config_exception import ConfigException
    from kubernetes_asyncio.config.incluster_config import load_incluster_config
    from kubernetes_asyncio.config.kube_config import load_kube_config

__all__ = [
    "ConfigException",
    "Configuration",
    "RESTClientObject",
    "load_incluster_config",
    "load_kube_config",
]
