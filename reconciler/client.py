"""A JSON client for any resource type, on kubernetes_asyncio's transport.

Why not kubernetes_asyncio's generated APIs: they deserialize every response
into generated models (slow, and useless for custom resources), pick
``application/json-patch+json`` for a dict patch body, and have no read timeout
at all. We keep what it does well — kubeconfig and in-cluster loading, TLS
setup, token refresh — and send requests through its aiohttp session ourselves:
bodies are bytes parsed with orjson, every patch names its content type, and
every request has a connect and a read timeout.
"""

from __future__ import annotations

import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal, TypeAlias

import aiohttp
import anyio
import orjson
import yaml

from reconciler._kubeconfig import (
    ConfigException,
    Configuration,
    RESTClientObject,
    load_incluster_config,
    load_kube_config,
)
from reconciler.errors import TransportError, error_from_status
from reconciler.resource import Obj, ResourceType

# Inside ``Client`` the name ``list`` is the verb, so its annotations cannot spell the
# builtin; these module-level aliases name the list types for them.
_Objs: TypeAlias = list[Obj]
_Query: TypeAlias = list[tuple[str, str]]

# Ordinary requests: the API server's own request timeout is 60 s.
DEFAULT_REQUEST_TIMEOUT = 30.0
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_PAGE_SIZE = 500


class PatchType(StrEnum):
    MERGE = "application/merge-patch+json"
    JSON = "application/json-patch+json"
    APPLY = "application/apply-patch+yaml"
    STRATEGIC = "application/strategic-merge-patch+json"


EventType = Literal["ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"]


@dataclass(frozen=True, slots=True)
class WatchEvent:
    type: EventType
    object: Obj


class KubeconfigError(Exception):
    """No usable cluster configuration (bad kubeconfig, no in-cluster environment)."""


# (method, status code or 0 for a transport failure, seconds) for client metrics.
RequestObserver = Callable[[str, int, float], None]


class Client:
    """get / list / create / replace / patch / delete / watch, returning plain dicts."""

    def __init__(
        self,
        configuration: Configuration,
        *,
        user_agent: str = "reconciler",
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        observer: RequestObserver | None = None,
    ) -> None:
        self._configuration = configuration
        # kubernetes_asyncio's transport builds the connector with the kubeconfig's TLS
        # settings (CA, client certificate, server name). Its session has trust_env on,
        # which makes aiohttp look up .netrc and proxy variables in a thread for every
        # request (a third of our CPU per reconcile); ours resolves the proxy once.
        self._rest = RESTClientObject(configuration)
        self._host = str(configuration.host).rstrip("/")
        self._session = aiohttp.ClientSession(
            connector=self._rest.pool_manager.connector,
            connector_owner=False,
            trust_env=False,
            read_bufsize=_READ_BUFSIZE,
        )
        self._proxy = configuration.proxy or _env_proxy(self._host)
        self._user_agent = user_agent
        self._timeout = request_timeout
        self._connect_timeout = connect_timeout
        self.observer = observer

    @classmethod
    async def from_config(
        cls, kubeconfig: str | None = None, context: str | None = None, **kwargs: Any
    ) -> Client:
        """From a kubeconfig path, else $KUBECONFIG / ~/.kube/config, else in-cluster."""
        configuration = Configuration()
        try:
            if kubeconfig is None:
                try:
                    await load_kube_config(context=context, client_configuration=configuration)
                except (ConfigException, FileNotFoundError, TypeError):
                    load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            else:
                await load_kube_config(
                    config_file=kubeconfig, context=context, client_configuration=configuration
                )
        except (ConfigException, OSError, ValueError, TypeError, KeyError, yaml.YAMLError) as err:
            where = kubeconfig or "$KUBECONFIG, ~/.kube/config or the in-cluster environment"
            raise KubeconfigError(f"cannot load cluster configuration from {where}: {err}") from err
        if not configuration.verify_ssl:
            raise KubeconfigError("TLS verification is disabled in the kubeconfig; refusing")
        return cls(configuration, **kwargs)

    @property
    def host(self) -> str:
        return self._host

    async def close(self) -> None:
        await self._session.close()
        await self._rest.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- verbs --------------------------------------------------------------------------
    async def get(self, rt: ResourceType, name: str, namespace: str | None = None) -> Obj:
        return await self._json("GET", rt.path(namespace, name))

    async def list(
        self,
        rt: ResourceType,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = None,
        continue_: str | None = None,
        resource_version: str | None = None,
    ) -> Obj:
        """One page of a list (the raw ``*List`` object)."""
        query = _query(
            labelSelector=label_selector,
            fieldSelector=field_selector,
            limit=limit,
            resourceVersion=resource_version,
            **{"continue": continue_},
        )
        return await self._json("GET", rt.path(namespace), query=query)

    async def list_all(
        self,
        rt: ResourceType,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
        transform: Callable[[Obj], Obj] | None = None,
    ) -> tuple[_Objs, str]:
        """Every item, paginated; returns the items and the list's resourceVersion.

        ``transform`` is applied to each page as it arrives, so a projection keeps the
        peak at one page of full objects rather than the whole listing. Items get the
        list's ``kind`` and ``apiVersion``, which the API server leaves out of them.
        """
        items: _Objs = []
        token: str | None = None
        while True:
            page = await self.list(
                rt,
                namespace,
                label_selector=label_selector,
                field_selector=field_selector,
                limit=page_size,
                continue_=token,
            )
            for item in page.get("items") or []:
                item.setdefault("kind", rt.kind)
                item.setdefault("apiVersion", rt.api_version)
                items.append(transform(item) if transform is not None else item)
            meta = page.get("metadata") or {}
            del page
            token = meta.get("continue") or None
            if not token:
                return items, str(meta.get("resourceVersion", ""))

    async def create(
        self,
        rt: ResourceType,
        obj: Obj,
        namespace: str | None = None,
        *,
        field_manager: str | None = None,
    ) -> Obj:
        ns = namespace or (obj.get("metadata") or {}).get("namespace")
        return await self._json(
            "POST", rt.path(ns), body=obj, query=_query(fieldManager=field_manager)
        )

    async def replace(
        self,
        rt: ResourceType,
        obj: Obj,
        *,
        subresource: str | None = None,
        field_manager: str | None = None,
    ) -> Obj:
        """PUT; the object's metadata.resourceVersion makes it optimistic."""
        meta = obj.get("metadata") or {}
        return await self._json(
            "PUT",
            rt.path(meta.get("namespace"), meta["name"], subresource),
            body=obj,
            query=_query(fieldManager=field_manager),
        )

    async def patch(
        self,
        rt: ResourceType,
        name: str,
        patch: Obj | _Objs,
        *,
        namespace: str | None = None,
        patch_type: PatchType = PatchType.MERGE,
        subresource: str | None = None,
        field_manager: str | None = None,
        force: bool | None = None,
    ) -> Obj:
        """PATCH with an explicit content type.

        For optimistic concurrency put ``metadata.resourceVersion`` in a merge
        patch (or a ``replace`` op of it in a JSON patch): a stale version is a 409.
        A failed JSON-patch ``test`` op is a 422 (`Invalid`), not a conflict.
        Server-side apply needs a field manager.
        """
        if patch_type is PatchType.APPLY and not field_manager:
            raise ValueError("server-side apply needs a field_manager")
        return await self._json(
            "PATCH",
            rt.path(namespace, name, subresource),
            body=patch,
            content_type=patch_type.value,
            query=_query(fieldManager=field_manager, force=force),
        )

    async def patch_status(
        self,
        rt: ResourceType,
        name: str,
        patch: Obj | _Objs,
        *,
        namespace: str | None = None,
        patch_type: PatchType = PatchType.MERGE,
        field_manager: str | None = None,
    ) -> Obj:
        return await self.patch(
            rt,
            name,
            patch,
            namespace=namespace,
            patch_type=patch_type,
            subresource="status",
            field_manager=field_manager,
        )

    async def delete(
        self,
        rt: ResourceType,
        name: str,
        namespace: str | None = None,
        *,
        propagation_policy: str | None = None,
        grace_period_seconds: int | None = None,
        preconditions: Mapping[str, str] | None = None,
    ) -> Obj:
        body: Obj = {"apiVersion": "v1", "kind": "DeleteOptions"}
        if propagation_policy:
            body["propagationPolicy"] = propagation_policy
        if grace_period_seconds is not None:
            body["gracePeriodSeconds"] = grace_period_seconds
        if preconditions:
            body["preconditions"] = dict(preconditions)
        return await self._json("DELETE", rt.path(namespace, name), body=body)

    async def raw(self, method: str, path: str, body: Obj | None = None) -> Obj:
        """Any path, e.g. a TokenRequest or a discovery document."""
        return await self._json(method, path, body=body)

    @asynccontextmanager
    async def watch(
        self,
        rt: ResourceType,
        namespace: str | None = None,
        *,
        resource_version: str | None = None,
        timeout_seconds: int | None = None,
        allow_bookmarks: bool = True,
        label_selector: str | None = None,
        field_selector: str | None = None,
        idle_timeout: float = 90.0,
        send_initial_events: bool = False,
    ) -> AsyncIterator[AsyncIterator[WatchEvent]]:
        """Open a watch; yields an iterator of events.

        ``idle_timeout`` is a watchdog: if nothing at all (not even a bookmark)
        arrives for that long, iteration raises ``TimeoutError`` so the caller
        reconnects — a half-open TCP connection or a stalled proxy would otherwise
        hang forever. ERROR events are raised as typed ``ApiError``s.
        ``send_initial_events`` asks for a streaming list (WatchList): synthetic
        ADDED events, then a bookmark annotated ``k8s.io/initial-events-end``.
        """
        query = _query(
            watch="true",
            resourceVersion=resource_version,
            timeoutSeconds=timeout_seconds,
            allowWatchBookmarks="true" if allow_bookmarks else None,
            labelSelector=label_selector,
            fieldSelector=field_selector,
            sendInitialEvents="true" if send_initial_events else None,
            resourceVersionMatch="NotOlderThan" if send_initial_events else None,
        )
        timeout = aiohttp.ClientTimeout(
            connect=self._connect_timeout,
            sock_connect=self._connect_timeout,
            sock_read=idle_timeout,
        )
        try:
            resp = await self._send("GET", rt.path(namespace), query=query, timeout=timeout)
        except TransportError as err:
            if isinstance(err.__cause__, TimeoutError):
                # No response headers within the idle bound: same watchdog verdict.
                raise TimeoutError(f"watch silent for {idle_timeout}s before headers") from err
            raise
        try:
            if resp.status >= 300:
                raise error_from_status(resp.status, await resp.read())
            yield _events(resp, idle_timeout)
        finally:
            # Never hand a watch connection back to the pool: it may be mid-stream.
            resp.close()

    # -- transport ----------------------------------------------------------------------
    async def _json(
        self,
        method: str,
        path: str,
        *,
        body: Obj | _Objs | None = None,
        query: _Query | None = None,
        content_type: str = "application/json",
    ) -> Obj:
        timeout = aiohttp.ClientTimeout(
            total=self._timeout,
            connect=self._connect_timeout,
            sock_connect=self._connect_timeout,
        )
        data = orjson.dumps(body) if body is not None else None
        resp = await self._send(
            method, path, query=query, data=data, content_type=content_type, timeout=timeout
        )
        try:
            try:
                payload = await resp.read()
            except (aiohttp.ClientError, TimeoutError) as err:
                raise TransportError(f"{method} {path}: {err!r}") from err
            if resp.status >= 300:
                raise error_from_status(resp.status, payload)
            result: Obj = orjson.loads(payload) if payload else {}
            return result
        finally:
            resp.release()

    async def _send(
        self,
        method: str,
        path: str,
        *,
        query: _Query | None = None,
        data: bytes | None = None,
        content_type: str = "application/json",
        timeout: aiohttp.ClientTimeout,
    ) -> aiohttp.ClientResponse:
        headers = {
            "Accept": "application/json",
            "Content-Type": content_type,
            "User-Agent": self._user_agent,
        }
        # Bearer tokens (static, exec plugin or the rotated in-cluster file)
        # come from kubernetes_asyncio's configuration; never logged.
        for auth in (await self._configuration.auth_settings()).values():
            headers[auth["key"]] = auth["value"]
        start = time.monotonic()
        code = 0
        try:
            resp = await self._session.request(
                method,
                self._host + path,
                params=query,
                data=data,
                headers=headers,
                timeout=timeout,
                server_hostname=self._rest.server_hostname,
                proxy=self._proxy,
            )
            code = resp.status
            return resp
        except (aiohttp.ClientError, TimeoutError, OSError) as err:
            raise TransportError(f"{method} {path}: {err!r}") from err
        finally:
            if self.observer is not None:
                self.observer(method, code, time.monotonic() - start)


async def _events(resp: aiohttp.ClientResponse, idle_timeout: float) -> AsyncIterator[WatchEvent]:
    content = resp.content
    while True:
        line = b""
        with anyio.move_on_after(idle_timeout) as scope:
            try:
                line = await content.readline()
            except TimeoutError as err:  # aiohttp's socket read timeout: same verdict
                raise TimeoutError(f"watch stream silent for {idle_timeout}s") from err
            except (aiohttp.ClientError, ValueError) as err:
                raise TransportError(f"watch stream broken: {err!r}") from err
        if scope.cancelled_caught:
            raise TimeoutError(f"watch stream silent for {idle_timeout}s")
        if not line:
            return  # the server ended the watch (timeoutSeconds) or closed the stream
        line = line.strip()
        if not line:
            continue
        try:
            raw = orjson.loads(line)
            etype, obj = raw["type"], raw["object"]
        except (orjson.JSONDecodeError, KeyError, TypeError) as err:
            raise TransportError(f"undecodable watch event: {line[:200]!r}") from err
        if etype == "ERROR":
            raise error_from_status(int(obj.get("code") or 500), obj)
        yield WatchEvent(etype, obj)


# Watch events carry whole objects; etcd allows 1.5 MiB per object.
_READ_BUFSIZE = 2**21


def _env_proxy(url: str) -> str | None:
    """HTTPS_PROXY/HTTP_PROXY for ``url`` unless NO_PROXY exempts its host."""
    parts = urllib.parse.urlsplit(url)
    if urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return urllib.request.getproxies().get(parts.scheme) or None


def _query(**params: object) -> _Query:
    out: _Query = []
    for key, value in params.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        out.append((key, str(value)))
    return out
