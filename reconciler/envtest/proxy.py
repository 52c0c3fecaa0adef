"""A loopback TCP proxy that can go silent or cut connections, for fault tests.

TLS passes through untouched (the serving certificate names 127.0.0.1), so a
client pointed at the proxy behaves exactly as against the API server — until
the test freezes the open connections (they stay open but bytes stop: a
half-open stream; new connections still flow, as after a network blip) or cuts
the proxy (connections reset and new ones refused: a partition).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import anyio
import anyio.from_thread
from anyio.abc import SocketStream, TaskStatus
from anyio.from_thread import BlockingPortal

_CHUNK = 65536


class FaultProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.accepted = 0
        self._cut = False
        self._streams: set[SocketStream] = set()
        self._frozen: set[int] = set()  # ids of frozen connections
        self._conn_ids: dict[SocketStream, int] = {}

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def freeze(self) -> None:
        """Open connections stop forwarding in both directions but stay open."""
        self._frozen.update(self._conn_ids.values())

    async def cut(self) -> None:
        """Reset every connection and refuse new ones until :meth:`restore`."""
        self._cut = True
        for s in list(self._streams):
            with contextlib.suppress(Exception):
                await s.aclose()
        self._streams.clear()

    def restore(self) -> None:
        self._cut = False

    async def run(self, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        async with listener:
            self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
            task_status.started(self.port)
            await listener.serve(self._handle)

    async def _handle(self, client: SocketStream) -> None:
        self.accepted += 1
        if self._cut:
            await client.aclose()
            return
        try:
            upstream = await anyio.connect_tcp(*self.target)
        except OSError:
            await client.aclose()
            return
        self._streams.update((client, upstream))
        conn = self.accepted
        self._conn_ids[client] = conn
        try:
            async with client, upstream, anyio.create_task_group() as tg:

                async def pump(src: SocketStream, dst: SocketStream) -> None:
                    with contextlib.suppress(
                        anyio.EndOfStream,
                        anyio.BrokenResourceError,
                        anyio.ClosedResourceError,
                        OSError,
                    ):
                        while True:
                            data = await src.receive(_CHUNK)
                            if conn in self._frozen:
                                await anyio.sleep_forever()
                            if self._cut:
                                break
                            await dst.send(data)
                    tg.cancel_scope.cancel()

                tg.start_soon(pump, client, upstream)
                tg.start_soon(pump, upstream, client)
        finally:
            self._streams.discard(client)
            self._streams.discard(upstream)
            self._conn_ids.pop(client, None)
            self._frozen.discard(conn)


class ProxyHandle:
    """Synchronous control of a :class:`FaultProxy` running on its own event loop thread."""

    def __init__(self, proxy: FaultProxy, portal: BlockingPortal) -> None:
        self._proxy = proxy
        self._portal = portal

    @property
    def url(self) -> str:
        return self._proxy.url

    @property
    def port(self) -> int:
        return self._proxy.port

    @property
    def accepted(self) -> int:
        return self._proxy.accepted

    def freeze(self) -> None:
        self._portal.call(self._proxy.freeze)

    def cut(self) -> None:
        self._portal.call(self._proxy.cut)

    def restore(self) -> None:
        self._portal.call(self._proxy.restore)


@contextlib.contextmanager
def fault_proxy(target_host: str, target_port: int) -> Iterator[ProxyHandle]:
    """Run a proxy to ``target`` in a background thread, for the duration of the block.

    Its own thread and event loop make it usable from any test or fixture,
    whatever task they run in.
    """
    proxy = FaultProxy(target_host, target_port)
    with anyio.from_thread.start_blocking_portal() as portal:
        future, _ = portal.start_task(proxy.run)
        try:
            yield ProxyHandle(proxy, portal)
        finally:
            future.cancel()
