"""The README's "Write your own controller" example, against a real API server.

``LabelCounter`` is copied verbatim from README.md, and a test checks that it still is:
if one changes, so must the other. ``main`` keeps the README's structure; it only adds
what a test needs (the test namespace, no fixed ports, no signal handling, a way to hand
the manager to the test, closing the client).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio

from reconciler import Builder, Client, InformerOptions, Manager, ManagerOptions, Request, Result
from reconciler.resource import CONFIG_MAP

README = Path(__file__).parents[2] / "README.md"
DEADLINE = 20.0


class LabelCounter:
    """Writes the number of labels of each ConfigMap into its data."""

    def __init__(self, mgr: Manager) -> None:
        self.mgr = mgr

    async def reconcile(self, request: Request) -> Result:
        obj = await self.mgr.cache.get(CONFIG_MAP, request.name, request.namespace)
        if obj is None:
            return Result()  # deleted
        count = str(len(obj["metadata"].get("labels") or {}))
        if (obj.get("data") or {}).get("labels") != count:
            patch = {"data": {"labels": count}}
            await self.mgr.client.patch(
                CONFIG_MAP, request.name, patch, namespace=request.namespace
            )
        return Result()


async def main(kubeconfig: str, namespace: str, started: Callable[[Manager], None]) -> None:
    async with await Client.from_config(kubeconfig) as client:
        mgr = Manager(
            client,
            ManagerOptions(
                leader_election=None,
                health_probe_bind_address="0",
                metrics_bind_address="0",
                handle_signals=False,
            ),
        )
        mgr.cache.configure(CONFIG_MAP, InformerOptions(namespace=namespace))
        Builder(mgr).for_(CONFIG_MAP).complete(LabelCounter(mgr))
        started(mgr)
        await mgr.run()  # until SIGTERM/SIGINT or mgr.shutdown()


def readme_example() -> str:
    section = README.read_text().split("## Write your own controller", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, "README lost its example"
    return match.group(1)


BUILDER_LINE = "Builder(mgr).for_(CONFIG_MAP).complete(LabelCounter(mgr))"


def test_the_example_here_is_the_one_in_the_readme() -> None:
    example = readme_example()
    assert inspect.getsource(LabelCounter) in example
    for line in (
        "async with await Client.from_config(kubeconfig) as client:",
        "mgr.cache.configure(CONFIG_MAP, InformerOptions(namespace=namespace))",
        "await mgr.run()  # until SIGTERM/SIGINT or mgr.shutdown()",
    ):
        assert line in example
        assert line in inspect.getsource(main)
    assert BUILDER_LINE in inspect.getsource(main)
    assert BUILDER_LINE in example


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    with anyio.fail_after(DEADLINE):
        while not await check():
            await anyio.sleep(0.05)


async def test_label_counter_writes_the_label_count(
    k8s: Client, kubeconfig: Path, namespace: str
) -> None:
    managers: list[Manager] = []
    returned = anyio.Event()

    async def run() -> None:
        await main(str(kubeconfig), namespace, managers.append)
        returned.set()

    async def labels_data(name: str, want: str) -> bool:
        obj = await k8s.get(CONFIG_MAP, name, namespace)
        return (obj.get("data") or {}).get("labels") == want

    await k8s.create(
        CONFIG_MAP,
        {
            "metadata": {"name": "existing", "namespace": namespace, "labels": {"a": "1"}},
            "data": {"keep": "me"},
        },
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await eventually(lambda: labels_data("existing", "1"))

        labels = {"app": "web", "tier": "frontend", "team": "x"}
        await k8s.create(
            CONFIG_MAP, {"metadata": {"name": "labelled", "namespace": namespace, "labels": labels}}
        )
        await eventually(lambda: labels_data("labelled", "3"))

        # Labels removed: the count follows (a merge patch with null deletes a key).
        await k8s.patch(
            CONFIG_MAP,
            "labelled",
            {"metadata": {"labels": {"tier": None, "team": None}}},
            namespace=namespace,
        )
        await eventually(lambda: labels_data("labelled", "1"))

        await k8s.create(CONFIG_MAP, {"metadata": {"name": "bare", "namespace": namespace}})
        await eventually(lambda: labels_data("bare", "0"))

        (mgr,) = managers
        mgr.shutdown()
        with anyio.fail_after(DEADLINE):
            await returned.wait()
    existing = await k8s.get(CONFIG_MAP, "existing", namespace)
    assert existing["data"] == {"keep": "me", "labels": "1"}, "other data is left alone"
