"""Hash sharding: which of N processes handles an object, for objects nobody labels.

Label sharding needs nothing from this module: each deployment passes its own label
selector to the informer, the API server sends it only matching objects, and a label
change moves an object between deployments (the one it leaves sees a delete, the one it
joins an add). Hash sharding is for objects that cannot be labelled: every process sees
every object and handles its share, ``Shard(index, total)``.

The rule: the object with cache key ``k`` (``namespace/name``, or ``name`` when
cluster-scoped: :func:`reconciler.store.object_key`, ``str(Request)``) belongs to shard
``jump_hash(fnv1a_64(utf8(k)), total)``. It depends on nothing but the key and the
count, so every process, on any machine, in any language, computes the same owner.
Python's ``hash()`` would not do: it is salted per process (``PYTHONHASHSEED``), and two
shards would disagree about every object.

The pattern is kube-state-metrics' ``--shard``/``--total-shards`` (facts from its
``pkg/sharding/listwatch.go`` at commits f0f9898 and 07b2974, and its README's
"Horizontal sharding"):

* ``--shard`` is zero-based; ``--total-shards=1`` (the default) turns sharding off.
* The owner of an object is go-jump's ``Hash`` (Lamping and Veach's jump consistent
  hash) of the 64-bit FNV-1a of the object's UID, compared with ``--shard``. (The README
  still says "md5 of the UID, modulo the number of shards"; the code is what runs.)
* Every shard lists and watches every object; a wrapper around the ListerWatcher drops
  objects outside its share before they reach the store. So each shard receives and
  decodes everything, and stores 1/n.

Where this module differs, and why:

* **The key is namespace/name, not the UID.** Both are fixed for an object's life, so
  with either an object never changes shard. But the work queue here, as in
  controller-runtime, holds namespace/name, and a request carries no UID. Hashing the
  UID, a workspace deleted and created again under its old name would, for a moment,
  belong to two shards: the old object's delete and the new one's create enqueue the
  same key on both, and each reconcile reads whatever the cache holds under that name
  now. Hashing the key the queue holds, no request can ever be owned by two shards.
  The cost: an object recreated under its name stays on its shard (harmless), and names
  crafted to collide could crowd one shard (FNV-1a spreads ordinary names evenly; the
  tests measure it).
* **Jump hash, not a modulo.** Going from n to n + 1 shards moves 1/(n + 1) of the
  objects, all to the new shard; a modulo would move n/(n + 1) of them.
* **The share is applied after the cache, not before**: the informer stores every
  object it lists, and :func:`shard_predicate` keeps a controller's events to its
  share, :func:`shard_mapper` the requests its other watches map to. A hash shard
  therefore caches everything and reconciles 1/n (``hack/bench/sharding.py`` measures
  what each costs).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from reconciler.handler import Mapper
from reconciler.predicate import Funcs, Predicate, new_predicate
from reconciler.request import Request
from reconciler.resource import Obj
from reconciler.store import object_key

__all__ = [
    "Shard",
    "fnv1a_64",
    "jump_hash",
    "shard_mapper",
    "shard_of",
    "shard_predicate",
]

_MASK_64 = (1 << 64) - 1
# FNV-1a, 64 bits (Fowler, Noll, Vo; the parameters Go's hash/fnv uses).
_FNV_OFFSET_BASIS = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
# Jump consistent hash (Lamping and Veach, 2014): the linear congruential step.
_JUMP_MULTIPLIER = 2862933555777941757


def fnv1a_64(data: bytes) -> int:
    """The 64-bit FNV-1a hash of ``data``, as Go's ``hash/fnv.New64a`` computes it."""
    h = _FNV_OFFSET_BASIS
    for byte in data:
        h = ((h ^ byte) * _FNV_PRIME) & _MASK_64
    return h


def jump_hash(key: int, buckets: int) -> int:
    """Lamping and Veach's jump consistent hash: the bucket in ``[0, buckets)`` of the
    64-bit ``key``. Raising ``buckets`` by one moves a key only into the new bucket."""
    if buckets < 1:
        raise ValueError(f"buckets must be >= 1, got {buckets}")
    key &= _MASK_64
    b, j = -1, 0
    while j < buckets:
        b = j
        key = (key * _JUMP_MULTIPLIER + 1) & _MASK_64
        # Float arithmetic as the paper's C++ (and go-jump) does it, in doubles.
        j = int((b + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return b


def shard_of(key: str, total: int) -> int:
    """The shard, of ``total``, that owns the object whose cache key is ``key``."""
    return jump_hash(fnv1a_64(key.encode()), total)


@dataclass(frozen=True, slots=True)
class Shard:
    """This process's share: shard ``index`` (zero-based) of ``total``.

    ``Shard()`` (0 of 1) owns everything, without hashing. Invariant: for any key and
    total, exactly one of ``Shard(0, total)`` … ``Shard(total - 1, total)`` owns it.
    """

    index: int = 0
    total: int = 1

    def __post_init__(self) -> None:
        if self.total < 1:
            raise ValueError(f"the total number of shards must be >= 1, got {self.total}")
        if not 0 <= self.index < self.total:
            raise ValueError(f"shard must be in [0, {self.total - 1}], got {self.index}")

    @property
    def sharded(self) -> bool:
        return self.total > 1

    def owns_key(self, key: str) -> bool:
        return not self.sharded or shard_of(key, self.total) == self.index

    def owns(self, obj: Obj) -> bool:
        return self.owns_key(object_key(obj))

    def owns_request(self, request: Request) -> bool:
        return self.owns_key(str(request))

    def lease_name(self, base: str) -> str:
        """The Lease of this shard's replicas: ``base``, suffixed when sharded, so that
        each shard elects its own leader. The suffix names the total too: a shard of a
        different count is a different share, not a replica of this one."""
        return f"{base}-shard-{self.index}-of-{self.total}" if self.sharded else base

    def __str__(self) -> str:
        return f"shard {self.index} of {self.total}"


_EVERYTHING: Predicate = Funcs()


def shard_predicate(shard: Shard) -> Predicate:
    """Events of objects in ``shard``'s share (the new object on updates: the key, and
    so the owner, never changes). Passes everything when not sharded."""
    return new_predicate(shard.owns) if shard.sharded else _EVERYTHING


def shard_mapper(shard: Shard, mapper: Mapper) -> Mapper:
    """``mapper``'s requests that ``shard`` owns: for ``watches()`` whose mapper fans out
    to objects of the sharded type (a request outside the share is another shard's)."""
    if not shard.sharded:
        return mapper

    def mapped(obj: Obj) -> Iterable[Request]:
        return [r for r in mapper(obj) if shard.owns_request(r)]

    return mapped
