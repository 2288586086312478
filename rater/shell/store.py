"""A worker's local store of its partitions: one RocksDB cache of each changelog
partition it owns, and the memory budget all of them share (issue 15).

The store holds what committed units left on the compacted ``rater-state`` changelog:
tenant states, users and ids, the partition record, and the changelog offset it reflects.
It is apart from the driver because it is state at rest, not Kafka: the driver writes it
after a unit committed and rebuilds it from the changelog when it is missing, behind or
from another changelog; the partition task reads it (:mod:`rater.shell.task`); the
tenant API reads committed states from it (:mod:`rater.shell.api`). Nothing in here
talks to the broker.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Iterator
from pathlib import Path

from rocksdict import BlockBasedOptions, Cache, Options, Rdict, WriteBatch, WriteBufferManager

from rater.shell.task import TENANT_KEYS, Slicer, finish

CHANGELOG_KEY = b"~changelog"
"""Local store key: the next changelog offset the store reflects."""


STORE_CACHE_BYTES = 96 * 1024 * 1024
"""What a worker's RocksDB stores may hold in memory together by default
(``RATER_STORE_CACHE_MIB``): one block cache for all of them, its data and index blocks
and Bloom filters, with their memtables (a third of it) charged to it (issue 15: a cache
and a 64 MiB memtable per partition store grew with the data, so with the tenants — 8
partitions could take over 1 GiB)."""


class StoreMemory:
    """The memory budget a worker's partition stores share: one block cache and one
    write buffer manager charged to it, made once per worker and handed to each store."""

    def __init__(self, cache_bytes: int = STORE_CACHE_BYTES, memtable_bytes: int | None = None) -> None:
        """``memtable_bytes``: the memtables of all the stores together, within
        ``cache_bytes`` (over it the fullest one is flushed; default: a third of it)."""
        memtable_bytes = cache_bytes // 3 if memtable_bytes is None else memtable_bytes
        self.cache = Cache(cache_bytes)
        self.write_buffers = WriteBufferManager.new_write_buffer_manager_with_cache(memtable_bytes, False, self.cache)
        self.memtable_bytes = memtable_bytes

    def usage(self) -> int:
        """Bytes the stores hold in the cache now (memtables included)."""
        return int(self.cache.get_usage())


def _store_options(memory: StoreMemory) -> Options:
    """RocksDB options of a partition store: raw bytes; Bloom filters on the tables and
    the memtable, because nearly every lookup is a miss (a new CDR's usage id, looked up
    in the open and the closed month) — they halve its cost; the worker's shared memory
    budget (:class:`StoreMemory`)."""
    options = Options(raw_mode=True)
    table = BlockBasedOptions()
    table.set_bloom_filter(10, False)
    table.set_block_cache(memory.cache)
    table.set_cache_index_and_filter_blocks(True)
    options.set_block_based_table_factory(table)
    options.set_write_buffer_manager(memory.write_buffers)
    options.set_write_buffer_size(memory.memtable_bytes // 4)  # a store's memtable: a quarter of them all
    options.set_memtable_prefix_bloom_ratio(0.1)
    options.set_memtable_whole_key_filtering(True)
    return options


class LocalStore:
    """RocksDB (rocksdict) cache of one changelog partition: tenant states, the partition
    record and the changelog offset it has reached. Written only after a unit committed;
    a missing or wiped store is rebuilt from the changelog."""

    def __init__(self, path: Path, memory: StoreMemory | None = None) -> None:
        """``memory``: the budget the worker's stores share (None: one of its own)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = Rdict(str(path), options=_store_options(memory or StoreMemory()))
        self.get: Callable[[bytes], bytes | None] = self.db.get
        """The value stored under a key (RocksDB's own get: the id lookups of every CDR
        call it, a Python method around it would cost a third more)."""

    def next_offset(self) -> int:
        raw = self.get(CHANGELOG_KEY)
        return int(raw) if raw is not None else 0

    def keys(self, prefix: bytes, limit: int, after: bytes = b"") -> list[bytes]:
        found: list[bytes] = []
        start = after + b"\x00" if after else prefix  # the first key after ``after``
        for key in self.db.keys(from_key=start):
            assert isinstance(key, bytes)  # raw mode
            if not key.startswith(prefix) or len(found) >= limit:
                break
            found.append(key)
        return found

    def tenants(self) -> Iterator[tuple[str, bytes]]:
        low, high = TENANT_KEYS
        for key, value in self.db.items(from_key=low):
            assert isinstance(key, bytes)  # raw mode
            assert isinstance(value, bytes)
            if key >= high:
                break
            yield key.decode(), value

    def write(self, records: Iterable[tuple[bytes, bytes | None]], next_offset: int) -> None:
        """Apply changelog records (None: a tombstone) and the offset they reach, atomically."""
        finish(self.writing(records, next_offset, None))

    def writing(self, records: Iterable[tuple[bytes, bytes | None]], next_offset: int,
                slice_s: float | None) -> Generator[None, None, None]:
        """:meth:`write` with the write batch made in slices of ``slice_s`` seconds (a
        generator that yields between them); the store changes at its end, in one
        atomic write, as with :meth:`write`."""
        slicer = Slicer(slice_s)
        batch = WriteBatch(raw_mode=True)
        for key, value in records:
            if slicer.over():
                yield
                slicer.restart()
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        batch.put(CHANGELOG_KEY, str(next_offset).encode())
        self.db.write(batch)

    def clear(self) -> None:
        """Delete everything (the offset too)."""
        batch = WriteBatch(raw_mode=True)
        for key in self.db.keys():  # noqa: SIM118 - an Rdict is not iterable
            batch.delete(key)
        self.db.write(batch)

    def close(self) -> None:
        self.db.close()
