"""The harness's own requests in bulk (creating and resetting workspaces): a fixed pool
of workers over the indices, not a task per call, since 100,000 waiting tasks would cost
the harness hundreds of MiB."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio


async def bounded(total: int, fn: Callable[[int], Awaitable[None]], concurrency: int) -> None:
    """Call ``await fn(i)`` for i in range(total), ``concurrency`` at a time."""
    indices = iter(range(total))

    async def worker() -> None:
        for i in indices:
            await fn(i)

    async with anyio.create_task_group() as tg:
        for _ in range(min(concurrency, total)):
            tg.start_soon(worker)
