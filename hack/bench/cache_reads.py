"""What a cache read costs with each way of keeping readers from corrupting the cache.

Builds N projected Workspaces (as the operator caches them: ``model.project`` of a
server object, see ``cache_size.py``), stores them in an informer's Store, and times,
for each candidate, one ``get`` (averaged over 2,000 keys) and a ``list`` of 1,000
and of N objects. Prints the median of ``--repeat`` timings, the garbage collector on
(as in the operator) unless ``--no-gc``. The table in ``reconciler/cache.py`` comes
from here.

Run: PYTHONPATH=. .venv/bin/python -m hack.bench.cache_reads [--n 10000]
"""

from __future__ import annotations

import argparse
import copy
import gc
import statistics
import time
import types
from collections.abc import Callable
from typing import Any

import orjson

from controllers.workspace.model import parse_workspace, project
from hack.bench.cache_size import server_object
from reconciler.cache import _copy_dict
from reconciler.resource import Obj
from reconciler.store import Store

Copier = Callable[[Obj], Any]


def _orjson(obj: Obj) -> Obj:
    loaded: Obj = orjson.loads(orjson.dumps(obj))
    return loaded


def _freeze(value: Any) -> Any:
    """The immutable alternative: read-only mappings and tuples all the way down."""
    if type(value) is dict:
        return types.MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if type(value) is list:
        return tuple(_freeze(v) for v in value)
    return value


CANDIDATES: dict[str, Copier] = {
    "shared (no copy)": lambda o: o,
    "reconciler.cache copy": _copy_dict,
    "orjson dumps + loads": _orjson,
    "copy.deepcopy": copy.deepcopy,
}


def _median_ns(run: Callable[[], object], repeat: int, gc_on: bool) -> float:
    times = []
    for _ in range(repeat):
        if gc_on:
            gc.collect()
        start = time.perf_counter_ns()
        run()
        times.append(time.perf_counter_ns() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--no-gc", action="store_true")
    args = parser.parse_args()
    gc_on = not args.no_gc
    if not gc_on:
        gc.disable()

    store = Store()
    for i in range(args.n):
        store.upsert(project(server_object(i)))
    keys = store.keys()[:2000]
    objs = store.list()
    first = objs[0]
    print(f"{args.n} projected workspaces, {len(orjson.dumps(first))} bytes of JSON each")
    print(f"{'per read':24} {'get µs':>8} {'list 1,000 ms':>14} {f'list {args.n:,} ms':>16}")
    for name, copier in CANDIDATES.items():
        assert copier(first) == first

        def get(copier: Copier = copier) -> None:
            for key in keys:
                obj = store.get(key)
                assert obj is not None
                copier(obj)

        def listing(n: int, copier: Copier = copier) -> None:
            [copier(o) for o in store.list()[:n]]

        get_us = _median_ns(get, args.repeat, gc_on) / len(keys) / 1e3
        one_k = _median_ns(lambda: listing(1000), args.repeat, gc_on) / 1e6
        all_n = _median_ns(lambda: listing(args.n), args.repeat, gc_on) / 1e6
        print(f"{name:24} {get_us:8.2f} {one_k:14.2f} {all_n:16.1f}")

    frozen = _median_ns(lambda: [_freeze(o) for o in objs[:2000]], args.repeat, gc_on)
    print(f"freezing at store time: {frozen / 2000 / 1e3:.1f} µs per stored object")
    parse = _median_ns(lambda: [parse_workspace(o) for o in objs[:2000]], args.repeat, gc_on)
    print(f"for scale, parse_workspace: {parse / 2000 / 1e3:.1f} µs per object")


if __name__ == "__main__":
    main()
