"""Where a key lives: Kafka's default partitioner (murmur2), as every producer of the
rater's inputs must use it (docs/integrating.md) and as the worker produces its outputs."""

from __future__ import annotations

from aiokafka.partitioner import murmur2

_CACHE: dict[tuple[bytes, int], int] = {}


def key_partition(key: bytes, count: int) -> int:
    """Kafka's default partition of ``key`` among ``count`` partitions (cached: the keys
    are tenant ids, a few thousand per worker; murmur2 in Python costs microseconds)."""
    found = _CACHE.get((key, count))
    if found is None:
        if len(_CACHE) > 200_000:
            _CACHE.clear()
        found = _CACHE[(key, count)] = (murmur2(key) & 0x7FFFFFFF) % count
    return found
