"""Resource types: what the client and the informers need to address a kind."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeAlias
from urllib.parse import quote

Obj: TypeAlias = dict[str, Any]
"""A Kubernetes object as the API server sends it: parsed JSON. Defined once, here."""


@dataclass(frozen=True, slots=True)
class ResourceType:
    """A served kind, described well enough to build its URLs without discovery."""

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> str:
        """A process-wide identity: one informer per key."""
        return (
            f"{self.plural}.{self.version}.{self.group}"
            if self.group
            else (f"{self.plural}.{self.version}")
        )

    def path(
        self,
        namespace: str | None = None,
        name: str | None = None,
        subresource: str | None = None,
    ) -> str:
        """URL path; a namespaced type without namespace addresses all namespaces."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{quote(namespace, safe='')}"
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{quote(name, safe='')}"
            if subresource:
                base += f"/{subresource}"
        return base

    def __str__(self) -> str:
        return f"{self.kind}.{self.api_version}"


NAMESPACE = ResourceType("", "v1", "Namespace", "namespaces", namespaced=False)
CORE_EVENT = ResourceType("", "v1", "Event", "events")
EVENT = ResourceType("events.k8s.io", "v1", "Event", "events")
LEASE = ResourceType("coordination.k8s.io", "v1", "Lease", "leases")
CONFIG_MAP = ResourceType("", "v1", "ConfigMap", "configmaps")
SECRET = ResourceType("", "v1", "Secret", "secrets")
POD = ResourceType("", "v1", "Pod", "pods")
SERVICE_ACCOUNT = ResourceType("", "v1", "ServiceAccount", "serviceaccounts")
CRD = ResourceType(
    "apiextensions.k8s.io",
    "v1",
    "CustomResourceDefinition",
    "customresourcedefinitions",
    namespaced=False,
)
