"""Cluster configuration from kubernetes_asyncio, without importing its generated API.

Why: importing anything under ``kubernetes_asyncio`` runs its package ``__init__``,
which imports every generated API class and model — about 40 MiB of resident memory
and half a second of start-up, for code this framework never calls (it sends requests
itself; see ``client.py``). What we use is small: ``Configuration``, the kubeconfig
and in-cluster loaders (which handle exec plugins, OIDC and token rotation) and the
TLS setup in ``rest.RESTClientObject``.

How: before the first import, the packages ``kubernetes_asyncio``,
``kubernetes_asyncio.client`` and ``kubernetes_asyncio.client.models`` are registered
without running their ``__init__``. Submodules import normally. Any other attribute
asked of such a package later (``client.CoreV1Api``, ``models.V1Pod``…) runs the real
``__init__`` at that moment, so other code in the process that uses the generated API
keeps working; it just pays the cost when it uses it. If ``kubernetes_asyncio`` was
imported before us, nothing is changed.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

_LIGHT = ("kubernetes_asyncio", "kubernetes_asyncio.client", "kubernetes_asyncio.client.models")


class _DeferredPackage(types.ModuleType):
    """A package whose ``__init__`` runs only when something not yet loaded is asked for."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        for folder in self.__path__:
            base = Path(folder) / name
            if base.with_suffix(".py").is_file() or (base / "__init__.py").is_file():
                return importlib.import_module(f"{self.__name__}.{name}")
        if not self.__dict__.get("_init_ran"):
            self.__dict__["_init_ran"] = True
            source = Path(str(self.__file__)).read_bytes()
            exec(compile(source, str(self.__file__), "exec"), self.__dict__)
            if name in self.__dict__:
                return self.__dict__[name]
        raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")


def _register_deferred_packages() -> None:
    if "kubernetes_asyncio" in sys.modules:
        return
    parent: types.ModuleType | None = None
    for name in _LIGHT:
        if parent is None:
            spec = importlib.util.find_spec(name)
        else:
            folder = Path(parent.__path__[0]) / name.rpartition(".")[2]
            spec = importlib.util.spec_from_file_location(
                name, folder / "__init__.py", submodule_search_locations=[str(folder)]
            )
        if spec is None or spec.origin is None or spec.submodule_search_locations is None:
            return
        module = _DeferredPackage(name)
        module.__spec__ = spec
        module.__file__ = spec.origin
        module.__path__ = list(spec.submodule_search_locations)
        module.__package__ = name
        sys.modules[name] = module
        if parent is not None:
            setattr(parent, name.rpartition(".")[2], module)
        parent = module
    client = sys.modules["kubernetes_asyncio.client"]
    # The loaders import these two names from the package at import time.
    from kubernetes_asyncio.client.api_client import ApiClient
    from kubernetes_asyncio.client.configuration import Configuration

    client.ApiClient = ApiClient  # type: ignore[attr-defined]
    client.Configuration = Configuration  # type: ignore[attr-defined]


_register_deferred_packages()

from kubernetes_asyncio.client.configuration import Configuration  # noqa: E402
from kubernetes_asyncio.client.rest import RESTClientObject  # noqa: E402
from kubernetes_asyncio.config.config_exception import ConfigException  # noqa: E402
from kubernetes_asyncio.config.incluster_config import load_incluster_config  # noqa: E402
from kubernetes_asyncio.config.kube_config import load_kube_config  # noqa: E402

__all__ = [
    "ConfigException",
    "Configuration",
    "RESTClientObject",
    "load_incluster_config",
    "load_kube_config",
]
